"""Examples -> token ids and labels, per stage: pt, sft, pairwise, feedback (KTO), prompt-only.

Also greedy packing of sft/pt examples into sequences of at most `cutoff_len` tokens, with
position ids reset per packed example.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .convert import Example

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodeOptions:
    cutoff_len: int = 2048
    train_on_prompt: bool = False
    mask_history: bool = False


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """Split a token budget between prompt (source) and response (target), LLaMA-Factory's rule.

    If the response fits in half the budget it may use all of it; else if the prompt fits in
    half, the response gets what the prompt leaves; else both shrink in proportion.
    """
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def encode_supervised(template, tokenizer, ex: Example, opt: EncodeOptions) -> dict | None:
    """Multi-turn SFT: every assistant turn is trained unless `mask_history` (last turn only)."""
    if len(ex.prompt) % 2 != 1 or len(ex.response) != 1:
        return None
    discard = opt.mask_history and not template.preserve_thinking
    pairs = template.encode_multiturn(tokenizer, ex.prompt + ex.response, ex.system, ex.tools,
                                      discard_history_thoughts=discard)
    eos = tokenizer.eos_token_id
    input_ids: list[int] = []
    labels: list[int] = []
    total = 1 if template.efficient_eos else 0
    if opt.mask_history:
        pairs = pairs[::-1]  # keep the last turn whole; earlier turns fill what is left
    for turn, (source, target) in enumerate(pairs):
        if total >= opt.cutoff_len:
            break
        source_len, target_len = infer_seqlen(len(source), len(target), opt.cutoff_len - total)
        source, target = source[:source_len], target[:target_len]
        total += source_len + target_len
        if opt.train_on_prompt:
            source_labels = list(source)
        elif template.efficient_eos and turn != 0 and source_len:
            source_labels = [eos] + [IGNORE_INDEX] * (source_len - 1)
        else:
            source_labels = [IGNORE_INDEX] * source_len
        target_labels = [IGNORE_INDEX] * target_len if opt.mask_history and turn != 0 else list(target)
        if opt.mask_history:
            input_ids = source + target + input_ids
            labels = source_labels + target_labels + labels
        else:
            input_ids += source + target
            labels += source_labels + target_labels
    if template.efficient_eos:
        input_ids.append(eos)
        labels.append(eos)
    return {"input_ids": input_ids, "labels": labels}


def _oneturn(template, tokenizer, prompt: list[dict], answer: dict, ex: Example):
    prompt_ids, answer_ids = template.encode_oneturn(tokenizer, prompt + [answer], ex.system, ex.tools)
    answer_ids = list(answer_ids)
    if template.efficient_eos:
        answer_ids.append(tokenizer.eos_token_id)
    return prompt_ids, answer_ids


def encode_pairwise(template, tokenizer, ex: Example, opt: EncodeOptions) -> dict | None:
    """Chosen and rejected answers sharing one (identically truncated) prompt."""
    if ex.chosen is None or ex.rejected is None or len(ex.prompt) % 2 != 1:
        return None
    prompt_ids, chosen_ids = _oneturn(template, tokenizer, ex.prompt, ex.chosen, ex)
    _, rejected_ids = _oneturn(template, tokenizer, ex.prompt, ex.rejected, ex)
    source_len, target_len = infer_seqlen(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)),
                                          opt.cutoff_len)
    prompt_ids = prompt_ids[:source_len]
    chosen_ids, rejected_ids = chosen_ids[:target_len], rejected_ids[:target_len]
    masked = [IGNORE_INDEX] * len(prompt_ids)
    return {
        "chosen_input_ids": prompt_ids + chosen_ids, "chosen_labels": masked + chosen_ids,
        "rejected_input_ids": prompt_ids + rejected_ids, "rejected_labels": masked + rejected_ids,
    }


def encode_feedback(template, tokenizer, ex: Example, kl_answer: dict, opt: EncodeOptions) -> dict | None:
    """KTO: the answer with its desirability tag, plus a KL pair (this prompt, another answer)."""
    if ex.kto_tag is None or len(ex.response) != 1 or len(ex.prompt) % 2 != 1:
        return None
    out = {}
    for key, answer in (("", ex.response[0]), ("kl_", kl_answer)):
        prompt_ids, answer_ids = _oneturn(template, tokenizer, ex.prompt, answer, ex)
        source_len, target_len = infer_seqlen(len(prompt_ids), len(answer_ids), opt.cutoff_len)
        prompt_ids, answer_ids = prompt_ids[:source_len], answer_ids[:target_len]
        out[f"{key}input_ids"] = prompt_ids + answer_ids
        out[f"{key}labels"] = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    out["kto_tags"] = ex.kto_tag
    return out


def encode_prompt_only(template, tokenizer, ex: Example, opt: EncodeOptions) -> dict | None:
    """Generation stages: the prompt (ending with the assistant header) and, if any, the reference.

    The budget is split as LLaMA-Factory does, between the prompt and the template-encoded
    reference answer; an over-long prompt keeps its end (the assistant header the model answers
    after). `labels` hold the raw reference text's tokens (what predict's metrics compare against).
    """
    if len(ex.prompt) % 2 != 1:
        return None
    reference = ex.response[0]["content"] if len(ex.response) == 1 else ""
    prompt_ids, answer_ids = _oneturn(template, tokenizer, ex.prompt, {"role": "assistant", "content": reference}, ex)
    source_len, target_len = infer_seqlen(len(prompt_ids), len(answer_ids), opt.cutoff_len)
    reference_ids = tokenizer.encode(reference, add_special_tokens=False) if reference else []
    return {"input_ids": prompt_ids[-source_len:] if source_len else [],
            "labels": reference_ids[:target_len]}


def encode_pretrain_text(tokenizer, ex: Example, template_name: str | None = None) -> list[int]:
    """Pre-training text: the first prompt message's content followed by the end-of-document token.

    As LLaMA-Factory: llama3 ends documents with `<|end_of_text|>` (its EOS is the turn end
    `<|eot_id|>`), others with the tokenizer's EOS; text and end token are tokenised together.
    """
    text = ex.prompt[0]["content"] if ex.prompt else ""
    end = "<|end_of_text|>" if template_name == "llama3" else tokenizer.eos_token
    return tokenizer.encode(text + end, add_special_tokens=False)


def chunk_pretrain(token_lists: list[list[int]], cutoff_len: int) -> list[dict]:
    """Concatenate all texts and cut into blocks of `cutoff_len`; the tail shorter than a block is dropped."""
    flat = [t for ids in token_lists for t in ids]
    usable = len(flat) // cutoff_len * cutoff_len if len(flat) >= cutoff_len else len(flat)
    return [{"input_ids": flat[i:i + cutoff_len], "labels": flat[i:i + cutoff_len]}
            for i in range(0, usable, cutoff_len)]


def greedy_knapsack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins of total length <= capacity, largest fitting item first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    bins = []
    while order:
        remaining, current = capacity, []
        while order:
            k = bisect.bisect_right(sorted_lengths, remaining) - 1
            if k < 0:
                break
            remaining -= sorted_lengths.pop(k)
            current.append(order.pop(k))
        if not current:  # an item longer than the capacity: a bin of its own (already truncated)
            sorted_lengths.pop()
            current.append(order.pop())
        bins.append(current)
    return bins


def pack(encoded: list[dict], cutoff_len: int) -> list[dict]:
    """Pack encoded (input_ids, labels) examples into sequences of at most `cutoff_len` tokens.

    Each packed sequence keeps `position_ids` restarting at 0 per example and `seq_lens`, from
    which the collator builds a block-diagonal attention mask for neat packing.
    """
    bins = greedy_knapsack([len(e["input_ids"]) for e in encoded], cutoff_len)
    packed = []
    for members in bins:
        input_ids, labels, position_ids, seq_lens = [], [], [], []
        for i in members:
            e = encoded[i]
            input_ids += e["input_ids"]
            labels += e["labels"]
            position_ids += list(range(len(e["input_ids"])))
            seq_lens.append(len(e["input_ids"]))
        packed.append({"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
                       "seq_lens": seq_lens})
    return packed
