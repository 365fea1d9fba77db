"""The Evaluate and Export tabs' plain logic without a browser or a model: job folders and their kinds,
status from the job file, progress from the log, the tables built from what a job wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alignlab.config import ConfigError
from alignlab.webui import eval_jobs
from alignlab.webui.jobs import JOB_FILE, LOG_FILE

DEAD_PID = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def make_job(folder, start_time=1e9, log="", **job):
    folder.mkdir(parents=True)
    record = {"run_dir": str(folder), "pid": DEAD_PID, "start_time": start_time, "command": ["x"], **job}
    (folder / JOB_FILE).write_text(json.dumps(record))
    (folder / LOG_FILE).write_text(log)
    return folder


def test_job_folders_are_named_by_kind_and_the_latest_of_a_tab_is_found(tmp_path):
    folder = eval_jobs.job_folder(tmp_path, "predict")
    assert eval_jobs.kind_of(folder) == "predict" and not folder.exists()
    folder.mkdir()
    assert eval_jobs.job_folder(tmp_path, "predict").name in (f"{folder.name}-2",  # same second: a new name
                                                              eval_jobs.job_folder(tmp_path, "predict").name)
    assert [eval_jobs.kind_of(n) for n in ("eval-compare-20250101-101010", "export-20250101-101010-3",
                                           "sft-20250101-101010", "export-old")] == ["compare", "export", None, None]
    make_job(tmp_path / "eval-benchmark-20250101-101010", start_time=3e9, exit_code=0)
    make_job(tmp_path / "eval-predict-20250101-101011", start_time=2e9, exit_code=0)
    make_job(tmp_path / "export-20250101-101012", start_time=4e9, exit_code=0)
    make_job(tmp_path / "sft-20250101-101013", start_time=5e9, exit_code=0)  # a training run: another tab's
    assert eval_jobs.latest_job(tmp_path, eval_jobs.EVALUATE_KINDS).name == "eval-benchmark-20250101-101010"
    assert eval_jobs.latest_job(tmp_path, ("export",)).name == "export-20250101-101012"
    assert eval_jobs.latest_job(tmp_path / "missing", ("export",)) is None


def test_status_comes_from_the_job_file_not_from_training_results(tmp_path):
    assert eval_jobs.job_status(tmp_path) is None
    cases = {"ok": {"exit_code": 0}, "bad": {"exit_code": 1}, "halted": {"exit_code": -15, "stop_requested": True},
             "live": {"exit_code": None, "pid": os.getpid()}, "vanished": {"exit_code": None}}
    for name, job in cases.items():
        make_job(tmp_path / name, **job)
    assert {n: eval_jobs.job_status(tmp_path / n) for n in cases} == {
        "ok": "finished", "bad": "failed", "halted": "stopped", "live": "running", "vanished": "failed"}


@pytest.mark.parametrize("log, expected", [
    ("loading\r\npredicting: 1/8, 0s elapsed, ETA 1s\npredicting: 5/8, 2s elapsed, ETA 1s", (5, 8)),
    ("size_en: 1/2 subjects, 3s elapsed, ETA 3s", (1, 2)),
    ("compare: base answered 60 prompts (1/3 models, 12s)\nINFO something 9/10 else", (1, 3)),
    ("Exported to saves/x", None),
])
def test_progress_is_the_last_progress_line_the_job_printed(log, expected):
    assert eval_jobs.job_progress(log) == expected


def test_a_failed_job_view_names_the_error_line(tmp_path):
    log = "[10:00] INFO loading\n\nalignlab export: `export_dir` saves/x is not empty and holds no export\n"
    folder = make_job(tmp_path / "export-20250101-101010", log=log, exit_code=1, end_time=1e9 + 75)
    view = eval_jobs.job_view(folder)
    assert view.failure == "alignlab export: `export_dir` saves/x is not empty and holds no export"
    assert eval_jobs.status_text(view, "en") == "**export-20250101-101010** · export · failed · 0:01:15"
    assert "<b>The job failed (exit status 1):</b>" in eval_jobs.failure_html(view, "en")
    assert "&lt;" not in eval_jobs.failure_html(view, "en") and "`export_dir`" in eval_jobs.failure_html(view, "en")
    make_job(tmp_path / "ok", exit_code=0)
    assert eval_jobs.failure_html(eval_jobs.job_view(tmp_path / "ok"), "en") == ""


@pytest.mark.parametrize("prompt, shown", [
    ("<|im_start|>user\nHow tall?<|im_end|>\n<|im_start|>assistant\n", "How tall?"),
    ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nA\nB<|im_end|>\n<|im_start|>assistant\n",
     "Be brief.\nA\nB"),
    ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant"
     "<|end_header_id|>\n\n", "Hi"),
])
def test_prompts_are_shown_without_the_template_markup(prompt, shown):
    assert eval_jobs.readable_prompt(prompt) == shown


def test_compare_models_puts_the_top_bar_model_first_with_distinct_names():
    top = {"model_name_or_path": "/m/base", "adapter_name_or_path": "saves/sft-1,saves/sft-2"}
    assert eval_jobs.compare_models(top, ["saves/sft-2", "/other/sft-2", "saves/dpo run"]) == (
        "sft-2=/m/base+saves/sft-1+saves/sft-2, sft-2-2=saves/sft-2, sft-2-3=/other/sft-2, dpo_run=saves/dpo run")
    with pytest.raises(ConfigError, match="','"):
        eval_jobs.compare_models({"model_name_or_path": "/m/a,b"}, ["x"])


def test_a_bad_setting_is_refused_before_any_folder_is_written(tmp_path):
    with pytest.raises(ConfigError, match="max_samples"):
        eval_jobs.task_config("predict", {"model_name_or_path": "m"}, {"max_samples": "many"}, tmp_path / "j")
    cfg = eval_jobs.task_config("export", {"model_name_or_path": "m"}, {"export_dir": ""}, tmp_path / "j")
    assert cfg.model.export_dir == str(tmp_path / "j" / "model")  # empty: the job folder's own
    assert not (tmp_path / "j").exists()


def test_export_tables_list_files_with_sizes_and_what_is_carried(tmp_path):
    out = tmp_path / "model"
    (out / "sub").mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"\0" * 3 * 1024 * 1024)
    (out / "sub" / "a.txt").write_text("x" * 10)
    (out / "run_config.yaml").write_text("template: qwen3\nexported_from: /m\nadapters:\n- /a\n- /b\nstage: null\n")
    rows = eval_jobs.export_files(out)
    assert rows == [["model.safetensors", "3.0 MB"], ["run_config.yaml", f"{(out / 'run_config.yaml').stat().st_size} B"],
                    ["sub/a.txt", "10 B"]]
    assert eval_jobs.export_carried(out) == [["chat_template.jinja", "missing"], ["template", "qwen3"],
                                             ["exported_from", "/m"], ["adapters", "/a, /b"]]
    assert eval_jobs.export_files(tmp_path / "absent") == [] and eval_jobs.export_carried(None) == []


def test_benchmark_tables_and_translated_headers(tmp_path):
    results = {"average": 37.5, "questions": 8, "subjects": {"size_en": 50.0, "size_zh": 25.0},
               "categories": {"English": 50.0}, "answer_letters": {"A": 2, "B": 2, "C": 2, "D": 2},
               "predicted_letters": {"A": 8, "B": 0, "C": 0, "D": 0}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    rows = eval_jobs.benchmark_accuracy(tmp_path)
    assert rows == [["size_en", "50.00"], ["size_zh", "25.00"], ["English", "50.00"], ["average", "37.50"],
                    ["questions", "8"]]
    frame = eval_jobs.table_frame("zh", ["letters", "A", "B", "C", "D"], eval_jobs.benchmark_letters(tmp_path),
                                  named_rows=True)
    assert list(frame.columns) == ["字母", "A", "B", "C", "D"]
    assert frame.values.tolist() == [["正确答案", "2", "2", "2", "2"], ["模型选择", "8", "0", "0", "0"]]
    assert eval_jobs.benchmark_tasks(tmp_path) == []
