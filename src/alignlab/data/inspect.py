"""`alignlab data preview` and `alignlab data validate`: look at data before training on it."""

from __future__ import annotations

import json
from dataclasses import replace

from .convert import SkipReport
from .encode import IGNORE_INDEX, EncodeOptions
from .loader import (
    STAGE_KIND,
    check_fits_stage,
    encode_examples,
    load_examples,
    read_dataset,
    split_names,
)
from .registry import DataError, get_dataset_attr, iter_rows, read_dataset_info


def _describe(tokenizer, ids: list[int], labels: list[int], prefix: str = "") -> dict:
    trained = [t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    return {
        f"{prefix}input_ids": ids,
        f"{prefix}labels": labels,
        f"{prefix}text": tokenizer.decode(ids, skip_special_tokens=False),
        f"{prefix}label_text": tokenizer.decode(trained, skip_special_tokens=False),
    }


def preview(cfg, tokenizer, template, num: int) -> list[dict]:
    """The first `num` examples as the stage encodes them (unpacked), with rendered text."""
    kind = STAGE_KIND[cfg.finetuning.stage]
    if cfg.data.preserve_thinking and not template.preserve_thinking:
        template = replace(template, preserve_thinking=True)
    report = SkipReport()
    examples = load_examples(cfg.data, cfg.data.dataset, seed=42, report=report, kind=kind)
    opt = EncodeOptions(cfg.data.cutoff_len, cfg.data.train_on_prompt, cfg.data.mask_history)
    encoded = encode_examples(examples[: max(num, 2)], kind, template, tokenizer, opt, 1, report,
                              packing=False)[:num]
    out = []
    for enc in encoded:
        if kind == "pairwise":
            item = {**_describe(tokenizer, enc["chosen_input_ids"], enc["chosen_labels"], "chosen_"),
                    **_describe(tokenizer, enc["rejected_input_ids"], enc["rejected_labels"], "rejected_")}
        elif kind == "feedback":
            item = {**_describe(tokenizer, enc["input_ids"], enc["labels"]),
                    **_describe(tokenizer, enc["kl_input_ids"], enc["kl_labels"], "kl_"),
                    "kto_tag": enc["kto_tags"]}
        elif kind == "prompt":
            item = {"input_ids": enc["input_ids"], "labels": enc["labels"],
                    "text": tokenizer.decode(enc["input_ids"], skip_special_tokens=False),
                    "label_text": tokenizer.decode(enc["labels"], skip_special_tokens=False)}
        else:
            item = _describe(tokenizer, enc["input_ids"], enc["labels"])
        out.append(item)
    return out


def format_preview(items: list[dict], as_json: bool) -> str:
    if as_json:
        return "\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    blocks = []
    for i, item in enumerate(items):
        lines = [f"=== example {i}"]
        for key, value in item.items():
            if key.endswith("text"):
                lines.append(f"--- {key}:\n{value}")
            elif key.endswith("input_ids"):
                lines.append(f"--- {key}: {len(value)} tokens")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def guess_kind(attr, data_args) -> str:
    """The stage kind a dataset serves when `validate` is given no stage: pairs for rm/dpo, tagged
    answers for kto, answers for sft, else prompts/text (pt, ppo, grpo)."""
    if attr.ranking:
        return "pairwise"
    if "kto_tag" in attr.columns:
        return "feedback"
    if attr.formatting != "alpaca":
        return "sft"
    response = attr.columns.get("response")
    if response:
        try:
            if any(response in row for _, _, row in iter_rows(attr, data_args.dataset_dir)):
                return "sft"
        except DataError:
            return "sft"  # read_dataset reports the error
    return "prompt"


KIND_STAGES = {"sft": "sft", "pairwise": "rm/dpo", "feedback": "kto", "prompt": "pt/ppo/grpo", "pt": "pt"}


def validate(data_args, names: list[str] | None, stage: str | None, max_errors: int = 5) -> tuple[str, bool]:
    """Check every row of the named datasets (all of dataset_info.json when names is None) with
    the conversion and drop rules training uses (`read_dataset`), for `stage` or, when None, the
    stage each dataset's layout serves.

    Returns a report and whether everything loaded without errors. Hub-only entries are
    reported as not loadable offline; they count as errors only when named explicitly.
    """
    info = read_dataset_info(data_args.dataset_dir)
    explicit = names is not None
    names = names if explicit else list(info)
    lines, ok = [], True
    for name in names:
        try:
            attr = get_dataset_attr(name, info, data_args.dataset_dir)
            kind = STAGE_KIND[stage] if stage else guess_kind(attr, data_args)
            if stage:
                check_fits_stage(attr, kind)
        except DataError as e:
            hub_only = name in info and "file_name" not in info[name]
            lines.append(f"{name}: {'skipped, ' if hub_only and not explicit else 'ERROR '}{e}")
            ok = ok and (hub_only and not explicit)
            continue
        report, errors = SkipReport(), []
        examples = read_dataset(data_args, attr, kind, seed=42, report=report, on_error=errors.append)
        if not examples and not errors:
            errors.append(f"Dataset {name!r} has no usable rows.")
        status = "ERRORS" if errors else "ok"
        lines.append(f"{name}: {status}: {len(examples)} rows ok, {report.dropped(name)} dropped, "
                     f"{len(errors)} with errors (as {stage or KIND_STAGES[kind]} data)")
        if report.counts:
            lines.append("  " + report.summary())
        lines += [f"  - {e}" for e in errors[:max_errors]]
        if len(errors) > max_errors:
            lines.append(f"  - ... and {len(errors) - max_errors} more errors")
        ok = ok and not errors
    return "\n".join(lines), ok


def names_of(value: str | None) -> list[str] | None:
    names = split_names(value)
    return names or None
