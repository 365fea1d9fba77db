"""Shared fixtures: the bundled tiny Qwen3 tokenizer/model (random init) and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "models" / "tiny-qwen3"
LF_DATA = ROOT.parent / "shared" / "fixtures" / "llamafactory-data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own tokenised-data cache."""
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


def tiny_model(seed: int = 0, attn: str = "sdpa", init_range: float | None = None):
    """The tiny model with random weights; a larger `init_range` gives varied (not repeating) greedy text."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(TINY)
    if init_range is not None:
        config.initializer_range = init_range
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn)


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def save_tiny_model(path, seed: int = 0, init_range: float | None = None):
    """`tiny_model(seed, init_range)` and the bundled tokenizer saved as a normal model folder; returns it."""
    from transformers import AutoTokenizer

    tiny_model(seed=seed, init_range=init_range).save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory):
    """The tiny model with random weights (seed 0) saved as a normal model folder."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-base"))


def read_jsonl(path):
    import json

    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _is_llamafactory_test(nodeid: str) -> bool:
    return "llamafactory" in nodeid.lower() or "lf_parity" in nodeid.lower()


def pytest_terminal_summary(terminalreporter):
    """End `make test` with how many LLaMA-Factory compatibility tests ran and why any were skipped."""
    ran, skipped = 0, {}
    for status in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(status, []):
            if not _is_llamafactory_test(getattr(report, "nodeid", "")) or report.when not in ("call", "setup"):
                continue
            if status == "skipped":
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                skipped[reason.removeprefix("Skipped: ")] = skipped.get(reason.removeprefix("Skipped: "), 0) + 1
            elif report.when == "call" or status == "error":
                ran += 1
    if ran or skipped:
        terminalreporter.write_sep("-", "LLaMA-Factory compatibility")
        terminalreporter.write_line(f"{ran} ran, {sum(skipped.values())} skipped")
        for reason, count in skipped.items():
            terminalreporter.write_line(f"  {count} skipped: {reason}")
