"""The Loop tab's files (webui/loop.py) on hand-made folders: names, run numbering and resuming, the keys the
loop owns over an edited YAML, the gate that keeps PPO refused, loop.json's history, and nothing written
for a refused step."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from alignlab.config import ConfigError
from alignlab.webui import loop
from alignlab.webui.jobs import CONFIG_FILE, Job, write_job

MODEL = {"model_name_or_path": "examples/models/tiny-qwen3", "template": "qwen3_nothink"}


def finished_job(folder, exit_code=0, stop=False, start=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    start = start or time.time()
    write_job(Job(str(folder), 2 ** 22 + 7, start, ["x"], exit_code, start + 1, stop))


def make_loop(tmp_path, name="kids"):
    folder = loop.loop_folder(tmp_path / "runs", name)
    (folder / "steps" / "candidates").mkdir(parents=True)
    (folder / "steps" / "candidates" / loop.STEP_FILE).write_text(yaml.safe_dump(MODEL))
    rows = [{"id": i, "prompt": {"instruction": f"size for {90 + i} cm?", "input": "", "system": "", "history": []},
             "extra": {"label": "100"}, "candidates": [{"id": "c0", "text": "a"}, {"id": "c1", "text": "b"}]}
            for i in range(3)]
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def rm_run(folder, n: int, accuracy: float, bar: float = 0.85, items: int = 10):
    run = folder / f"rm-{n}"
    finished_job(run, start=time.time() + n)
    (run / CONFIG_FILE).write_text(yaml.safe_dump({"stage": "rm", "rm_min_accuracy": bar}))
    (run / "all_results.json").write_text(json.dumps({"eval_accuracy": accuracy, "rm_ready": accuracy >= bar}))
    loop.record(folder, {"step": "rm", "folder": run.name, "items": items})
    return run


@pytest.mark.parametrize("name", ["", "../up", ".hidden", "a b", "x" * 65])
def test_a_loop_name_that_is_no_folder_name_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="loop name"):
        loop.loop_folder(tmp_path, name)


def test_runs_are_numbered_and_a_stopped_run_with_a_checkpoint_is_resumed(tmp_path):
    folder = make_loop(tmp_path)
    assert loop.next_run_folder(folder, "rm") == folder / "rm-1"
    stopped = folder / "rm-1"
    finished_job(stopped, exit_code=-15, stop=True)
    (stopped / CONFIG_FILE).write_text("stage: rm\n")
    assert loop.next_run_folder(folder, "rm") == folder / "rm-2"  # no checkpoint: nothing to resume
    (stopped / "checkpoint-4").mkdir()
    (stopped / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert loop.next_run_folder(folder, "rm") == stopped
    (stopped / "all_results.json").write_text("{}")
    finished_job(stopped)
    (folder / "rm-10").mkdir()
    assert loop.next_run_folder(folder, "rm") == folder / "rm-11"  # by number, not by name


def test_the_loop_owns_output_dir_data_and_stage_over_an_edited_yaml(tmp_path):
    folder = make_loop(tmp_path)
    with pytest.raises(ConfigError, match="no exported pairs"):
        loop.prepare_train(folder, "rm", loop.train_yaml(folder, "rm"))
    (folder / "pairs.json").write_text("[]")
    (folder / "studio_report.json").write_text(json.dumps({"counts": {"submitted": 17}}))
    edited = loop.train_yaml(folder, "rm").replace("lora_rank: 16", "lora_rank: 4")
    edited += "output_dir: /elsewhere\nstage: sft\ndataset: other\n"
    prepared = loop.prepare_train(folder, "rm", edited)
    written = yaml.safe_load((folder / "rm-1" / CONFIG_FILE).read_text())
    assert prepared.folder == folder / "rm-1" and prepared.command[-1] == str(folder / "rm-1" / CONFIG_FILE)
    assert (written["stage"], written["output_dir"], written["dataset"], written["dataset_dir"]) == (
        "rm", str(folder / "rm-1"), "kids_pairs", str(folder))
    assert (written["lora_rank"], written["model_name_or_path"], written["warmup_steps"]) == (4, MODEL[
        "model_name_or_path"], 0.05)  # the user's edit kept; LLaMA-Factory's warmup_ratio read as a fraction
    assert loop.read_loop(folder)["runs"] == [{**loop.read_loop(folder)["runs"][0], "step": "rm", "folder": "rm-1",
                                               "items": 17}]
    following = loop.train_values(folder, "rm")  # the next run starts from this one's settings
    assert (following["lora_rank"], following["output_dir"], following["stage"]) == (4, str(folder / "rm-2"), "rm")


def test_a_bad_yaml_names_the_step_or_key_and_writes_nothing(tmp_path):
    folder = make_loop(tmp_path)
    (folder / "pairs.json").write_text("[]")
    with pytest.raises(ConfigError, match="the rm YAML does not parse"):
        loop.prepare_train(folder, "rm", "stage: [rm")
    with pytest.raises(ConfigError, match="not a mapping"):
        loop.prepare_train(folder, "rm", "- a\n- b\n")
    with pytest.raises(ConfigError, match="lora_rnak"):
        loop.prepare_train(folder, "rm", "lora_rnak: 4\n")
    assert not (folder / "rm-1").exists() and not (folder / loop.LOOP_FILE).exists()


def test_ppo_needs_a_reward_model_that_passed_the_gate_or_the_override(tmp_path):
    folder = make_loop(tmp_path)
    with pytest.raises(ConfigError, match="needs a reward model"):
        loop.prepare_train(folder, "ppo", loop.train_yaml(folder, "ppo"))
    rm_run(folder, 1, 0.70, items=20)
    with pytest.raises(ConfigError, match="below 0.85.*annotate about") as refused:
        loop.prepare_train(folder, "ppo", loop.train_yaml(folder, "ppo"))
    assert "rm-1 anyway" in str(refused.value) and not (folder / "ppo-1").exists()
    prepared = loop.prepare_train(folder, "ppo", loop.train_yaml(folder, "ppo", override=True), override=True)
    written = yaml.safe_load(prepared.text)
    assert (written["reward_model"], written["rm_gate_override"], written["dataset"], written["ppo_cliprange"]) == (
        str(folder / "rm-1"), True, "kids_prompts", 0.2)
    prompts = json.loads((folder / loop.PROMPTS).read_text())  # the project's prompts, with their columns
    assert [(p["instruction"], p["label"]) for p in prompts] == [(f"size for {90 + i} cm?", "100") for i in range(3)]
    assert "kids_prompts" in json.loads((folder / "dataset_info.json").read_text())
    assert loop.read_loop(folder)["runs"][-1]["rm_gate_override"] is True
    assert loop.train_values(folder, "ppo")["output_dir"] == str(folder / "ppo-2")
    assert "rm_gate_override" not in loop.train_values(folder, "ppo")  # an override is never carried over
    rm_run(folder, 2, 0.90, items=45)
    written = yaml.safe_load(loop.prepare_train(folder, "ppo", loop.train_yaml(folder, "ppo")).text)
    assert written["reward_model"] == str(folder / "rm-2") and "rm_gate_override" not in written


def test_the_gate_estimates_from_the_loops_own_history(tmp_path):
    folder = make_loop(tmp_path)
    rm_run(folder, 1, 0.60, items=20)
    _, verdict = loop.gate(folder)
    assert (verdict.estimated_from, verdict.more_items) == ("rule", 50)  # ceil(20 + 120 * 0.25) = 50
    rm_run(folder, 2, 0.75, items=40)
    assert loop.gate_history(folder) == [(20, 0.60), (40, 0.75)]
    run, verdict = loop.gate(folder)
    # accuracy = a + b ln(items) through both points: b = 0.15 / ln 2; 0.85 at 40 * 2^(0.1/0.15) = 63.5 items
    assert run.name == "rm-2" and (verdict.estimated_from, verdict.more_items) == ("trend", 24)
    rm_run(folder, 3, 0.86, bar=0.85, items=70)
    assert loop.gate(folder)[1].passed


def test_annotate_more_extends_the_candidates_only_when_too_few_items_are_open(tmp_path):
    from alignlab.studio.project import Project

    folder = make_loop(tmp_path)
    (folder / "steps" / "candidates" / loop.STEP_FILE).write_text(yaml.safe_dump(
        {**MODEL, "dataset": "demo_rl", "max_samples": 3, "output_dir": str(folder)}))
    assert loop.prepare_more(folder, 3) is None  # 3 items open
    project = Project(folder)
    project.act("ada", "s0", "0", "skip", {})
    project.close()
    prepared = loop.prepare_more(folder, 20)
    written = yaml.safe_load(prepared.text)
    assert (written["max_samples"], written["dataset"], prepared.command[-3:]) == (
        21, "demo_rl", ["data", "candidates", str(folder / "steps" / "candidates" / loop.STEP_FILE)])


def test_step_states_follow_the_folder(tmp_path):
    folder = loop.loop_folder(tmp_path / "runs", "empty")
    assert {s.step: s.state for s in loop.step_states(folder)} == dict.fromkeys(loop.STEPS, "todo")
    folder = make_loop(tmp_path)
    finished_job(folder / "steps" / "candidates")
    (folder / "studio_report.json").write_text(json.dumps({"counts": {"pairs": 4, "submitted": 2}}))
    finished_job(folder / "steps" / "export", exit_code=1)
    rm_run(folder, 1, 0.9)
    states = {s.step: s for s in loop.step_states(folder)}
    assert (states["candidates"].state, states["candidates"].numbers) == ("finished", {"prompts": 3, "k": 2})
    assert states["annotate"].state == "todo" and states["export"].state == "failed"
    assert states["rm"].state == "finished" and states["rm"].numbers["gate"].passed
    assert loop.latest_job(folder) == folder / "rm-1"


def test_compare_is_the_base_model_against_the_newest_policy(tmp_path):
    folder = make_loop(tmp_path)
    with pytest.raises(ConfigError, match="no finished PPO or DPO"):
        loop.prepare_compare(folder, {})
    rm_run(folder, 1, 0.9)
    for n, step in enumerate(("ppo-1", "dpo-1")):
        finished_job(folder / step, start=time.time() + 10 + n)
        (folder / step / CONFIG_FILE).write_text("stage: x\n")
        (folder / step / "all_results.json").write_text('{"train_loss": 1}')
    prepared = loop.prepare_compare(folder, {"annotated_samples": 5})
    annotated = yaml.safe_load((folder / "compare-1" / "annotated.yaml").read_text())
    assert annotated["compare_models"] == f"before={MODEL['model_name_or_path']}, after={folder / 'dpo-1'}"
    assert (annotated["eval_dataset"], annotated["max_samples"], annotated["reward_model"]) == (
        "kids_prompts", 5, str(folder / "rm-1"))
    assert not (folder / "compare-1" / "held_out.yaml").exists() and prepared.command[0] == "/bin/sh"
    loop.prepare_compare(folder, {"held_out": "demo_prompts", "held_out_dir": "data"})
    held_out = yaml.safe_load((folder / "compare-2" / "held_out.yaml").read_text())
    assert (held_out["eval_dataset"], held_out["dataset_dir"], held_out["max_samples"]) == ("demo_prompts", "data", 30)
