"""The web UI's job runner with real subprocesses: Stop saves a checkpoint and exits at the end of a
step, Start resumes from it, one job at a time, a restarted UI finds the job, big output never blocks."""

from __future__ import annotations

import sys
import time

import pytest
import yaml

from alignlab.webui.jobs import CONFIG_FILE, LOG_FILE, JobRefused, JobRunner, read_job
from alignlab.webui.runs import checkpoints, run_status
from tests.conftest import ROOT, read_jsonl

pytestmark = pytest.mark.timeout(300)


def wait_for(condition, timeout: float = 240, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def write_config(run_dir, base, **extra):
    config = {"model_name_or_path": str(base), "stage": "sft", "do_train": True, "dataset": "demo_sft",
              "dataset_dir": str(ROOT / "data"), "template": "qwen3_nothink", "cutoff_len": 64, "max_samples": 64,
              "finetuning_type": "lora", "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2,
              "report_to": "none", "disable_gradient_checkpointing": True, "output_dir": str(run_dir), **extra}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config))


def finished_job(run_dir):
    return wait_for(lambda: (job := read_job(run_dir)) and job.exit_code is not None and job, what="the job to end")


def test_stop_saves_a_checkpoint_at_the_end_of_the_step_and_start_resumes_from_it(base_model_dir, tmp_path):
    run_dir = tmp_path / "saves" / "sft"
    write_config(run_dir, base_model_dir, max_steps=3000)
    runner = JobRunner(tmp_path / "saves")
    runner.start(run_dir)
    wait_for(lambda: (rows := read_jsonl(run_dir / "trainer_log.jsonl") if (run_dir / "trainer_log.jsonl").is_file()
                      else []) and rows[-1]["current_steps"] >= 3, what="step 3")
    assert runner.stop() is not None
    job = finished_job(run_dir)
    log = (run_dir / LOG_FILE).read_text()
    assert job.exit_code == 0 and job.stop_requested, log[-2000:]
    stopped_at = read_jsonl(run_dir / "trainer_log.jsonl")[-1]["current_steps"]
    assert 3 <= stopped_at < 3000 and checkpoints(run_dir)[-1] == stopped_at  # saved at the step it stopped on
    assert not (run_dir / "all_results.json").exists() and run_status(run_dir) == "stopped"
    assert "Traceback" not in log

    write_config(run_dir, base_model_dir, max_steps=stopped_at + 2)  # a longer run may continue a shorter one
    runner.start(run_dir)
    job = finished_job(run_dir)
    log = (run_dir / LOG_FILE).read_text()
    assert job.exit_code == 0, log[-2000:]
    assert f"Resuming from {run_dir / f'checkpoint-{stopped_at}'}" in log
    steps = [r["current_steps"] for r in read_jsonl(run_dir / "trainer_log.jsonl") if "loss" in r]
    assert steps == list(range(1, stopped_at + 3))
    assert run_status(run_dir) == "finished"


def test_one_job_at_a_time_found_again_by_a_new_runner_and_stopped(tmp_path):
    root = tmp_path / "saves"
    sleeper = [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(120)"]
    first = JobRunner(root).start(root / "a", sleeper)
    restarted = JobRunner(root)  # a UI started again finds the job from its job file
    assert restarted.active().pid == first.pid
    with pytest.raises(JobRefused, match="still running"):
        restarted.start(root / "b", sleeper)
    restarted.stop()
    job = finished_job(root / "a")
    assert job.stop_requested and job.exit_code != 0 and restarted.active() is None
    assert run_status(root / "a") == "stopped"


def test_tens_of_megabytes_of_output_never_block_the_job(tmp_path):
    chatty = [sys.executable, "-c", "import sys\nfor _ in range(30 * 1024): sys.stdout.write('x' * 1023 + '\\n')"]
    JobRunner(tmp_path).start(tmp_path / "chatty", chatty)
    job = finished_job(tmp_path / "chatty")
    assert job.exit_code == 0
    assert (tmp_path / "chatty" / LOG_FILE).stat().st_size >= 30 * 1024 * 1024
