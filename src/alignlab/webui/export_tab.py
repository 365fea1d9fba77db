"""The Export tab: `alignlab export` of the top bar's model and adapters (merged) into a folder that
carries the training template as chat_template.jinja; the latest export's status, log tail, failure
line, the files it wrote and what it carries, as tables."""

from __future__ import annotations

import gradio as gr

from . import eval_jobs
from .evaluate_tab import REFRESH_S
from .i18n import translate
from .page import Page, model_keys

KINDS = ("export",)
DTYPES = ["auto", "float32", "bfloat16", "float16"]


def carried_rows(code: str, export_dir) -> list[list[str]]:
    """What the export carries, the chat_template.jinja verdict in the page's language."""
    rows = eval_jobs.export_carried(export_dir)
    return [[k, translate(code, f"jinja_{v}")] if k == "chat_template.jinja" else [k, v] for k, v in rows]


def build(page: Page) -> None:
    root, top, said = page.root, page.top, page.said
    with said(gr.Tab(translate("en", "tab_export"), id="export"), "tab_export"):
        said(gr.Markdown(translate("en", "export_intro")), "export_intro", "value")
        with gr.Row(equal_height=True):
            export_dir = said(gr.Textbox("", label="", max_lines=1, scale=3, elem_id="export_dir",
                                         placeholder=translate("en", "export_dir_placeholder", root=root)), "export_dir")
            export_size = said(gr.Number(5, minimum=0.01, label="", scale=1, elem_id="export_size"), "export_size")
            dtype = said(gr.Dropdown(DTYPES, value="auto", label="", scale=1, elem_id="export_dtype"), "export_dtype")
        with gr.Row():
            start = said(gr.Button("", variant="primary", scale=0, min_width=200, elem_id="export_start"), "start",
                         "value")
            stop = said(gr.Button("", variant="stop", scale=0, min_width=200, elem_id="export_stop"), "stop",
                        "value")
        message = gr.Markdown(elem_id="export_message")
        status = gr.Markdown(translate("en", "export_idle"), elem_id="export_progress")
        failure = gr.HTML(visible=False, elem_id="export_failure")
        with gr.Row():
            files = gr.Dataframe(visible=False, interactive=False, wrap=True, max_height=420, scale=1,
                                 elem_id="export_files")
            carried = gr.Dataframe(visible=False, interactive=False, wrap=True, max_height=420, scale=1,
                                   elem_id="export_carried")
        log_box = said(gr.Textbox(label="", lines=8, max_lines=8, autoscroll=True, interactive=False,
                                  elem_id="export_log", elem_classes="log"), "log")
        with said(gr.Accordion("", open=False, elem_id="export_config_box"), "job_config"):
            config_view = gr.Code(language="yaml", interactive=False, show_label=False, elem_id="export_config")
        seen = gr.State(None)
        timer = gr.Timer(REFRESH_S)

    def on_start(code: str, *values):
        n = len(top.inputs())
        top_values, (folder, size, chosen_dtype) = values[:n], values[n:]
        if not top_values[0]:
            return translate(code, "no_model"), gr.skip()
        settings = {"export_dir": (folder or "").strip() or None, "export_size": size, "infer_dtype": chosen_dtype}
        return eval_jobs.start_message(page.runner, root, "export", model_keys(*top_values), settings, code), None

    def on_stop(code: str):
        return eval_jobs.stop_message(page.runner, KINDS, code)

    def on_tick(code: str, last):
        changed = eval_jobs.changed_view(root, KINDS, code, last)
        if changed is None:
            return [gr.skip()] * (len(live) - 1) + [last]
        folder, view, signature = changed
        written = eval_jobs.export_dir_of(folder) if view.status == "finished" else None
        rows, kept = eval_jobs.export_files(written), carried_rows(code, written)
        failed = view.failure is not None
        return [eval_jobs.status_text(view, code) + (f" · `{written}`" if written else ""),
                gr.update(value=eval_jobs.failure_html(view, code), visible=failed),
                gr.update(value=eval_jobs.table_frame(code, ["file", "size"], rows), label=translate(code, "export_table_files"),
                          visible=bool(rows)),
                gr.update(value=eval_jobs.table_frame(code, ["setting", "carried"], kept),
                          label=translate(code, "export_table_carried"), visible=bool(kept)),
                view.log, eval_jobs.task_text(folder), signature]

    live = [status, failure, files, carried, log_box, config_view, seen]
    start.click(on_start, [page.lang, *top.inputs(), export_dir, export_size, dtype], [message, seen])
    stop.click(on_stop, page.lang, message)
    timer.tick(on_tick, [page.lang, seen], live)
    page.lang_changed.append((lambda code: gr.update(placeholder=translate(code, "export_dir_placeholder", root=root)),
                              page.lang, export_dir))
