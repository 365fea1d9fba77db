"""Rollouts of the online loop: one batched, KV-cached generate call whose draws depend on a key, not on
a random state, and the log-probs of the response tokens.

Each completion has a key (a hash of the seed, the step, the prompt's row in the dataset and the sample
number); the noise of each sampled token is a hash of the key, the position and the token. Sampling by
the Gumbel-max trick with that noise draws from the model's distribution, and a completion is the same
whatever else is in its batch, on whichever process, before or after a resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from ..data.collate import pad_rows

MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for 0 <= x < 2^32 without int64 overflow (the product is split in halves)."""
    return ((((x >> 16) * c) & MASK32) << 16) + (x & 0xFFFF) * c & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32, C. Wellons) of int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sample_keys(seed: int, step: int, indices, num_samples: int, device) -> torch.Tensor:
    """One key per completion (prompt-major): a hash of the seed, the step, the prompt's row in the
    dataset and the sample number; the noise of every sampled token derives from it."""
    rows = torch.as_tensor(indices, dtype=torch.int64, device=device) & MASK32
    base = mix32(mix32(mix32(torch.tensor(seed & MASK32, device=device)) ^ (step & MASK32)) ^ rows)
    samples = mix32(torch.arange(1, num_samples + 1, device=device))
    return mix32(base.repeat_interleave(num_samples) ^ samples.repeat(len(rows)))


class KeyedSampling:
    """A logits processor that samples by the Gumbel-max trick with noise hashed from each row's key,
    the position and the token: argmax(log p + G) is a draw from p, and the draw of one row is the same
    whatever else is in the batch, on whichever process, before or after a resume."""

    def __init__(self, keys: torch.Tensor, prompt_width: int):
        self.keys, self.width = keys, prompt_width
        self.tokens = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.tokens is None or len(self.tokens) != scores.shape[1]:
            self.tokens = mix32(torch.arange(scores.shape[1], dtype=torch.int64, device=scores.device))
        position = mix32(torch.tensor(input_ids.shape[1] - self.width, device=scores.device))
        noise = mix32(mix32(self.keys ^ position)[:, None] ^ self.tokens[None, :])
        uniform = (noise.double() + 0.5) / 2.0**32
        gumbel = -torch.log(-torch.log(uniform))
        return scores.float() + gumbel.float()


def sampling_processors(gen_kwargs: dict, keys: torch.Tensor, prompt_width: int) -> list:
    """Temperature, top-k and top-p as `generate` would apply them when sampling, then the keyed draw."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    processors = []
    temperature, top_k, top_p = gen_kwargs.get("temperature"), gen_kwargs.get("top_k"), gen_kwargs.get("top_p")
    if temperature is not None and temperature <= 0:
        return processors  # greedy
    if temperature is not None and temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return [*processors, KeyedSampling(keys, prompt_width)]


@dataclass
class Rollout:
    sequences: torch.Tensor  # (N, P + R) left-padded prompts then responses
    attention_mask: torch.Tensor
    response_mask: torch.Tensor  # (N, R): tokens up to and including the first stop token
    prompt_len: int
    prompts: list[str]
    completions: list[str]
    messages: list[list[dict]]
    systems: list[str]
    rows: list[dict]
    lengths: list[int]
    stats: dict = field(default_factory=dict)

    def select(self, idx: torch.Tensor) -> Rollout:
        """The tensors of a subset of the sequences (for mini-batches)."""
        return Rollout(self.sequences[idx], self.attention_mask[idx], self.response_mask[idx], self.prompt_len,
                       [], [], [], [], [], [])

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logps(model, rollout: Rollout, sequences=None, with_hidden: bool = False):
    """Log-probs of the response tokens (N, R) (+ entropy and last hidden states when asked). Logits are
    computed for the response positions only (`logits_to_keep`), and log-softmax is never materialised."""
    sequences = rollout.sequences if sequences is None else sequences
    p = rollout.prompt_len
    out = model(input_ids=sequences, attention_mask=rollout.attention_mask, position_ids=rollout.position_ids,
                output_hidden_states=with_hidden, logits_to_keep=sequences.shape[1] - p + 1)
    logits = out.logits[:, :-1].float()  # the positions p-1 .. end-1 predict the response tokens
    norm = logits.logsumexp(-1)
    logps = torch.gather(logits, 2, sequences[:, p:].unsqueeze(2)).squeeze(2) - norm
    if not with_hidden:
        return logps
    log_probs = logits - norm.unsqueeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return logps, entropy, out.hidden_states[-1][:, p - 1:-1]


def generation_kwargs(gen) -> dict:
    """Sampling keys from the generating arguments (top_k 0 = no top-k)."""
    return {"temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k or None,
            "max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty}


@torch.no_grad()
def generate_rollout(model, tokenizer, template, batch: list[dict], gen_kwargs: dict, num_samples: int,
                     device, keys: torch.Tensor) -> Rollout:
    """Sample `num_samples` completions per prompt in one batched generate call; `keys` (one per
    completion, see `sample_keys`) fix each completion's random draws."""
    prompts = [list(row["input_ids"]) for row in batch]
    pad = tokenizer.pad_token_id
    ids, mask = pad_rows(prompts, pad, device=device)
    width = ids.shape[1]
    stop = template.stop_token_ids(tokenizer)
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=ids.repeat_interleave(num_samples, 0), attention_mask=mask.repeat_interleave(num_samples, 0),
        do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=stop, pad_token_id=pad,
        use_cache=True, max_new_tokens=gen_kwargs["max_new_tokens"],
        repetition_penalty=gen_kwargs.get("repetition_penalty"),
        logits_processor=sampling_processors(gen_kwargs, keys, width))
    model.train(was_training)
    response = out[:, width:]
    is_stop = torch.isin(response, torch.tensor(stop, device=device))
    after_stop = (is_stop.long().cumsum(-1) - is_stop.long()) > 0  # strictly after the first stop token
    response_mask = ~after_stop
    response = response.masked_fill(~response_mask, pad)
    sequences = torch.cat([ids.repeat_interleave(num_samples, 0), response], dim=1)
    attention_mask = torch.cat([mask.repeat_interleave(num_samples, 0), response_mask.long()], dim=1)
    completions = tokenizer.batch_decode(response.masked_fill(~response_mask, pad), skip_special_tokens=True)
    repeat = lambda values: [v for v in values for _ in range(num_samples)]  # noqa: E731
    return Rollout(
        sequences=sequences, attention_mask=attention_mask, response_mask=response_mask, prompt_len=width,
        prompts=repeat([tokenizer.decode(p, skip_special_tokens=False) for p in prompts]),
        completions=completions,
        messages=repeat([json.loads(row["prompt_messages"]) for row in batch]),
        systems=repeat([row["system"] for row in batch]),
        rows=repeat([json.loads(row["extra"]) for row in batch]),
        lengths=response_mask.sum(-1).tolist(),
    )


def policy_outputs(model, rollout: Rollout, idx: torch.Tensor, with_hidden: bool = False):
    """`response_logps` of the selected sequences; for none (a process holding no sample of a mini-batch)
    empty tensors of the right shape, so the loss is 0 and the process still joins the gradient sum."""
    if len(idx):
        return response_logps(model, rollout.select(idx), with_hidden=with_hidden)
    width = rollout.response_mask.shape[1]
    empty = rollout.response_mask.new_zeros((0, width), dtype=torch.float32)
    if not with_hidden:
        return empty
    return empty, empty, empty.new_zeros((0, width, model.config.hidden_size))
