"""The web UI's plain logic without a browser: run status and table from real run folders, curve
series from trainer_log.jsonl, the form from the key registry, the YAML preview, locales, launch safety."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys

import pytest
import yaml

from alignlab.config import load_config
from alignlab.config.parser import key_infos
from alignlab.config.stages import STAGES
from alignlab.train.plots import smooth
from alignlab.webui import forms, runs
from alignlab.webui.i18n import LANGUAGES, strings
from alignlab.webui.jobs import JOB_FILE, LOG_FILE
from tests.conftest import ROOT

ROWS = [{"current_steps": 1, "total_steps": 3, "loss": 2.0, "lr": 1e-3, "epoch": 0.1, "percentage": 33.33,
         "elapsed_time": "0:00:01", "remaining_time": "0:00:02"},
        {"current_steps": 2, "total_steps": 3, "loss": 1.5, "lr": 5e-4, "epoch": 0.2, "percentage": 66.67,
         "elapsed_time": "0:00:02", "remaining_time": "0:00:01", "eval_loss": 1.7},
        {"current_steps": 3, "total_steps": 3, "loss": 1.2, "lr": 1e-4, "epoch": 0.3, "percentage": 100.0,
         "elapsed_time": "0:00:03", "remaining_time": "0:00:00"},
        {"current_steps": 3, "total_steps": 3, "train_runtime": 3.1, "train_loss": 1.6}]


def make_run(root, name, rows=(), results=None, job=None, checkpoint=None, log=""):
    run = root / name
    run.mkdir(parents=True)
    (run / "run_config.yaml").write_text(yaml.safe_dump({"stage": "sft", "model_name_or_path": "/m/tiny",
                                                         "dataset": "demo_sft"}))
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if results is not None:
        (run / "all_results.json").write_text(json.dumps(results))
    if job is not None:
        (run / JOB_FILE).write_text(json.dumps({"run_dir": str(run), "start_time": 1e9, "command": ["x"], **job}))
    if checkpoint:
        (run / f"checkpoint-{checkpoint}").mkdir()
        (run / f"checkpoint-{checkpoint}" / "trainer_state.json").write_text("{}")
    (run / LOG_FILE).write_text(log)
    return run


def test_status_and_table_from_run_folders(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    make_run(tmp_path, "done", ROWS, {"train_runtime": 3.1}, {"pid": int(dead.stdout), "exit_code": 0,
                                                               "end_time": 1e9 + 65})
    make_run(tmp_path, "nested/cli_done", ROWS, {"train_runtime": 3.1})
    make_run(tmp_path, "broken", ROWS[:1], job={"pid": int(dead.stdout), "exit_code": 1, "end_time": 1e9 + 5},
             log="Traceback (most recent call last):\n  File x\nValueError: bad row 3\n")
    make_run(tmp_path, "halted", ROWS[:2], job={"pid": int(dead.stdout), "exit_code": 0, "stop_requested": True},
             checkpoint=2)
    make_run(tmp_path, "live", ROWS[:1], job={"pid": os.getpid(), "exit_code": None})
    statuses = {r[0]: r[1] for r in runs.run_table(tmp_path)}
    assert statuses == {"done": "finished", "nested/cli_done": "finished", "broken": "failed", "halted": "stopped",
                        "live": "running"}
    [done] = [r for r in runs.run_table(tmp_path) if r[0] == "done"]
    assert dict(zip(runs.TABLE_COLUMNS, done)) | {"started": ""} == {
        "run": "done", "status": "finished", "stage": "sft", "model": "tiny", "dataset": "demo_sft", "started": "",
        "duration": "0:01:05", "steps": "3/3", "final metrics": "loss 1.2"}
    assert runs.live_view(tmp_path / "broken").failure == "ValueError: bad row 3"
    with pytest.raises(ValueError, match="running"):
        runs.delete_run(tmp_path, "live")
    with pytest.raises(ValueError, match="not a run folder"):
        runs.delete_run(tmp_path, "..")
    runs.delete_run(tmp_path, "broken")
    assert not (tmp_path / "broken").exists()


def test_curve_series_equal_the_logged_rows():
    assert runs.metric_names(ROWS) == ["loss", "lr", "eval_loss"]
    points = runs.curve(ROWS, "loss")
    raw = [(p["step"], p["value"]) for p in points if p["series"] == "raw"]
    assert raw == [(r["current_steps"], r["loss"]) for r in ROWS[:3]]
    assert [p["value"] for p in points if p["series"] == "EMA"] == smooth([2.0, 1.5, 1.2])
    assert [(p["step"], p["value"]) for p in runs.curve(ROWS, "eval_loss")] == [(2, 1.7)]
    p = runs.progress(ROWS)
    assert (p.step, p.total, p.remaining) == (3, 3, "0:00:00")


def test_form_holds_every_key_a_stage_reads_with_the_cli_defaults():
    fields = [f for group in forms.form_fields().values() for f in group]
    names = {f.info.name for f in fields}
    for stage in STAGES:
        read = {k for k, i in key_infos().items() if stage in i.stages and i.group in forms.stage_groups(stage)}
        assert read - set(forms.TOP_KEYS) <= names, stage
        assert forms.changed_values(fields, [f.value for f in fields], stage) == {}
    assert [f.info.name for f in forms.form_fields()[forms.PROMINENT]] == list(forms.PROMINENT_TRAIN_KEYS)
    assert forms.datasets_for("dpo", str(ROOT / "data")) == ["demo_pref", "demo_pref_sharegpt"]
    assert forms.datasets_for("kto", str(ROOT / "data")) == ["demo_kto"]


def test_yaml_preview_round_trips_through_load_config(tmp_path):
    fields = [f for group in forms.form_fields().values() for f in group]
    values = [f.value for f in fields]
    by_name = {f.info.name: i for i, f in enumerate(fields)}
    values[by_name["max_steps"]] = 5.0
    values[by_name["learning_rate"]] = 1e-3
    values[by_name["max_samples"]] = "64"
    values[by_name["pref_beta"]] = 0.3  # a dpo key: ignored for sft
    top = {"stage": "sft", "model_name_or_path": "m", "finetuning_type": "lora", "template": "qwen3_nothink",
           "dataset_dir": "data", "dataset": ["demo_sft"], "output_dir": str(tmp_path / "run")}
    cfg = forms.build_config(top, forms.changed_values(fields, values, "sft"))
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    again = load_config([str(tmp_path / "c.yaml")], with_training=True)
    assert again.plain() == cfg.plain()
    assert again.training.max_steps == 5 and again.data.max_samples == 64 and "pref_beta" not in cfg.plain()


def test_every_string_exists_in_every_language_with_the_same_placeholders():
    fields = lambda text: {f for _, f, _, _ in string.Formatter().parse(text) if f}
    english = strings("en")
    for lang in LANGUAGES:
        assert set(strings(lang)) == set(english), lang
        assert all(strings(lang)[k].strip() and fields(strings(lang)[k]) == fields(english[k]) for k in english)
    assert {f"status_{s}" for s in runs.STATUSES} | {f"col_{c.split()[0]}" for c in runs.TABLE_COLUMNS} <= set(english)


@pytest.mark.parametrize("argv, env", [(["--host", "0.0.0.0"], {}), ([], {"GRADIO_SERVER_NAME": "0.0.0.0"})])
def test_a_non_loopback_host_without_auth_exits_1_without_importing_gradio(argv, env):
    code = ("import sys; from alignlab.cli import main; code = main(['webui', *sys.argv[1:]]); "
            "assert 'gradio' not in sys.modules; sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "ALIGNLAB_WEBUI_AUTH"} | env)
    assert run.returncode == 1 and "--auth" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_a_loaded_config_fills_the_form_so_that_it_writes_the_same_config_again(tmp_path):
    """Save/Load config and Open in Train: widget values from a YAML give back that YAML's keys."""
    fields = [f for group in forms.form_fields().values() for f in group]
    written = {"stage": "dpo", "model_name_or_path": "m", "finetuning_type": "lora", "template": "qwen3_nothink",
               "dataset_dir": "data", "dataset": "demo_pref", "output_dir": str(tmp_path / "run"), "do_train": True,
               "pref_beta": 0.25, "pref_loss": "ipo", "max_steps": 7, "lora_target": "q_proj,v_proj",
               "max_samples": 32}  # keys at their default are left out of what the page writes
    values = forms.widget_values(fields, written)
    changed = forms.changed_values(fields, values, "dpo")
    assert {k: v for k, v in changed.items() if k != "max_samples"} == {
        "pref_beta": 0.25, "pref_loss": "ipo", "max_steps": 7, "lora_target": "q_proj,v_proj"}
    assert str(changed["max_samples"]) == "32"
    top = {k: written[k] for k in forms.TOP_KEYS if k in written}
    again = forms.build_config(top, changed)
    assert again.plain() == load_config([], with_training=True, defaults=written).plain()
