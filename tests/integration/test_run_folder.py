"""Runs never mix: a finished run re-run trains nothing; another stage, dataset or model pointed at a
folder with checkpoints is refused, naming the differing keys; overwrite_output_dir starts afresh."""

from __future__ import annotations

from tests.conftest import read_jsonl
from tests.integration.test_train_sft import cli, common


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_finished_run_rerun_trains_nothing_and_other_runs_are_refused(base_model_dir, tmp_path):
    out = tmp_path / "run"
    args = {"finetuning_type": "lora", "lora_rank": 4, "max_steps": 4, "save_steps": 2, "learning_rate": 1e-3}
    cli(*common(base_model_dir, out, **args))
    before = snapshot(out)
    again = cli(*common(base_model_dir, out, **args))
    assert "already holds this run, finished" in again.stderr
    assert snapshot(out) == before  # no extra step, nothing rewritten

    for change, named in (({"stage": "dpo", "dataset": "demo_pref"}, "stage: 'sft' there, 'dpo' now"),
                          ({"dataset": "demo_pt", "stage": "pt"}, "dataset: 'demo_sft' there, 'demo_pt' now"),
                          ({"lora_rank": 8}, "lora_rank: 4 there, 8 now")):
        run = cli(*common(base_model_dir, out, **{**args, **change}), check=False)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert named in run.stderr and "overwrite_output_dir: true" in run.stderr
        assert snapshot(out) == before

    # more steps continue the same run from its last checkpoint
    longer = cli(*common(base_model_dir, out, **{**args, "max_steps": 6}))
    assert "Resuming from" in longer.stderr
    steps = [e["current_steps"] for e in read_jsonl(out / "trainer_log.jsonl") if "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6]

    fresh = cli(*common(base_model_dir, out, **{**args, "stage": "dpo", "dataset": "demo_pref",
                                                "overwrite_output_dir": "true"}))
    assert "Resuming" not in fresh.stderr
    assert [e["current_steps"] for e in read_jsonl(out / "trainer_log.jsonl") if "loss" in e] == [1, 2, 3, 4]
