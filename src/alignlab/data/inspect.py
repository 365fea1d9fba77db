"""`alignlab data preview` and `alignlab data validate`: look at data before training on it."""

from __future__ import annotations

import json
from collections import Counter

from .convert import SkipReport, check_mapped_columns, convert_row
from .encode import IGNORE_INDEX, EncodeOptions
from .loader import STAGE_KIND, encode_examples, load_examples, split_names
from .registry import DataError, get_dataset_attr, iter_rows, read_dataset_info

STAGE_NEEDS = {
    "sft": ("an answer", lambda ex: len(ex.response) == 1),
    "pairwise": ("chosen and rejected answers (`ranking: true`)",
                 lambda ex: ex.chosen is not None and ex.rejected is not None),
    "feedback": ("a kto_tag", lambda ex: ex.kto_tag is not None),
}


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


def validate(data_args, names: list[str] | None, stage: str | None, max_errors: int = 5) -> tuple[str, bool]:
    """Check every row of the named datasets (all of dataset_info.json when names is None).

    Returns a report and whether everything loaded without errors. Hub-only entries are
    reported as not loadable offline; they count as errors only when named explicitly.
    """
    info = read_dataset_info(data_args.dataset_dir)
    explicit = names is not None
    names = names if explicit else list(info)
    lines, ok = [], True
    need = STAGE_NEEDS.get(STAGE_KIND.get(stage or "", ""))
    for name in names:
        try:
            attr = get_dataset_attr(name, info, data_args.dataset_dir)
        except DataError as e:
            hub_only = name in info and "file_name" not in info[name]
            lines.append(f"{name}: {'skipped, ' if hub_only and not explicit else 'ERROR '}{e}")
            ok = ok and (hub_only and not explicit)
            continue
        report, errors, counts, seen = SkipReport(), [], Counter(), {}
        try:
            for path, index, row in iter_rows(attr, data_args.dataset_dir):
                seen.setdefault(path, set()).update(row)
                try:
                    ex = convert_row(attr, path, index, row, report)
                except DataError as e:
                    counts["error"] += 1
                    if len(errors) < max_errors:
                        errors.append(str(e))
                    continue
                if ex is None:
                    counts["skipped"] += 1
                elif need and not need[1](ex):
                    counts["error"] += 1
                    if len(errors) < max_errors:
                        errors.append(f"dataset {name!r}, file {path}, row {index}: stage {stage} "
                                      f"needs {need[0]}.")
                else:
                    counts["ok"] += 1
            for path, columns in seen.items():
                check_mapped_columns(attr, path, columns)
        except DataError as e:
            counts["error"] += 1
            errors.append(str(e))
        status = "ok" if not counts["error"] else "ERRORS"
        lines.append(f"{name}: {status}: {counts['ok']} rows ok, {counts['skipped']} skipped, "
                     f"{counts['error']} with errors")
        if report.counts:
            lines.append("  " + report.summary().replace("\n", "\n  "))
        lines += [f"  - {e}" for e in errors]
        ok = ok and not counts["error"]
    return "\n".join(lines), ok


def names_of(value: str | None) -> list[str] | None:
    names = split_names(value)
    return names or None
