"""The demo data and tiny model assets: reproducible, following the size rule, learnable shape."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT, tiny_model

DATA = ROOT / "data"
SIZE_RE = re.compile(r"(?:建议选 |size )(\d+)")
HEIGHT_RE = re.compile(r"(\d+)\s*(?:厘米|cm)")


def rule(height: int) -> int:
    """Smallest of 80..130 that is at least height + 3 (written out, not imported)."""
    for size in (80, 90, 100, 110, 120, 130):
        if size >= height + 3:
            return size
    raise AssertionError(height)


def load(name):
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def test_build_script_reproduces_committed_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_demo_assets.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    def files(root, folder):
        return [p.relative_to(root) for p in (root / folder).rglob("*") if p.is_file()]

    committed = sorted(files(ROOT, "data") + files(ROOT, "examples/models/tiny-qwen3"))
    rebuilt = files(tmp_path, "data") + files(tmp_path, "examples/models/tiny-qwen3")
    assert sorted(rebuilt) == committed
    for rel in committed:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), rel


def test_mcq_task_answers_follow_the_size_rule():
    import csv

    for path in sorted((DATA / "eval" / "size_advisor").rglob("*.csv")):
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        assert rows and all(len({r[c] for c in "ABCD"}) == 4 for r in rows)
        for r in rows:
            height = int(re.search(r"(\d+)\s*(?:厘米|cm)", r["question"]).group(1))
            assert int(r[r["answer"]]) == rule(height), (path.name, r)


def test_sft_style_mix_and_size_rule():
    rows = load("demo_sft")
    assert len(rows) == 4000
    styles = {"good": 0, "wrong": 0, "none": 0}
    zh = 0
    for row in rows:
        height = int(HEIGHT_RE.search(row["instruction"]).group(1))
        sizes = SIZE_RE.findall(row["output"])
        zh += bool(re.search(r"[\u4e00-\u9fff]", row["instruction"]))
        if not sizes:
            styles["none"] += 1
        else:
            styles["good" if int(sizes[0]) == rule(height) else "wrong"] += 1
    assert abs(styles["good"] / 4000 - 0.35) < 0.03
    assert abs(styles["none"] / 4000 - 0.45) < 0.03
    assert abs(styles["wrong"] / 4000 - 0.20) < 0.03
    assert zh / 4000 > 0.7  # most prompts are Chinese


def test_preference_kto_and_heldout_prompts():
    pref = load("demo_pref")
    for row in pref:
        height = int(HEIGHT_RE.search(row["instruction"]).group(1))
        assert [int(s) for s in SIZE_RE.findall(row["chosen"])] == [rule(height)]
        rejected = [int(s) for s in SIZE_RE.findall(row["rejected"])]
        assert rejected != [rule(height)]
    sharegpt = load("demo_pref_sharegpt")
    assert [r["conversations"][0]["value"] for r in sharegpt] == [r["instruction"] for r in pref]
    kto = load("demo_kto")
    assert {r["kto_tag"] for r in kto} == {True, False}
    prompts = load("demo_prompts")
    for row in prompts:
        assert row["label"] == str(rule(int(HEIGHT_RE.search(row["instruction"]).group(1))))
    training = {r["instruction"] for name in ("demo_sft", "demo_pref", "demo_kto") for r in load(name)}
    assert not training & {r["instruction"] for r in prompts}
    assert len({r["label"] for r in prompts}) == 6
    info = json.loads((DATA / "dataset_info.json").read_text())
    assert set(info) == {"demo_sft", "demo_pref", "demo_pref_sharegpt", "demo_kto", "demo_prompts", "demo_pt",
                         "demo_rl"}
    rl = load("demo_rl")
    assert all(r["label"] == str(rule(int(HEIGHT_RE.search(r["instruction"]).group(1)))) for r in rl)
    assert not {r["instruction"] for r in rl} & {r["instruction"] for r in prompts}  # RL never sees held-out prompts


def test_tokenizer_specials_and_any_utf8(tokenizer):
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    text = "Ünïcødé ✓ 😀 ﷽ 中文 ñ \t\n x"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert 1000 < len(tokenizer) <= 4096
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_tiny_model_size():
    model = tiny_model()
    n = sum(p.numel() for p in model.parameters())
    assert 2_000_000 <= n <= 5_000_000
    assert model.config.eos_token_id == 2
