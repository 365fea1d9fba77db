"""The Runs tab: every run folder under the runs root (CLI runs too) in a table, several runs'
curves overlaid, a run's config opened in the Train tab, a run deleted after a confirmation."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import yaml

from . import runs
from .i18n import translate
from .page import Page
from .train_tab import TrainForm, points_frame


def build(page: Page, train: TrainForm) -> None:
    root, said = page.root, page.said
    with said(gr.Tab(translate("en", "tab_runs"), id="runs"), "tab_runs") as tab:
        refresh = said(gr.Button("", size="sm", elem_id="refresh"), "refresh", "value")
        table = gr.Dataframe(label=str(root), interactive=False, wrap=True, elem_id="runs_table")
        with gr.Row():
            compare = said(gr.Dropdown([], multiselect=True, label="", scale=3, elem_id="compare"), "compare_runs")
            compare_metric = said(gr.Dropdown(["loss"], value="loss", label="", allow_custom_value=True,
                                              elem_id="compare_metric"), "compare_metric")
        overlay_plot = gr.LinePlot(None, x="step", y="value", color="series", height=320, elem_id="overlay")
        with gr.Row():
            chosen = said(gr.Dropdown([], label="", scale=3, elem_id="chosen_run"), "chosen_run")
            open_run = said(gr.Button("", elem_id="open_run"), "open_run", "value")
            delete = said(gr.Button("", variant="secondary", elem_id="delete"), "delete", "value")
        with gr.Row(visible=False) as confirm_row:
            confirm = said(gr.Button("", variant="stop", elem_id="confirm_delete"), "confirm_delete", "value")
            cancel = said(gr.Button("", elem_id="cancel_delete"), "cancel", "value")
        runs_message = gr.Markdown(elem_id="runs_message")

    def table_frame(code: str) -> pd.DataFrame:
        columns = [translate(code, f"col_{c.split()[0]}") for c in runs.TABLE_COLUMNS]
        rows = runs.run_table(root)
        for row in rows:
            row[1] = translate(code, f"status_{row[1]}")
        return pd.DataFrame(rows, columns=columns)

    def on_runs(code: str):
        names = [str(p.relative_to(root)) for p in runs.find_runs(root)]
        return table_frame(code), gr.update(choices=names), gr.update(choices=names, value=None), \
            gr.update(visible=False)

    def on_compare(selected: list[str], metric: str):
        paths = [root / name for name in selected or []]
        metrics = list(dict.fromkeys(m for p in paths for m in runs.metric_names(runs.read_log(str(p)))))
        return gr.update(choices=metrics or ["loss"]), points_frame(runs.overlay(paths, metric))

    def on_open(code: str, name: str | None):
        """The run's config in the Train tab (its run folder kept: Start resumes or says it is done)."""
        keep = [gr.skip()] * (len(train.outputs) + 2)
        if not name:
            return [*keep, translate(code, "choose_run")]
        try:
            config = yaml.safe_load((root / name / "run_config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            return [*keep, translate(code, "load_failed", error=e)]
        config["output_dir"] = str(root / name)
        opened = translate(code, "opened", run=name)
        return [*train.load(config), gr.Tabs(selected="train"), opened, opened]

    def on_delete(code: str, name: str | None):
        try:
            runs.delete_run(root, name or "")
        except ValueError as e:
            return (translate(code, "delete_failed", reason=e), *on_runs(code))
        return (translate(code, "deleted", run=name), *on_runs(code))

    outputs = [table, compare, chosen, confirm_row]
    tab.select(on_runs, page.lang, outputs)
    refresh.click(on_runs, page.lang, outputs)
    page.lang_changed.append((on_runs, page.lang, outputs))
    compare.change(on_compare, [compare, compare_metric], [compare_metric, overlay_plot])
    compare_metric.input(on_compare, [compare, compare_metric], [compare_metric, overlay_plot])
    open_run.click(on_open, [page.lang, chosen], [*train.outputs, page.tabs, train.message, runs_message])
    delete.click(lambda name: gr.update(visible=bool(name)), chosen, confirm_row)
    cancel.click(lambda: gr.update(visible=False), None, confirm_row)
    confirm.click(on_delete, [page.lang, chosen], [runs_message, *outputs])
