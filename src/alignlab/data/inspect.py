"""`alignlab data preview` and `alignlab data validate`: look at data before training on it."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import replace

from ..config.stages import STAGES
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


KIND_STAGES = {kind: "/".join(s.name for s in STAGES.values() if s.data_kind == kind)
               for kind in {s.data_kind for s in STAGES.values()}}


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
        pair_lines, pairs_ok = check_pairs(examples) if kind == "pairwise" else ([], True)
        status = "ERRORS" if errors or not pairs_ok else "ok"
        lines.append(f"{name}: {status}: {len(examples)} rows ok, {report.dropped(name)} dropped, "
                     f"{len(errors)} with errors (as {stage or KIND_STAGES[kind]} data)")
        if report.counts:
            lines.append("  " + report.summary())
        lines += [f"  - {e}" for e in errors[:max_errors]]
        if len(errors) > max_errors:
            lines.append(f"  - ... and {len(errors) - max_errors} more errors")
        lines += pair_lines
        ok = ok and not errors and pairs_ok
    return "\n".join(lines), ok


PAIR_LENGTH_RATIO = 4  # an answer this many times longer or shorter than the median is reported


def _rows_by_reason(found: dict[str, list]) -> str:
    return ", ".join(f"{len(rows)} {reason} ({'row' if len(rows) == 1 else 'rows'} "
                     f"{', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''})" for reason, rows in found.items())


def check_pairs(examples) -> tuple[list[str], bool]:
    """Preference checks beyond conversion: rows unusable as pairs (chosen equals rejected, an empty
    chosen, rejected or question) fail the dataset; exact-duplicate prompts and answers far longer or
    shorter than the median are reported. Returns report lines and whether no row is unusable."""
    unusable: dict[str, list] = defaultdict(list)
    notes: dict[str, list] = defaultdict(list)
    first_row: dict[str, int] = {}
    for ex in examples:
        chosen, rejected = ex.chosen["content"].strip(), ex.rejected["content"].strip()
        for what, text in (("chosen", chosen), ("rejected", rejected), ("question", ex.prompt[-1]["content"].strip())):
            if not text:
                unusable[f"empty {what}"].append(ex.row)
        if chosen and chosen == rejected:
            unusable["chosen equals rejected"].append(ex.row)
        prompt = json.dumps([ex.dataset, ex.system, ex.prompt], ensure_ascii=False)
        if prompt in first_row:
            notes["duplicate prompt"].append(f"{ex.row} = {first_row[prompt]}")
        first_row.setdefault(prompt, ex.row)
    if len(examples) >= 10:
        for what in ("chosen", "rejected"):
            lengths = [len(getattr(ex, what)["content"]) for ex in examples]
            median = statistics.median(lengths)
            for ex, n in zip(examples, lengths):
                if n and median and (n > PAIR_LENGTH_RATIO * median or n * PAIR_LENGTH_RATIO < median):
                    notes[f"{what} length outlier (median {median:g} chars)"].append(f"{ex.row}: {n}")
    lines = []
    if unusable:
        count = len({row for rows in unusable.values() for row in rows})
        lines.append(f"  preference pairs: {count} rows unusable, drop them before training: {_rows_by_reason(unusable)}")
    if notes:
        lines.append(f"  preference notes: {_rows_by_reason(notes)}")
    return lines, not unusable


def names_of(value: str | None) -> list[str] | None:
    names = split_names(value)
    return names or None
