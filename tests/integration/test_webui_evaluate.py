"""The Evaluate and Export tabs' jobs with real `alignlab` subprocesses on the tiny model: the YAML a tab
writes is what the CLI runs, and the tables the tab shows hold the numbers the job wrote; one job at a
time, whichever tab started it; a failed job shows the line that says why."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from alignlab.webui import eval_jobs, runs
from alignlab.webui.evaluate_tab import result_tables
from alignlab.webui.export_tab import carried_rows
from alignlab.webui.i18n import translate
from alignlab.webui.jobs import JobRefused, JobRunner
from alignlab.webui.page import model_keys
from tests.conftest import ROOT, read_jsonl

pytestmark = pytest.mark.timeout(240)
PROMPTS = {"dataset_dir": str(ROOT / "data"), "eval_dataset": ["demo_prompts"], "max_samples": 6,
           "max_new_tokens": 12, "do_sample": False}


def top_bar(model) -> dict:
    return model_keys(str(model), "lora", [], "qwen3_nothink", False)


def finished(folder, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if eval_jobs.job_status(folder) not in (None, "running"):
            return eval_jobs.job_view(folder)
        time.sleep(0.2)
    raise AssertionError(f"{folder} did not end:\n{runs.log_tail(folder)}")


def test_predict_job_writes_the_results_the_tab_shows(base_model_dir, tmp_path):
    root = tmp_path / "saves"
    settings = {**PROMPTS, "eval_metrics": "alignlab.eval.size_accuracy:size_metrics"}
    job, text = eval_jobs.start(JobRunner(root), root, "predict", top_bar(base_model_dir), settings)
    folder = Path(job.run_dir)
    assert folder.name.startswith("eval-predict-") and (folder / eval_jobs.TASK_FILE).read_text() == text
    view = finished(folder)
    assert view.status == "finished", view.log
    assert view.progress == (6, 6)  # the last "predicting: N/M" line of the log
    assert "do_predict: true" in text and "predict_with_generate: true" in text and "eval_dataset: demo_prompts" in text

    written = json.loads((folder / "predict_results.json").read_text())
    shown = result_tables("en", folder, "predict")
    label, metrics, _ = shown["first"]
    assert label == "eval_table_metrics" and list(metrics.columns) == ["metric", "value"]
    table = dict(zip(metrics["metric"], metrics["value"]))
    assert float(table["BLEU-4"]) == pytest.approx(written["predict_bleu-4"], abs=1e-4)
    assert float(table["ROUGE-L"]) == pytest.approx(written["predict_rouge-l"], abs=1e-4)
    assert float(table["size_accuracy"]) == pytest.approx(written["predict_size_accuracy"], abs=1e-4)
    assert table["samples"] == "6"
    numbers = {k for k, v in written.items() if isinstance(v, (int, float))}
    assert len(table) == len(numbers)  # every number, and no nested JSON as a cell
    rows = read_jsonl(folder / "generated_predictions.jsonl")
    _, predictions, _ = shown["second"]
    assert list(predictions["label"]) == [r["label"] for r in rows]
    assert list(predictions["predict"]) == [r["predict"] for r in rows]
    source = json.loads((ROOT / "data" / "demo_prompts.json").read_text(encoding="utf-8"))
    assert predictions["prompt"][0] == source[0]["instruction"]  # the template's markup taken off
    _, confusion, _ = shown["confusion"]
    matrix = written["predict_size_confusion_matrix"]
    assert list(confusion.columns) == ["label", *matrix["columns"]]
    assert confusion.iloc[0, 1:].astype(int).tolist() == matrix["matrix"][0]
    assert runs.find_runs(root) == []  # an evaluation is not a training run: the Runs tab does not list it


def test_export_job_carries_the_template_and_a_second_job_is_refused(base_model_dir, tmp_path):
    from transformers import AutoTokenizer

    root = tmp_path / "saves"
    runner = JobRunner(root)
    job, text = eval_jobs.start(runner, root, "export", top_bar(base_model_dir), {"export_size": 1})
    folder = Path(job.run_dir)
    with pytest.raises(JobRefused, match=f"{folder.name} is still running") as refused:  # any tab, one device
        eval_jobs.start(runner, root, "predict", top_bar(base_model_dir), PROMPTS)
    assert folder.name in translate("en", "refused", reason=refused.value)
    assert [p.name for p in root.iterdir()] == [folder.name]  # the refused job left no folder
    with pytest.raises(JobRefused, match="still running"):  # the Train tab's start is refused the same way
        runner.start(root / "sft-1", [sys.executable, "-c", "pass"])

    view = finished(folder)
    assert view.status == "finished", view.log
    export_dir = eval_jobs.export_dir_of(folder)
    assert export_dir == folder / "model" and f"export_dir: {export_dir}" in text
    files = dict(eval_jobs.export_files(export_dir))
    assert {"chat_template.jinja", "config.json", "model.safetensors", "tokenizer.json", "Modelfile",
            "run_config.yaml"} <= set(files)
    size = (export_dir / "model.safetensors").stat().st_size
    assert files["model.safetensors"] == f"{size / 1024 ** 2:.1f} MB"
    carried = dict(carried_rows("en", export_dir))
    assert carried["chat_template.jinja"] == "written" and carried["template"] == "qwen3_nothink"
    assert carried["exported_from"] == str(base_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)  # what it carries is the training template
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_failed_job_shows_the_line_that_says_why(base_model_dir, tmp_path):
    root = tmp_path / "saves"
    settings = {**PROMPTS, "eval_dataset": ["no_such_dataset"]}
    job, _ = eval_jobs.start(JobRunner(root), root, "predict", top_bar(base_model_dir), settings)
    view = finished(Path(job.run_dir))
    assert view.status == "failed" and view.exit_code == 1
    assert view.failure.startswith("alignlab train: ") and "no_such_dataset" in view.failure, view.log
    panel = eval_jobs.failure_html(view, "zh")
    assert "任务失败（退出码 1）" in panel and "no_such_dataset" in panel
    assert "failed" in eval_jobs.status_text(view, "en")


def test_benchmark_and_compare_jobs_give_their_tables_and_report(base_model_dir, tmp_path):
    root = tmp_path / "saves"
    runner = JobRunner(root)
    bench = {"task_dir": str(ROOT / "data" / "eval"), "task": "size_advisor_test", "n_shot": 0, "lang": "en"}
    job, _ = eval_jobs.start(runner, root, "benchmark", top_bar(base_model_dir), bench)
    view = finished(Path(job.run_dir))
    assert view.status == "finished", view.log
    results = json.loads((view.folder / "results.json").read_text())
    shown = result_tables("zh", view.folder, "benchmark")
    _, accuracy, _ = shown["first"]
    assert list(accuracy.columns) == ["科目", "准确率 (%)"]
    by_subject = dict(zip(accuracy["科目"], accuracy["准确率 (%)"]))
    assert by_subject["size_en"] == f"{results['subjects']['size_en']:.2f}"
    assert by_subject["平均"] == f"{results['average']:.2f}" and by_subject["题目数"] == "120"
    _, letters, _ = shown["second"]
    assert letters.iloc[1, 1:].astype(int).sum() == 120  # the picks of every question

    others = [str(base_model_dir)]  # the same model twice: the names still differ
    compare = {**PROMPTS, "max_samples": 3, "max_new_tokens": 6,
               "compare_models": eval_jobs.compare_models(top_bar(base_model_dir), others)}
    job, text = eval_jobs.start(runner, root, "compare", top_bar(base_model_dir), compare)
    view = finished(Path(job.run_dir))
    assert view.status == "finished", view.log
    name = base_model_dir.name
    assert f"compare_models: {name}={base_model_dir}, {name}-2={base_model_dir}" in text
    shown = result_tables("en", view.folder, "compare")
    _, metrics, _ = shown["first"]
    assert list(metrics.columns) == ["metric", name, f"{name}-2"]
    report = json.loads((view.folder / "results.json").read_text())
    bleu = metrics.set_index("metric").loc["BLEU-4"]
    assert float(bleu[name]) == pytest.approx(report["metrics"][name]["bleu-4"], abs=1e-4)
    assert shown["report"] == view.folder / "report.html"
