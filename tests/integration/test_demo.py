"""`make demo` end to end (slow: trains the tiny model for ~3 minutes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_demo_prints_the_accuracy_line(tmp_path):
    env = dict(os.environ, DEMO_FRESH="1")
    run = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    line = re.search(r"^sft\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)$", run.stdout, re.MULTILINE)
    assert line, run.stdout
    sampled, greedy = map(float, line.groups())
    assert (ROOT / "saves" / "demo" / "report.html").is_file() and "saves/demo/report.html" in run.stdout
    assert 0.15 < sampled < 0.6  # near the 35% share of good answers in the SFT data
    assert greedy > sampled
    # every published number is printed beside this run's
    published = json.loads((ROOT / "examples" / "demo" / "published.json").read_text())["metrics"]
    for key, (mean, sd) in published.items():
        assert re.search(rf"^{key}\s+[\d.]+\s+{mean:.3f} ± {sd:.3f}$", run.stdout, re.MULTILINE), key


def _demo_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_prints_mean_and_sd_over_seeds_beside_the_published_numbers(capsys):
    demo = _demo_module()
    runs = [{"dpo_sampled": 0.70, "rm_accuracy": 0.95}, {"dpo_sampled": 0.80, "rm_accuracy": 0.96}]
    summary = demo.print_against_published(runs)
    assert summary["dpo_sampled"] == [0.75, round(0.1 / 2 ** 0.5, 3)]  # sample sd of (0.7, 0.8)
    out = capsys.readouterr().out
    published = json.loads(demo.PUBLISHED.read_text())["metrics"]
    mean, sd = published["dpo_sampled"]
    assert re.search(rf"^dpo_sampled\s+0\.750 ± 0\.071\s+{mean:.3f} ± {sd:.3f}$", out, re.MULTILINE), out
    assert "2 seeds" in out and "README" in out
