"""`alignlab compare`: two models answer the same prompts with their own templates; metrics, reward
score, a judge's win rate (judge endpoint stubbed at the network edge) and a self-contained HTML
report that headless Chromium renders with every answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from transformers import AutoTokenizer

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
    markdown = (out / "report.md").read_text()
    assert all(r["answers"]["tuned"] in markdown for r in rows)
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
    assert dom.count("class=\"answer\"") == 8
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1400,1000", page],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
