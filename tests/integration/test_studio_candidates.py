"""`alignlab data candidates` as users run it: k answers per prompt with their settings recorded, a run
torn by a crash resumes to the file an uninterrupted run writes, other settings are refused without
touching the file, exact duplicates are re-sampled, and `data pairs` exports what the store holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, read_jsonl, save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("candidate-model"), init_range=0.2)
    (path / "run_config.yaml").write_text("template: qwen3_nothink\n")
    return path


def candidates(model_dir, out, *keys: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignlab.cli", "data", "candidates", f"model_name_or_path={model_dir}",
                           f"output_dir={out}", "max_new_tokens=6", *keys], capture_output=True, text=True, cwd=ROOT)


def test_candidates_record_settings_and_resume_to_the_uninterrupted_file(model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What size for 90 cm?\n\nHello there\nA third prompt\nAnd a fourth\n")
    keys = (f"dataset={prompts}", "num_candidates=3", "candidate_temperatures=0.7,1.0,1.3",
            "guideline=Correct size first.")
    whole = candidates(model_dir, tmp_path / "a", *keys)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "ETA" in whole.stderr
    rows = read_jsonl(tmp_path / "a" / "candidates.jsonl")
    assert [r["id"] for r in rows] == [1, 3, 4, 5]  # line numbers; the blank line is no prompt
    assert rows[1]["prompt"] == {"system": "", "history": [], "instruction": "Hello there"}
    for position, row in enumerate(rows):
        assert [c["id"] for c in row["candidates"]] == ["c0", "c1", "c2"]
        for i, c in enumerate(row["candidates"]):
            assert (c["model"], c["adapter"], c["temperature"]) == (str(model_dir), None, [0.7, 1.0, 1.3][i])
            assert (c["top_p"], c["top_k"], c["max_new_tokens"], c["repetition_penalty"]) == (0.7, 50, 6, 1.0)
            assert c["seed"] == 42 + 4 * position + i + c["resamples"] * 1_000_003
    assert (tmp_path / "a" / "guideline.md").read_text() == "Correct size first."

    folder = tmp_path / "b"
    assert candidates(model_dir, folder, *keys).returncode == 0
    path = folder / "candidates.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # a crash in the middle of the second row
    resumed = candidates(model_dir, folder, *keys)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming: 1 of 4 prompts" in resumed.stderr
    assert path.read_bytes() == (tmp_path / "a" / "candidates.jsonl").read_bytes()

    before = path.read_bytes()
    refused = candidates(model_dir, folder, f"dataset={prompts}", "num_candidates=3", "candidate_temperatures=1.0")
    assert refused.returncode == 1
    assert "slots" in refused.stderr and "another `output_dir`" in refused.stderr
    assert path.read_bytes() == before


def test_exact_duplicates_are_resampled_and_greedy_twins_marked(model_dir, tmp_path):
    sampled = candidates(model_dir, tmp_path / "s", "dataset=demo_rl", f"dataset_dir={ROOT / 'data'}", "max_samples=8",
                         "num_candidates=4", "max_new_tokens=1", "temperature=0.3", "top_k=3")
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    rows = read_jsonl(tmp_path / "s" / "candidates.jsonl")
    assert [r["id"] for r in rows] == list(range(8)) and "label" in rows[0]["extra"]
    assert any(c["resamples"] > 0 for r in rows for c in r["candidates"])
    for row in rows:
        texts = [c["text"].strip() for c in row["candidates"] if not c["duplicate"]]
        assert len(texts) == len(set(texts))
    greedy = candidates(model_dir, tmp_path / "g", "dataset=demo_rl", f"dataset_dir={ROOT / 'data'}", "max_samples=2",
                        "num_candidates=2", "candidate_temperatures=0,0", "max_resamples=2")
    assert greedy.returncode == 0, greedy.stderr[-2000:]
    for row in read_jsonl(tmp_path / "g" / "candidates.jsonl"):
        first, second = row["candidates"]
        assert first["text"] == second["text"] and (first["duplicate"], second["duplicate"]) == (False, True)
        assert second["seed"] is None and second["temperature"] == 0.0


def test_bad_keys_name_the_key(model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n")
    for keys, named in (((f"dataset={prompts}",), "output_dir"), ((f"dataset={prompts}", "num_candidates=5"),
                                                                   "num_candidates")):
        run = subprocess.run([sys.executable, "-m", "alignlab.cli", "data", "candidates",
                              f"model_name_or_path={model_dir}", *keys,
                              *([f"output_dir={tmp_path / 'o'}"] if named != "output_dir" else [])],
                             capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 1 and named in run.stderr, run.stderr[-1000:]
        assert len(run.stderr.strip().splitlines()) == 1


def test_data_pairs_exports_the_store_and_validates(tmp_path):
    """`alignlab data pairs` on a project ranked through the store: registered, and `data validate` passes."""
    from alignlab.studio.project import Project

    folder = tmp_path / "project"
    folder.mkdir()
    rows = [{"id": i, "prompt": {"system": "", "history": [], "instruction": f"q{i}"},
             "candidates": [{"id": f"c{j}", "text": f"answer {j} of {i}"} for j in range(3)]} for i in range(3)]
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    project = Project(folder)
    project.act("ada", "1", "0", "submit", {"ranks": {"c0": 1, "c1": 2, "c2": 3}})
    project.act("ada", "2", "1", "skip", {})
    project.act("ada", "3", "2", "submit", {"ranks": {"c0": 2, "c1": 1, "c2": 1}})
    project.close()
    run = subprocess.run([sys.executable, "-m", "alignlab.cli", "data", "pairs", f"studio_dir={folder}",
                          f"dataset_dir={tmp_path}", "register_as=mine", "pair_mode=all_pairs"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "5 pairs" in run.stderr and "1 skipped" in run.stderr
    pairs = json.loads((folder / "pairs.json").read_text())
    assert sorted((p["item_id"], p["chosen_candidate"], p["rejected_candidate"]) for p in pairs) == [
        ("0", "c0", "c1"), ("0", "c0", "c2"), ("0", "c1", "c2"), ("2", "c1", "c0"), ("2", "c2", "c0")]
    assert all(p["chosen"] == f"answer {p['chosen_candidate'][1]} of {p['item_id']}" for p in pairs)
    check = subprocess.run([sys.executable, "-m", "alignlab.cli", "data", "validate", "dataset=mine",
                            f"dataset_dir={tmp_path}", "stage=rm"], capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr
