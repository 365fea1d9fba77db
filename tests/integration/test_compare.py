"""`alignlab compare`: two models answer the same prompts with their own templates; metrics, reward
score, a judge's win rate (judge endpoint stubbed at the network edge) and a self-contained HTML
report that headless Chromium renders with every answer marked right or wrong against its label and
each model's settings; `num_beams` decodes with beam search as predict does."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from transformers import AutoTokenizer

from alignlab.eval.compare import render_html
from alignlab.eval.size_accuracy import extract_size
from tests.conftest import ROOT, TINY, tiny_model
from tests.integration.test_export import make_adapter
from tests.integration.test_train_sft import ALIGNLAB

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class AlwaysA(BaseHTTPRequestHandler):
    """An OpenAI-style judge that always prefers answer A."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"id": "j", "object": "chat.completion", "created": 0, "model": "judge", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def models(base_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(base_model_dir, base)
    (base / "run_config.yaml").write_text("template: qwen3_nothink\n")
    make_adapter(base, tmp_path / "tuned")
    from alignlab.model.value_head import ValueHeadModel

    reward = ValueHeadModel(tiny_model(seed=4))
    torch.nn.init.normal_(reward.v_head.summary.weight, std=1.0)
    reward.backbone.save_pretrained(tmp_path / "rm")
    reward.save_head(str(tmp_path / "rm"))
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path / "rm")
    (tmp_path / "rm" / "run_config.yaml").write_text("template: qwen3_nothink\nstage: rm\n")
    return base, tmp_path / "tuned", tmp_path / "rm"


