"""The Evaluate tab: predict (answers, BLEU/ROUGE and `eval_metrics`), a multiple-choice benchmark, or
a comparison of models (report.html shown in the page), each an `alignlab` job on the top bar's model;
the latest such job's status, progress, log tail, failure line and results as tables."""

from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from ..config import ConfigError
from . import eval_jobs, forms
from .i18n import translate
from .page import Page, model_keys
from .train_tab import progress_bar

REFRESH_S = 2.0
KINDS = eval_jobs.EVALUATE_KINDS
METRIC_CHOICES = ["", "classification", "alignlab.eval.size_accuracy:size_metrics"]
CONFUSION_MAX_CLASSES = 12  # a wider matrix (free-text labels) says nothing a person can read


def result_tables(code: str, folder: Path, kind: str | None) -> dict:
    """What a finished or running job shows: {slot: (label key, frame, column widths) or None, "report":
    path or None}. Long-text tables get fixed widths: Gradio sizes columns by their longest cell."""
    frame = eval_jobs.table_frame
    shown: dict = {"first": None, "second": None, "confusion": None, "report": None}
    if kind == "predict":
        if metrics := eval_jobs.predict_metrics(folder):
            shown["first"] = ("eval_table_metrics", frame(code, ["metric", "value"], metrics), None)
        if predictions := eval_jobs.predictions(folder):
            shown["second"] = ("eval_table_predictions", frame(code, ["prompt", "label", "predict"], predictions),
                                ["34%", "33%", "33%"])
        confusion = eval_jobs.confusion_table(folder)
        if confusion and len(confusion[0]) <= CONFUSION_MAX_CLASSES + 2:
            shown["confusion"] = ("eval_table_confusion", frame(code, *confusion), None)
    elif kind == "benchmark":
        if accuracy := eval_jobs.benchmark_accuracy(folder):
            shown["first"] = ("eval_table_accuracy", frame(code, ["subject", "accuracy"], accuracy, named_rows=True),
                              None)
        if letters := eval_jobs.benchmark_letters(folder):
            shown["second"] = ("eval_table_letters", frame(code, ["letters", "A", "B", "C", "D"], letters,
                                                           named_rows=True), ["20%"] * 5)
    elif kind == "compare":
        columns, rows = eval_jobs.compare_metrics(folder)
        if rows:
            shown["first"] = ("eval_table_compare", frame(code, columns, rows), None)
        shown["report"] = eval_jobs.compare_report(folder)
    return shown


def report_frame(path: Path) -> str:
    """report.html inside the page: an iframe of the self-contained report (its own styles stay its own)."""
    return (f'<iframe title="report.html" srcdoc="{html.escape(path.read_text(encoding="utf-8"), quote=True)}" '
            'style="width:100%;height:640px;border:1px solid #d0d0d7;border-radius:6px;background:#fff"></iframe>')


