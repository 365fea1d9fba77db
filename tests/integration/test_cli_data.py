"""The real `alignlab` console script: version, env, data preview and validate, error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, TINY

ALIGNLAB = str(Path(sys.executable).parent / "alignlab")


def run(*args, cwd=ROOT):
    return subprocess.run([ALIGNLAB, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_version_and_env():
    assert run("version").stdout.strip() == "0.1.0"
    env = run("env").stdout
    for package in ("python", "torch", "transformers", "peft", "accelerate", "datasets", "device"):
        assert f"{package}:" in env


def test_preview_json_for_sft_and_pairwise():
    out = run("data", "preview", f"model_name_or_path={TINY}", "dataset=demo_sft", "template=qwen3_nothink",
              "--num", "2", "--json")
    assert out.returncode == 0, out.stderr
    items = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(items) == 2
    first = items[0]
    assert set(first) == {"input_ids", "labels", "text", "label_text"}
    assert first["text"].startswith("<|im_start|>user\n") and first["text"].endswith("<|im_end|>\n")
    assert first["text"].endswith(first["label_text"]) and "<|im_start|>" not in first["label_text"]
    assert len(first["input_ids"]) == len(first["labels"])

    out = run("data", "preview", f"model_name_or_path={TINY}", "dataset=demo_pref_sharegpt", "template=qwen3",
              "stage=rm", "--num", "1", "--json")
    item = json.loads(out.stdout)
    assert {"chosen_text", "rejected_text", "chosen_label_text", "rejected_label_text"} <= set(item)
    assert item["chosen_label_text"].startswith("<think>\n\n</think>\n\n")


def test_validate_exit_codes_and_row_errors(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"broken": {"file_name": "b.jsonl"}}))
    (tmp_path / "b.jsonl").write_text('{"instruction": "q", "output": "a"}\n{"instruction": 5}\n')
    out = run("data", "validate", "dataset=broken", f"dataset_dir={tmp_path}")
    assert out.returncode == 1
    assert "broken: ERRORS: 1 rows ok, 0 dropped, 1 with errors" in out.stdout
    assert "b.jsonl, row 1: column 'instruction' must be text" in out.stdout
    assert run("data", "validate", "dataset=demo_sft,demo_pref", "stage=sft").returncode == 1  # pref has no answer
    assert run("data", "validate", "dataset=demo_sft,demo_kto").returncode == 0


def test_unknown_key_is_one_clear_message():
    out = run("data", "preview", f"model_name_or_path={TINY}", "dataset=demo_sft", "templte=qwen3")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1:] == [
        "alignlab data: Unknown config key `templte` (in command-line overrides). Did you mean: template? "
        "Run `alignlab train --help` for the list of keys."]


def test_validate_and_training_print_the_same_drop_report(tmp_path, base_model_dir):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(120)]
    del rows[7]["output"], rows[19]["output"]
    rows[44]["instruction"] = None
    (tmp_path / "dataset_info.json").write_text(json.dumps({"name": {"file_name": "rows.json"}}))
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    line = "dropped 3 of 120 rows of `name`: 2 missing `output` (rows 7, 19), 1 null `instruction` (row 44)"
    out = run("data", "validate", "dataset=name", f"dataset_dir={tmp_path}")
    assert out.returncode == 0 and line in out.stdout.splitlines()[1]
    train = run("train", f"model_name_or_path={base_model_dir}", "dataset=name", f"dataset_dir={tmp_path}",
                "template=qwen3_nothink", "cutoff_len=32", "max_steps=1", "per_device_train_batch_size=2",
                f"output_dir={tmp_path / 'run'}", "report_to=none")
    assert train.returncode == 0, train.stderr[-2000:]
    assert line in train.stderr
