"""`make demo` end to end (slow: trains the tiny model for ~3 minutes)."""

from __future__ import annotations

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
