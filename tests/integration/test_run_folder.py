"""Runs never mix: a finished run re-run trains nothing; another stage, dataset or model pointed at a
folder with checkpoints is refused, naming the differing keys; overwrite_output_dir starts afresh."""

from __future__ import annotations

import logging

from alignlab.cli import main
from tests.conftest import read_jsonl
from tests.integration.test_train_sft import common


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train(base, out, capsys, caplog, **args):
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(["train", *common(base, out, **args)])
    return code, capsys.readouterr().err + caplog.text


def test_finished_run_rerun_trains_nothing_and_other_runs_are_refused(base_model_dir, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    args = {"finetuning_type": "lora", "lora_rank": 4, "max_steps": 4, "save_steps": 2, "learning_rate": 1e-3}
    assert train(base_model_dir, out, capsys, caplog, **args)[0] == 0
    before = snapshot(out)
    code, err = train(base_model_dir, out, capsys, caplog, **args)
    assert code == 0 and "already holds this run, finished" in err
    assert snapshot(out) == before  # no extra step, nothing rewritten

    for change, named in (({"stage": "dpo", "dataset": "demo_pref"}, "stage: 'sft' there, 'dpo' now"),
                          ({"dataset": "demo_pt", "stage": "pt"}, "dataset: 'demo_sft' there, 'demo_pt' now"),
                          ({"lora_rank": 8}, "lora_rank: 4 there, 8 now")):
        code, err = train(base_model_dir, out, capsys, caplog, **{**args, **change})
        assert code == 1 and "Traceback" not in err, err[-2000:]
        assert named in err and "overwrite_output_dir: true" in err
        assert snapshot(out) == before

    # more steps continue the same run from its last checkpoint
    code, err = train(base_model_dir, out, capsys, caplog, **{**args, "max_steps": 6})
    assert code == 0 and "Resuming from" in err
    steps = [e["current_steps"] for e in read_jsonl(out / "trainer_log.jsonl") if "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6]

    code, err = train(base_model_dir, out, capsys, caplog, **{**args, "stage": "dpo", "dataset": "demo_pref",
                                                               "overwrite_output_dir": "true"})
    assert code == 0 and "Resuming" not in err
    assert [e["current_steps"] for e in read_jsonl(out / "trainer_log.jsonl") if "loss" in e] == [1, 2, 3, 4]
