"""LLaMA-Factory's own demo data and dataset_info.json load, convert and encode unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignlab.config import load_config
from alignlab.data import SkipReport, get_dataset, get_template, load_examples
from tests.conftest import LF_DATA

pytestmark = pytest.mark.skipif(not LF_DATA.is_dir(), reason="../shared/fixtures/llamafactory-data absent")

STAGES = {"identity": "sft", "alpaca_en_demo": "sft", "alpaca_zh_demo": "sft", "glaive_toolcall_en_demo": "sft",
          "glaive_toolcall_zh_demo": "sft", "dpo_en_demo": "dpo", "dpo_zh_demo": "dpo", "kto_en_demo": "kto",
          "wiki_demo": "pt", "c4_demo": "pt"}


def local_entries():
    info = json.loads((LF_DATA / "dataset_info.json").read_text())
    return [name for name, entry in info.items() if "file_name" in entry]


def test_every_local_entry_converts():
    assert sorted(local_entries()) == sorted(STAGES)
    for name in local_entries():
        report = SkipReport()
        examples = load_examples(load_config([f"dataset_dir={LF_DATA}"]).data, name, 0, report)
        assert len(examples) == report.totals[name] > 0, name
        assert not report.counts, report.summary()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_local_entry_encodes_for_its_stage(tokenizer, name):
    template = get_template("qwen", tokenizer)
    cfg = load_config([f"dataset_dir={LF_DATA}", f"dataset={name}", "cutoff_len=256", "max_samples=40"])
    data = get_dataset(cfg.data, STAGES[name], tokenizer, template)
    assert len(data.train) > 0
    row = data.train[0]
    key = "chosen_labels" if STAGES[name] == "dpo" else "labels"
    assert any(label != -100 for label in row[key])


def test_tool_calls_render_in_qwen_format(tokenizer):
    template = get_template("qwen", tokenizer)
    (ex,) = load_examples(load_config([f"dataset_dir={LF_DATA}", "max_samples=1"]).data,
                          "glaive_toolcall_en_demo", 0, SkipReport())
    text = template.render(tokenizer, ex.prompt + ex.response, ex.system, ex.tools)
    assert "# Tools" in text and '"name": "search_recipes"' in text
    assert '<tool_call>\n{"name": "search_recipes", "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}\n</tool_call>' in text
    assert "<tool_response>\n" in text


def test_validate_reports_hub_only_entries_clearly():
    run = subprocess.run([sys.executable, "-m", "alignlab.cli", "data", "validate", "--all", f"dataset_dir={LF_DATA}"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "alpaca_en: skipped, Dataset 'alpaca_en' points only at a hub" in run.stdout
    assert "identity: ok: 91 rows ok" in run.stdout
    named = subprocess.run([sys.executable, "-m", "alignlab.cli", "data", "validate", "dataset=alpaca_en",
                            f"dataset_dir={LF_DATA}"], capture_output=True, text=True)
    assert named.returncode == 1 and "local `file_name`" in named.stdout