def test_compare_report_with_reward_judge_and_browser(models, tmp_path):
    base, tuned, rm = models
    judge = HTTPServer(("127.0.0.1", 0), AlwaysA)
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    out = tmp_path / "report"
    try:
        run = subprocess.run([ALIGNLAB, "compare", f"model_name_or_path={base}", f"compare_models=base={base},tuned=+{tuned}",
                              "eval_dataset=demo_prompts", "max_samples=4", "max_new_tokens=8", "do_sample=false",
                              "eval_metrics=alignlab.eval.size_accuracy:size_metrics", f"reward_model={rm}",
                              f"judge_api_base=http://127.0.0.1:{judge.server_port}/v1", f"compare_dir={out}"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    finally:
        judge.shutdown()
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["base", "tuned"]
    assert results["models"][1]["adapters"] == [str(tuned)]
    rows = results["rows"]
    assert len(rows) == 4 and all(set(r["answers"]) == {"base", "tuned"} for r in rows)
    assert any(r["answers"]["base"] != r["answers"]["tuned"] for r in rows)  # the adapter changes answers
    metrics = results["metrics"]
    # the judge always says A and the order alternates: the tuned model wins prompts 1 and 3 of 4
    assert metrics["tuned"]["judge_win_rate_vs_base"] == 0.5
    assert {"bleu-4", "rouge-l", "size_accuracy", "reward", "mean_tokens", "truncated"} <= set(metrics["base"])
    assert metrics["base"]["reward"] != metrics["tuned"]["reward"]
    # each model's settings; each answer marked by the size it recommends against the reference's
    greedy = {"decoding": "greedy", "max_new_tokens": 8, "num_beams": 1, "repetition_penalty": 1.0}
    assert [(m["model"], m["template"], m["generation"]) for m in results["models"]] == \
        [(str(base), "qwen3_nothink", greedy)] * 2
    assert results["marked_by"] == "size_accuracy"
    for r in rows:
        assert r["marks"] == {n: extract_size(a) == extract_size(r["reference"]) for n, a in r["answers"].items()}
    assert metrics["tuned"]["size_accuracy"] == sum(r["marks"]["tuned"] for r in rows) / len(rows)
    markdown = (out / "report.md").read_text()
    assert all(r["answers"]["tuned"] in markdown for r in rows)
    assert f"| adapters | none | {tuned} |" in markdown and "| decoding | greedy | greedy |" in markdown
    assert markdown.count("- **tuned** ✗") + markdown.count("- **tuned** ✓") == 4
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}"]
    page = (out / "report.html").as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    import html

    text = html.unescape(dom)
    for row in rows:
        for answer in row["answers"].values():
            assert answer.strip() in text
    assert dom.count("data-model=") == 8 and dom.count("data-mark=") == 8
    assert str(tuned) in text and "qwen3_nothink" in text and "greedy" in text
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1400,1000", page],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def dump_and_shoot(page, tmp_path, width=1400):
    """(DOM after load, screenshot path) of a page in headless Chromium."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    shot = tmp_path / f"{page.stem}.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", f"--window-size={width},900", page.as_uri()],
                   capture_output=True, timeout=120)
    return dom, shot


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make install installs Debian's chromium)")
def test_report_page_shows_settings_and_marks_in_chromium(tmp_path):
    """A person reads, per model, the model, adapters, template and decoding, and sees each answer marked
    ✓ (green) or ✗ (red) with a tally per model; an answer without a label carries no mark."""
    import html

    generation = {"decoding": "sampling", "max_new_tokens": 96, "num_beams": 1, "repetition_penalty": 1.0,
                  "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 42}
    report = {"models": [{"name": "sft", "model": "saves/demo/sft", "adapters": [], "template": "qwen3_nothink",
                          "generation": generation},
                         {"name": "dpo", "model": "saves/demo/sft", "adapters": ["saves/demo/dpo"],
                          "template": "qwen3_nothink", "generation": generation}],
              "metrics": {"sft": {"size_accuracy": 0.5}, "dpo": {"size_accuracy": 1.0}}, "marked_by": "size_accuracy",
              "rows": [{"prompt": "身高102cm的宝宝，连体衣要买多大的？", "reference": "建议选 110 码。",
                        "answers": {"sft": "建议选 100 码。", "dpo": "建议选 110 码。"},
                        "marks": {"sft": False, "dpo": True}},
                       {"prompt": "What size coat fits a kid who is 95 cm tall?", "reference": "Size 100.",
                        "answers": {"sft": "Size 100 fits.", "dpo": "Size 100 is right."},
                        "marks": {"sft": True, "dpo": True}},
                       {"prompt": "hello", "reference": "", "answers": {"sft": "hi", "dpo": "hello!"},
                        "marks": {"sft": None, "dpo": None}}]}
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    dom, shot = dump_and_shoot(page, tmp_path)
    text = html.unescape(dom)
    assert dom.count("data-mark=\"right\"") == 3 and dom.count("data-mark=\"wrong\"") == 1
    assert "1 of 2 ✓" in text and "2 of 2 ✓" in text
    assert "✗</span> 建议选 100 码。" in text and "✓</span> 建议选 110 码。" in text
    assert "<td class=\"answer\" data-model=\"sft\">hi</td>" in dom  # no label: no mark
    settings = text[text.index("id=\"settings\""):text.index("id=\"metrics\"")]
    for cell in ("saves/demo/sft", "saves/demo/dpo", "none", "qwen3_nothink", "sampling", "96", "42"):
        assert f"<td>{cell}</td>" in settings, cell
    assert "✓ right, ✗ wrong" in text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_compare_decodes_with_beam_search_when_num_beams_is_set(base_model_dir, tmp_path):
    """num_beams: 2 gives each prompt's answer of HF beam search (one unpadded `generate` per prompt here),
    not the greedy answer (they differ on this model), and the settings say so."""
    from alignlab.data import get_template

    out = tmp_path / "report"
    run = subprocess.run([ALIGNLAB, "compare", f"compare_models=base={base_model_dir}", "template=qwen3_nothink",
                          "eval_dataset=demo_prompts", "max_samples=4", "max_new_tokens=8", "do_sample=false",
                          "num_beams=2", f"compare_dir={out}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["models"][0]["generation"]["decoding"] == "beam search, 2 beams"
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    template = get_template("qwen3_nothink", tokenizer)
    model = tiny_model(seed=0).eval()
    by_hand = {}
    for beams in (1, 2):
        for row in results["rows"]:
            ids = torch.tensor([template.encode_prompt(tokenizer, [{"role": "user", "content": row["prompt"]}])])
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=beams,
                                       do_sample=False, max_new_tokens=8, eos_token_id=template.stop_token_ids(tokenizer),
                                       pad_token_id=tokenizer.pad_token_id)
            by_hand.setdefault(beams, []).append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True))
    assert [r["answers"]["base"] for r in results["rows"]] == by_hand[2]
    assert by_hand[1] != by_hand[2]
