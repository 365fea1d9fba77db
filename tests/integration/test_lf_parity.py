"""LLaMA-Factory 0.9.5 parity: the same demo datasets, templates and options encoded by LLaMA-Factory's
own pipeline (its get_template_and_fix_tokenizer and dataset processors, run in its peer venv by
lf_encode.py) and by alignlab give the same input_ids and labels, cell by cell.

Runs when ../shared/fixtures/llamafactory-data and the peer venv (`python scripts/peer_venvs.py
llamafactory`) exist; skipped with the reason otherwise. The default tier runs a representative subset
in one LLaMA-Factory subprocess; `-m slow` runs every claimed template × stage. Two deliberate
differences are checked as such (docs/templates.md): a ppo/grpo prompt over the budget keeps its end
(LLaMA-Factory keeps its start, cutting the assistant header off), and ppo/grpo `labels` hold the raw
reference answer (LLaMA-Factory's hold it template-encoded), both under LLaMA-Factory's budget split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alignlab.config import load_config
from alignlab.data import get_dataset, get_template
from tests.conftest import LF_DATA, ROOT, TINY

PEERS = ROOT / "scripts" / "peer_venvs.py"
HELPER = ROOT / "tests" / "integration" / "lf_encode.py"
CLAIMED = ["default", "alpaca", "qwen", "qwen3", "qwen3_nothink", "llama3", "mistral", "chatml", "empty"]
# tokens the llama3/mistral slots need, added to the tiny tokenizer (as the model families' own have them)
SPECIAL = {
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
               "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"]},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>",
                "additional_special_tokens": ["[INST]", "[/INST]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
                                              "[/TOOL_RESULTS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]},
}


def _lf_python() -> tuple[str | None, str]:
    if not LF_DATA.is_dir():
        return None, f"LLaMA-Factory demo data absent ({LF_DATA})"
    check = subprocess.run([sys.executable, str(PEERS), "llamafactory", "--check"], capture_output=True, text=True)
    if check.returncode != 0:
        return None, f"LLaMA-Factory peer venv absent: build it with `python {PEERS.relative_to(ROOT)} llamafactory`"
    return check.stdout.strip(), ""


LF_PYTHON, SKIP_REASON = _lf_python()
pytestmark = pytest.mark.skipif(LF_PYTHON is None, reason=SKIP_REASON)


def cell(template: str, stage: str, dataset: str, cutoff: int = 256, rows: int = 12, **options) -> dict:
    name = "-".join([template, stage, dataset, str(cutoff)] + [f"{k}={v}" for k, v in sorted(options.items())])
    return {"id": name, "template": template, "stage": stage, "dataset": dataset, "cutoff_len": cutoff,
            "max_samples": rows, "options": options}


def full_matrix() -> list[dict]:
    cells = []
    for t in CLAIMED:
        cells += [cell(t, "sft", "alpaca_en_demo"), cell(t, "sft", "glaive_toolcall_en_demo", 512),
                  cell(t, "sft", "glaive_toolcall_en_demo", 512, mask_history=True), cell(t, "sft", "identity", 128),
                  cell(t, "rm", "dpo_en_demo"), cell(t, "dpo", "dpo_zh_demo"), cell(t, "kto", "kto_en_demo"),
                  cell(t, "pt", "wiki_demo", 128, rows=6), cell(t, "pt", "c4_demo", 256, rows=6, packing=False),
                  cell(t, "ppo", "alpaca_en_demo", 128), cell(t, "ppo", "glaive_toolcall_zh_demo", 512)]
    cells += [cell("qwen3", "sft", "glaive_toolcall_en_demo", 512, enable_thinking=False),
              cell("qwen3", "dpo", "dpo_en_demo", enable_thinking=False),
              cell("qwen3", "sft", "glaive_toolcall_en_demo", 512, mask_history=True, preserve_thinking=True),
              cell("qwen3", "sft", "alpaca_en_demo", 200, rows=24, packing=True),
              cell("llama3", "pt", "c4_demo", 256, rows=6, packing=False)]
    return cells


SUBSET = [
    cell("qwen3", "sft", "glaive_toolcall_en_demo", 512, rows=8),
    cell("qwen3", "sft", "glaive_toolcall_en_demo", 512, rows=8, mask_history=True),
    cell("qwen3", "dpo", "dpo_en_demo", rows=8),
    cell("qwen3", "kto", "kto_en_demo", rows=8),
    cell("qwen3", "ppo", "alpaca_en_demo", 128, rows=8),
    cell("qwen3_nothink", "sft", "alpaca_en_demo", 200, rows=16, packing=True),
    cell("llama3", "pt", "wiki_demo", 128, rows=4),
    cell("llama3", "sft", "glaive_toolcall_en_demo", 512, rows=6),
    cell("mistral", "rm", "dpo_zh_demo", rows=6),
    cell("default", "sft", "identity", 128, rows=8),
    cell("alpaca", "kto", "kto_en_demo", rows=6),
]


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    from transformers import AutoTokenizer

    dirs = {}
    for family, special in SPECIAL.items():
        tokenizer = AutoTokenizer.from_pretrained(TINY)
        tokenizer.add_special_tokens(special)
        dirs[family] = tmp_path_factory.mktemp(f"tok-{family}")
        tokenizer.save_pretrained(dirs[family])
    return dirs


def tokenizer_dir(dirs, template: str) -> str:
    return str(dirs.get(template, TINY))


def llamafactory_view(tmp_path) -> str:
    """The demo data as LLaMA-Factory's side reads it: rows whose `tools` is an empty list ("[]",
    109 + 100 rows of the glaive demos) get no `tools`. LLaMA-Factory renders an empty system turn
    for them; alignlab, like the model families' own templates, renders none (docs/templates.md)."""
    view = tmp_path / "lf-data"
    view.mkdir()
    for path in LF_DATA.iterdir():
        if path.name.startswith("glaive_toolcall"):
            rows = json.loads(path.read_text())
            for row in rows:
                if row.get("tools") == "[]":
                    row["tools"] = ""
            (view / path.name).write_text(json.dumps(rows, ensure_ascii=False))
        else:
            (view / path.name).symlink_to(path)
    return str(view)