def build(page: Page) -> None:
    root, top, said = page.root, page.top, page.said
    with said(gr.Tab(translate("en", "tab_evaluate"), id="evaluate"), "tab_evaluate") as tab:
        said(gr.Markdown(translate("en", "eval_intro")), "eval_intro", "value")
        kind = said(gr.Radio([(translate("en", f"eval_kind_{k}"), k) for k in KINDS], value="predict", label="",
                             elem_id="eval_kind"), "eval_kind")
        with gr.Row(equal_height=True) as data_row:
            data_dir = said(gr.Textbox(page.dataset_dir, label="", max_lines=1, scale=1, elem_id="eval_dataset_dir"),
                            "eval_dataset_dir")
            dataset = said(gr.Dropdown(forms.datasets_for("sft", page.dataset_dir), multiselect=True, label="", scale=2,
                                       elem_id="eval_dataset"), "eval_dataset")
            max_samples = said(gr.Number(20, precision=0, minimum=1, label="", scale=1, elem_id="eval_max_samples"),
                               "eval_max_samples")
            max_new_tokens = said(gr.Number(64, precision=0, minimum=1, label="", scale=1,
                                            elem_id="eval_max_new_tokens"), "eval_max_new_tokens")
            metrics = said(gr.Dropdown(METRIC_CHOICES, value="", allow_custom_value=True, label="", scale=2,
                                       elem_id="eval_extra_metrics"), "eval_extra_metrics")
            do_sample = said(gr.Checkbox(False, label="", scale=0, min_width=160, elem_id="eval_do_sample"),
                             "eval_do_sample")
        with gr.Row(visible=False) as compare_row:
            compare_with = said(gr.Dropdown(list(dict.fromkeys([*page.model_choices(), *page.adapter_choices()])),
                                            multiselect=True, allow_custom_value=True, label="",
                                            elem_id="eval_compare_with"), "eval_compare_with")
        task_dir_default = str(Path(page.dataset_dir) / "eval")
        tasks = eval_jobs.benchmark_tasks(task_dir_default)
        with gr.Row(visible=False, equal_height=True) as bench_row:
            task_dir = said(gr.Textbox(task_dir_default, label="", max_lines=1, scale=2, elem_id="eval_task_dir"),
                            "eval_task_dir")
            task = said(gr.Dropdown(tasks, value=tasks[0] if tasks else None, allow_custom_value=True, label="",
                                    scale=2, elem_id="eval_task"), "eval_task")
            n_shot = said(gr.Number(3, precision=0, minimum=0, label="", scale=1, elem_id="eval_n_shot"), "eval_n_shot")
            lang = said(gr.Radio(["en", "zh"], value="en", label="", scale=1, elem_id="eval_lang"), "eval_lang")
        with gr.Row():
            start = said(gr.Button("", variant="primary", scale=0, min_width=200, elem_id="eval_start"), "start",
                         "value")
            stop = said(gr.Button("", variant="stop", scale=0, min_width=200, elem_id="eval_stop"), "stop", "value")
        message = gr.Markdown(elem_id="eval_message")
        status = gr.Markdown(translate("en", "eval_idle"), elem_id="eval_progress")
        bar = gr.HTML(progress_bar(0), elem_id="eval_bar")
        failure = gr.HTML(visible=False, elem_id="eval_failure")
        with gr.Row():  # the metrics beside the confusion matrix, where there is one
            first = gr.Dataframe(visible=False, interactive=False, wrap=True, max_height=420, scale=1,
                                 elem_id="eval_table")
            confusion = gr.Dataframe(visible=False, interactive=False, wrap=True, max_height=420, scale=2,
                                     elem_id="eval_confusion")
        second = gr.Dataframe(visible=False, interactive=False, wrap=True, max_height=480, elem_id="eval_rows")
        report = gr.HTML(visible=False, elem_id="eval_report")
        report_file = said(gr.File(visible=False, interactive=False, elem_id="eval_report_file"), "eval_report_file")
        log_box = said(gr.Textbox(label="", lines=8, max_lines=8, autoscroll=True, interactive=False,
                                  elem_id="eval_log", elem_classes="log"), "log")
        with said(gr.Accordion("", open=False, elem_id="eval_config_box"), "job_config"):
            config_view = gr.Code(language="yaml", interactive=False, show_label=False, elem_id="eval_config")
        seen = gr.State(None)
        timer = gr.Timer(REFRESH_S)

    settings_inputs = [kind, data_dir, dataset, max_samples, max_new_tokens, metrics, do_sample, compare_with,
                       task_dir, task, n_shot, lang]

    def on_kind(chosen: str):
        return gr.update(visible=chosen != "benchmark"), gr.update(visible=chosen == "compare"), \
            gr.update(visible=chosen == "benchmark")

    def settings_of(chosen, folder, names, samples, new_tokens, extra, sample, others, bench_dir, task_name, shots,
                    wording, top_values) -> dict:
        if chosen == "benchmark":
            return {"task_dir": bench_dir, "task": task_name, "n_shot": shots, "lang": wording}
        settings = {"dataset_dir": folder, "eval_dataset": names, "max_samples": samples,
                    "max_new_tokens": new_tokens, "do_sample": bool(sample), "eval_metrics": extra or None}
        if chosen == "compare":
            settings["compare_models"] = eval_jobs.compare_models(model_keys(*top_values), others or [])
        return settings

    def on_start(code: str, *values):
        n = len(top.inputs())
        top_values, (chosen, folder, names, samples, new_tokens, extra, sample, others, bench_dir, task_name, shots,
                     wording) = values[:n], values[n:]
        if not top_values[0]:
            return translate(code, "no_model"), gr.skip()
        if chosen != "benchmark" and not names:
            return translate(code, "eval_no_prompts"), gr.skip()
        if chosen == "benchmark" and not task_name:
            return translate(code, "eval_no_task"), gr.skip()
        if chosen == "compare" and not others:
            return translate(code, "eval_no_compare"), gr.skip()
        try:
            settings = settings_of(chosen, folder, names, samples, new_tokens, extra, sample, others, bench_dir,
                                   task_name, shots, wording, top_values)
        except ConfigError as e:
            return translate(code, "bad_config", error=e), gr.skip()
        # None: redraw at the next tick
        return eval_jobs.start_message(page.runner, root, chosen, model_keys(*top_values), settings, code), None

    def on_stop(code: str):
        return eval_jobs.stop_message(page.runner, KINDS, code)

    def on_tick(code: str, last):
        changed = eval_jobs.changed_view(root, KINDS, code, last)
        if changed is None:
            return [gr.skip()] * (len(live) - 1) + [last]
        folder, view, signature = changed
        shown = result_tables(code, folder, view.kind)
        done = view.progress[0] / max(view.progress[1], 1) * 100 if view.progress else 0
        done = 100 if view.status == "finished" else done

        def table(slot):
            if shown[slot] is None:
                return gr.update(visible=False)
            key, frame, widths = shown[slot]
            return gr.update(value=frame, label=translate(code, key), visible=True, column_widths=widths)

        path = shown["report"]
        served = None
        if path is not None:  # a copy in a temp folder: Gradio serves files from there, wherever the runs root is
            served = Path(tempfile.mkdtemp(prefix="alignlab-report-")) / "report.html"
            shutil.copyfile(path, served)
        failed = view.failure is not None
        return [eval_jobs.status_text(view, code), progress_bar(done),
                gr.update(value=eval_jobs.failure_html(view, code), visible=failed),
                table("first"), table("second"), table("confusion"),
                gr.update(value=report_frame(path), visible=True) if path else gr.update(visible=False),
                gr.update(value=str(served), visible=True) if served else gr.update(visible=False),
                view.log, eval_jobs.task_text(folder), signature]

    def kind_choices(code: str):
        return gr.update(choices=[(translate(code, f"eval_kind_{k}"), k) for k in KINDS])

    def on_tab(bench_dir: str):
        """Runs finished since the page loaded become choices."""
        return gr.update(choices=list(dict.fromkeys([*page.model_choices(), *page.adapter_choices()]))), \
            gr.update(choices=eval_jobs.benchmark_tasks(bench_dir))

    live = [status, bar, failure, first, second, confusion, report, report_file, log_box, config_view, seen]
    kind.change(on_kind, kind, [data_row, compare_row, bench_row])
    data_dir.input(lambda d: gr.update(choices=forms.datasets_for("sft", d)), data_dir, dataset)
    task_dir.input(lambda d: gr.update(choices=eval_jobs.benchmark_tasks(d)), task_dir, task)
    start.click(on_start, [page.lang, *top.inputs(), *settings_inputs], [message, seen])
    stop.click(on_stop, page.lang, message)
    timer.tick(on_tick, [page.lang, seen], live)
    tab.select(on_tab, task_dir, [compare_with, task])
    page.lang_changed.append((kind_choices, page.lang, kind))
