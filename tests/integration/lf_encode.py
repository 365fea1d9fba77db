"""Encode datasets with LLaMA-Factory's own data pipeline; run with the LLaMA-Factory peer venv's python.

    <peer python> lf_encode.py cells.json out.json

cells.json: {"dataset_dir": ..., "cells": [{"id", "tokenizer", "template", "stage", "dataset",
"cutoff_len", "max_samples", "options": {DataArguments keys}}]}. out.json maps each id to
{"rows": [...]} (the processed rows' ids and labels; for ppo also the untruncated prompt from
`template.encode_oneturn` and the reference text) or {"error": "..."}.
Imports nothing of alignlab: this is the oracle side of tests/integration/test_lf_parity.py.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

KEYS = ("input_ids", "labels", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels",
        "kl_input_ids", "kl_labels", "kto_tags")


def encode_cell(cell: dict, dataset_dir: str, work: str) -> dict:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.loader import _get_merged_dataset
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import AutoTokenizer, Seq2SeqTrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(cell["tokenizer"])
    data_args = DataArguments(template=cell["template"], dataset=cell["dataset"], dataset_dir=dataset_dir,
                              cutoff_len=cell["cutoff_len"], max_samples=cell["max_samples"], overwrite_cache=True,
                              **cell.get("options", {}))
    if cell["stage"] == "pt" and "packing" not in cell.get("options", {}):
        data_args.packing = True  # what LLaMA-Factory's argument parser does for pt (after __post_init__)
    model_args = ModelArguments(model_name_or_path=cell["tokenizer"])
    training_args = Seq2SeqTrainingArguments(output_dir=os.path.join(work, cell["id"]), report_to=[])
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    stage = "rm" if cell["stage"] == "dpo" else cell["stage"]
    dataset = get_dataset(template, model_args, data_args, training_args, stage, tokenizer)["train_dataset"]
    rows = [{k: row[k] for k in KEYS if k in row} for row in dataset]
    if stage == "ppo":  # the prompt before truncation, to show which end a truncation keeps
        aligned = _get_merged_dataset(data_args.dataset, model_args, data_args, training_args, stage)
        usable = [a for a in aligned if len(a["_prompt"]) % 2 == 1]
        for row, a in zip(rows, usable):
            answer = a["_response"] if len(a["_response"]) == 1 else [{"role": "assistant", "content": ""}]
            row["prompt_full"], _ = template.encode_oneturn(tokenizer, a["_prompt"] + answer, a["_system"], a["_tools"])
            row["reference"] = a["_response"][0]["content"] if len(a["_response"]) == 1 else ""
    return {"rows": rows}


def freeze_tool_prompt_date() -> None:
    """LLaMA-Factory writes today's date into llama3 tool prompts, so its encoding changes with the
    calendar; pin it to Llama 3.1's template default (what alignlab writes) to compare the rest."""
    import datetime as real

    import llamafactory.data.tool_utils as tool_utils

    class Frozen(real.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2024, 7, 26)

    tool_utils.datetime = Frozen


def main() -> None:
    spec = json.load(open(sys.argv[1], encoding="utf-8"))
    freeze_tool_prompt_date()
    with tempfile.TemporaryDirectory() as work:
        os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(work, "datasets"))
        out = {}
        for cell in spec["cells"]:
            try:
                out[cell["id"]] = encode_cell(cell, spec["dataset_dir"], work)
            except Exception as e:  # a cell LLaMA-Factory refuses is reported, not fatal
                out[cell["id"]] = {"error": f"{type(e).__name__}: {e}"}
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