def run_llamafactory(cells: list[dict], dirs, tmp_path) -> dict:
    spec = {"dataset_dir": llamafactory_view(tmp_path), "cells": [{**c, "tokenizer": tokenizer_dir(dirs, c["template"])} for c in cells]}
    (tmp_path / "cells.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run([LF_PYTHON, str(HELPER), str(tmp_path / "cells.json"), str(tmp_path / "lf.json")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((tmp_path / "lf.json").read_text())


def encode_ours(c: dict, dirs) -> tuple[list[dict], object]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(dirs, c["template"]))
    options = [f"{k}={str(v).lower()}" for k, v in c["options"].items()]
    stage_key = [f"stage={c['stage']}"] if c["stage"] in ("pt", "sft") else []  # pt packs by default
    cfg = load_config([f"dataset_dir={LF_DATA}", f"dataset={c['dataset']}", f"template={c['template']}",
                       f"cutoff_len={c['cutoff_len']}", f"max_samples={c['max_samples']}", *stage_key, *options])
    template = get_template(c["template"], tokenizer, enable_thinking=cfg.data.enable_thinking,
                            preserve_thinking=cfg.data.preserve_thinking)
    return list(get_dataset(cfg.data, c["stage"], tokenizer, template).train), tokenizer


def first_difference(a: list, b: list) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"lengths {len(a)} vs {len(b)}, first difference at {i}: {a[i:i + 6]} vs {b[i:i + 6]}"


def compare(c: dict, lf: dict, ours: list[dict], tokenizer) -> list[str]:
    """Every difference between LLaMA-Factory's rows and ours, as readable lines."""
    if "error" in lf:
        return [f"{c['id']}: LLaMA-Factory failed: {lf['error']}"]
    theirs, problems = lf["rows"], []
    if len(theirs) != len(ours):
        return [f"{c['id']}: {len(theirs)} rows from LLaMA-Factory, {len(ours)} from alignlab"]
    pad = tokenizer.pad_token_id
    for r, (a, b) in enumerate(zip(theirs, ours)):
        if c["stage"] == "ppo":
            n = len(a["input_ids"])
            expected = {"input_ids": a["prompt_full"][len(a["prompt_full"]) - n:],  # same budget, the end kept
                        "labels": tokenizer.encode(a["reference"], add_special_tokens=False)[:len(a["labels"])]}
            assert a["input_ids"] == a["prompt_full"][:n]  # LLaMA-Factory keeps the start
        elif c["options"].get("packing") and c["stage"] == "sft":  # theirs is padded to cutoff_len
            n = len(b["input_ids"])
            assert a["input_ids"][n:] == [pad] * (len(a["input_ids"]) - n) and set(a["labels"][n:]) <= {-100}
            expected = {"input_ids": a["input_ids"][:n], "labels": a["labels"][:n]}
        else:
            expected = a
        for key, value in expected.items():
            if b.get(key) != value:
                problems.append(f"{c['id']} row {r} {key}: {first_difference(value, b.get(key))}")
    return problems


def check(cells: list[dict], dirs, tmp_path) -> None:
    lf = run_llamafactory(cells, dirs, tmp_path)
    problems = []
    for c in cells:
        ours, tokenizer = encode_ours(c, dirs)
        problems += compare(c, lf[c["id"]], ours, tokenizer)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def test_parity_with_llamafactory_representative_cells(tokenizer_dirs, tmp_path):
    check(SUBSET, tokenizer_dirs, tmp_path)


@pytest.mark.slow
def test_parity_with_llamafactory_every_claimed_template_and_stage(tokenizer_dirs, tmp_path):
    check(full_matrix(), tokenizer_dirs, tmp_path)
