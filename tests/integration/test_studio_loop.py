"""The Loop tab's steps as the page runs them (webui/loop.py + the job runner), without a browser: each step is
an `alignlab` command whose YAML is on disk, the state of each step is read back from the folder, a reward
model under the gate keeps PPO refused until the override, and loop.json records the runs in order."""

from __future__ import annotations

import json
import random
import time

import pytest
import yaml

from alignlab.config import ConfigError
from alignlab.studio.project import Project, view
from alignlab.webui import loop
from alignlab.webui.jobs import JobRunner, read_job
from tests.conftest import ROOT, save_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("loop-model"), init_range=0.2)


def run(runner: JobRunner, prepared: loop.Prepared) -> None:
    """Start a step's job and wait until its supervisor recorded the exit status (a hang ends at the
    test's timeout)."""
    runner.start(prepared.folder, prepared.command)
    while (job := read_job(prepared.folder)) is None or job.exit_code is None:
        time.sleep(0.5)
    assert job.exit_code == 0, (prepared.folder / "webui_train.log").read_text()[-3000:]


def states(folder) -> dict[str, str]:
    return {s.step: s.state for s in loop.step_states(folder)}


def annotate_all(folder) -> int:
    """Rank every item as annotator `ada`, at random (seeded): nothing a reward model can learn, so its
    held-out accuracy stays under the gate."""
    project = Project(folder)
    try:
        for item in project.items:
            order = [c["id"] for c in view(project, "ada", str(item["id"]))["candidates"]]
            ranks = dict(zip(order, random.Random(item["id"]).sample(range(1, len(order) + 1), len(order))))
            project.act("ada", f"submit-{item['id']}", str(item["id"]), "submit", {"ranks": ranks})
        return len(project.items)
    finally:
        project.close()


def test_the_loop_runs_each_step_as_an_alignlab_command(model_dir, tmp_path):
    root = tmp_path / "runs"
    folder = loop.loop_folder(root, "kids")
    runner = JobRunner(root)
    assert states(folder)["candidates"] == "todo"

    top = {"model_name_or_path": str(model_dir), "template": "qwen3_nothink"}
    prepared = loop.prepare_candidates(folder, top, {"dataset": "demo_rl", "dataset_dir": str(ROOT / "data"),
                                                     "max_samples": 20, "num_candidates": 3, "max_new_tokens": 12,
                                                     "candidate_temperatures": "0.7,1.0,1.3", "guideline": "Longer first."})
    assert yaml.safe_load(prepared.text)["output_dir"] == str(folder)
    run(runner, prepared)
    assert states(folder)["candidates"] == "finished" and states(folder)["annotate"] == "todo"
    assert annotate_all(folder) == 20
    assert states(folder)["annotate"] == "finished"

    run(runner, loop.prepare_export(folder, {"pair_mode": "best_vs_rest"}))
    export = next(s for s in loop.step_states(folder) if s.step == "export")
    assert export.state == "finished" and export.numbers["submitted"] == 20 and export.numbers["pairs"] > 0

    with pytest.raises(ConfigError, match="needs a reward model"):
        loop.prepare_train(folder, "ppo", loop.train_yaml(folder, "ppo"))
    rm_text = loop.train_yaml(folder, "rm").replace("num_train_epochs: 3", "num_train_epochs: 1")
    prepared = loop.prepare_train(folder, "rm", rm_text)
    assert prepared.folder == folder / "rm-1"
    run(runner, prepared)
    run_folder, verdict = loop.gate(folder)
    assert run_folder.name == "rm-1" and not verdict.passed and 20 <= verdict.more_items <= 50
    assert loop.read_loop(folder)["runs"][0] == {**loop.read_loop(folder)["runs"][0], "step": "rm", "folder": "rm-1",
                                                 "items": 20}

    ppo_text = loop.train_yaml(folder, "ppo").replace("max_steps: 40", "max_steps: 2")
    with pytest.raises(ConfigError, match="below"):
        loop.prepare_train(folder, "ppo", ppo_text)
    prepared = loop.prepare_train(folder, "ppo", ppo_text, override=True)
    config = yaml.safe_load(prepared.text)
    assert (config["reward_model"], config["rm_gate_override"], config["dataset"]) == (
        str(folder / "rm-1"), True, "kids_prompts")
    run(runner, prepared)
    assert states(folder)["policy"] == "finished"
    assert yaml.safe_load((folder / "ppo-1" / "run_config.yaml").read_text())["rm_gate_override"] is True

    prepared = loop.prepare_compare(folder, {"annotated_samples": 4, "held_out": "demo_prompts",
                                             "held_out_dir": str(ROOT / "data"), "held_out_samples": 4})
    assert "annotated.yaml" in prepared.text and "held_out.yaml" in prepared.text
    run(runner, prepared)
    for which in loop.COMPARE_SETS:
        results = json.loads((folder / "compare-1" / which / "results.json").read_text())
        assert set(results["metrics"]) == {"before", "after"}
    assert states(folder)["compare"] == "finished"
    assert [r["folder"] for r in loop.read_loop(folder)["runs"]] == ["rm-1", "ppo-1", "compare-1"]
