"""The Gradio Blocks of `alignlab webui`: a Train tab (form from the key registry, Start/Stop, live
curves) and a Runs tab (table, overlaid curves, delete). Thin glue over forms, jobs and runs."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import ConfigError
from ..config.stages import STAGES
from ..data import TEMPLATES
from . import forms, runs
from .i18n import LANGUAGES, translate
from .jobs import CONFIG_FILE, JobRefused, JobRunner

BUNDLED_MODEL = "examples/models/tiny-qwen3"
REFRESH_S = 2.0
CSS = "#failure {border: 1px solid #d33; border-radius: 6px; padding: 0 8px} .log textarea {font-family: monospace}"


def _points_frame(points: list[dict]) -> pd.DataFrame | None:
    """Curve points as the plots take them; None for none (Gradio 6.31 draws no lines in a plot that
    once held an empty frame, nor after its title is updated)."""
    if not points:
        return None
    return pd.DataFrame(points, columns=["step", "value", "series"]).astype(
        {"step": "int64", "value": "float64", "series": "str"})


def _widget(field: forms.Field) -> gr.components.Component:
    common = {"label": field.info.name, "info": field.info.help or None, "elem_id": f"key-{field.info.name}"}
    if field.kind == "checkbox":
        return gr.Checkbox(value=field.value, **common)
    if field.kind == "dropdown":
        return gr.Dropdown(choices=list(field.choices), value=field.value, allow_custom_value=True, **common)
    if field.kind in ("integer", "number"):
        return gr.Number(value=field.value, precision=0 if field.kind == "integer" else None, **common)
    return gr.Textbox(value=field.value, max_lines=1, **common)


def _default_output_dir(root: Path, stage: str) -> str:
    return str(root / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}")


def build_app(runs_root: str | Path = "saves", dataset_dir: str = "data", models: tuple[str, ...] = ()) -> gr.Blocks:
    """The web UI over the run folders under `runs_root`; `models` are offered besides the bundled one."""
    root = Path(runs_root)
    runner = JobRunner(root)
    texts: list[tuple[gr.components.Component, str, str]] = []  # (component, string key, attribute) to translate

    def said(component, key: str, attr: str = "label"):
        """Register a translated string of `component`, shown in English until the language is known."""
        setattr(component, attr, translate("en", key))
        texts.append((component, key, attr))
        return component

    def model_choices() -> list[str]:
        return list(dict.fromkeys([BUNDLED_MODEL, *map(str, models), *map(str, runs.find_runs(root))]))

    with gr.Blocks(title="alignlab") as app:
        lang = gr.BrowserState("en", storage_key="alignlab_webui_language")
        with gr.Row():
            said(gr.Markdown(translate("en", "title")), "title", "value")
            language = gr.Radio([(name, code) for code, name in LANGUAGES.items()], value="en", show_label=False,
                                scale=0, min_width=180, elem_id="language")
        with gr.Tabs():
            with said(gr.Tab(translate("en", "tab_train"), id="train"), "tab_train"):
                with gr.Row():
                    stage = said(gr.Dropdown(list(STAGES), value="sft", label="", elem_id="stage"), "stage")
                    model = said(gr.Dropdown(model_choices(), value=None, allow_custom_value=True, label="",
                                             elem_id="model", scale=3), "model")
                    finetuning_type = said(gr.Dropdown(["lora", "freeze", "full"], value="lora", label=""),
                                           "finetuning_type")
                    template = said(gr.Dropdown(list(TEMPLATES), value=None, label="", elem_id="template"),
                                    "template")
                with gr.Row():
                    data_dir = said(gr.Textbox(dataset_dir, label="", max_lines=1), "dataset_dir")
                    dataset = said(gr.Dropdown(forms.datasets_for("sft", dataset_dir), multiselect=True, label="",
                                               elem_id="dataset", scale=2), "dataset")
                    output_dir = said(gr.Textbox(_default_output_dir(root, "sft"), label="", max_lines=1,
                                                 elem_id="output_dir", scale=2), "output_dir")
                fields: list[forms.Field] = []
                widgets: list[gr.components.Component] = []
                holders: list[gr.Column] = []
                accordions: dict[str, gr.Accordion] = {}
                for group, group_fields in forms.form_fields().items():
                    prominent = group == forms.PROMINENT
                    title = translate("en", "essentials") if prominent else forms.GROUP_TITLES[group]
                    with gr.Accordion(title, open=prominent, visible=group in forms.stage_groups("sft") or prominent,
                                      elem_id=f"group-{group}") as accordion:
                        if prominent:
                            said(accordion, "essentials")
                        with gr.Row(equal_height=True):
                            for field in group_fields:  # a column each: checkboxes keep their width
                                with gr.Column(min_width=220, visible=forms.visible_in(field, "sft")) as holder:
                                    widgets.append(_widget(field))
                                fields.append(field)
                                holders.append(holder)
                    accordions[group] = accordion
                with gr.Row():
                    preview = said(gr.Button("", elem_id="preview"), "preview", "value")
                    start = said(gr.Button("", variant="primary", elem_id="start"), "start", "value")
                    stop = said(gr.Button("", variant="stop", elem_id="stop"), "stop", "value")
                message = gr.Markdown(elem_id="message")
                yaml_view = said(gr.Code(language="yaml", label="", visible=False, elem_id="yaml"), "yaml")
                progress = gr.Markdown(translate("en", "idle"), elem_id="progress")
                failure = gr.Markdown(visible=False, elem_id="failure")
                with gr.Row():
                    with gr.Column():
                        metric_a = said(gr.Dropdown(["loss"], value="loss", label="", elem_id="metric_a"),
                                        "metric_left")
                        plot_a = gr.LinePlot(None, x="step", y="value", color="series", height=280,
                                             elem_id="plot_a")
                    with gr.Column():
                        metric_b = said(gr.Dropdown(["lr"], value="lr", label="", elem_id="metric_b"),
                                        "metric_right")
                        plot_b = gr.LinePlot(None, x="step", y="value", color="series", height=280,
                                             elem_id="plot_b")
                log_rows = said(gr.Dataframe(pd.DataFrame(columns=["current_steps", "total_steps", "loss"]), label="", max_height=220, interactive=False,
                                             elem_id="log_rows"), "log_rows")
                log_box = said(gr.Textbox(label="", lines=10, max_lines=10, autoscroll=True, interactive=False,
                                          elem_id="log", elem_classes="log"), "log")
                seen = gr.State(None)
                timer = gr.Timer(REFRESH_S)

            with said(gr.Tab(translate("en", "tab_runs"), id="runs"), "tab_runs") as runs_tab:
                refresh = said(gr.Button("", size="sm", elem_id="refresh"), "refresh", "value")
                table = gr.Dataframe(label=str(root), interactive=False, wrap=True, elem_id="runs_table")
                with gr.Row():
                    compare = said(gr.Dropdown([], multiselect=True, label="", scale=3, elem_id="compare"),
                                   "compare_runs")
                    compare_metric = said(gr.Dropdown(["loss"], value="loss", label="", allow_custom_value=True,
                                                      elem_id="compare_metric"), "compare_metric")
                overlay_plot = gr.LinePlot(None, x="step", y="value", color="series", height=320,
                                           elem_id="overlay")
                with gr.Row():
                    to_delete = said(gr.Dropdown([], label="", scale=3, elem_id="to_delete"), "delete_run")
                    delete = said(gr.Button("", variant="secondary", elem_id="delete"), "delete", "value")
                with gr.Row(visible=False) as confirm_row:
                    confirm = said(gr.Button("", variant="stop", elem_id="confirm_delete"), "confirm_delete", "value")
                    cancel = said(gr.Button("", elem_id="cancel_delete"), "cancel", "value")
                runs_message = gr.Markdown()

        top_inputs = [stage, model, finetuning_type, template, data_dir, dataset, output_dir]

        def relabel(code: str):
            return [code] + [gr.update(**{attr: translate(code, key)}) for _, key, attr in texts]

        def build(values: list):
            stage_name, model_path, method, template_name, folder, names, out = values[:len(top_inputs)]
            top = {"stage": stage_name, "model_name_or_path": model_path, "finetuning_type": method,
                   "template": template_name, "dataset_dir": folder, "dataset": names, "output_dir": out}
            return forms.build_config(top, forms.changed_values(fields, values[len(top_inputs):], stage_name))

        def on_stage(stage_name: str, folder: str):
            shown = forms.stage_groups(stage_name)
            return ([gr.update(choices=forms.datasets_for(stage_name, folder), value=[]),
                     _default_output_dir(root, stage_name)]
                    + [gr.update(visible=g == forms.PROMINENT or g in shown) for g in accordions]
                    + [gr.update(visible=forms.visible_in(f, stage_name)) for f in fields])

        def on_preview(code: str, *values):
            try:
                return gr.update(value=build(list(values)).to_yaml(), visible=True), ""
            except ConfigError as e:
                return gr.update(visible=False), translate(code, "bad_config", error=e)

        def on_start(code: str, *values):
            stage_name, model_path, *_rest = values
            out, names = values[len(top_inputs) - 1], values[len(top_inputs) - 2]
            if not model_path:
                return gr.update(), translate(code, "no_model")
            if not names:
                return gr.update(), translate(code, "no_dataset")
            run_dir = Path(out)
            if not run_dir.resolve().is_relative_to(root.resolve()) or run_dir.resolve() == root.resolve():
                return gr.update(), translate(code, "outside_root", root=root)
            try:
                cfg = build(list(values))
            except ConfigError as e:
                return gr.update(visible=False), translate(code, "bad_config", error=e)
            text = cfg.to_yaml()
            running = runner.active()
            if running:
                reason = translate(code, "refused", reason=f"{running.run_dir} ({runs.run_status(running.run_dir)})")
                return gr.update(value=text, visible=True), reason
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
            done = [] if cfg.finetuning.overwrite_output_dir else runs.checkpoints(run_dir)
            try:
                runner.start(run_dir)
            except JobRefused as e:
                return gr.update(value=text, visible=True), translate(code, "refused", reason=e)
            said_started = translate(code, "resuming", run=run_dir, step=done[-1]) if done else \
                translate(code, "started", run=run_dir)
            return gr.update(value=text, visible=True), said_started

        def on_stop(code: str):
            job = runner.stop()
            return translate(code, "stopping", run=job.run_dir) if job else translate(code, "nothing_running")

        def draw(rows: list[dict], metric: str):
            return _points_frame(runs.curve(rows, metric))

        def on_tick(code: str, metric_left: str, metric_right: str, last):
            run = runs.latest_job_run(root)
            if run is None:
                return [gr.skip()] * 8 + [last]
            view = runs.live_view(run)
            if view.signature == last:
                return [gr.skip()] * 8 + [last]
            status = translate(code, f"status_{view.status}")
            if view.progress:
                p = view.progress
                text = translate(code, "progress", run=run.name, status=status, step=p.step, total=p.total,
                                 percentage=p.percentage, elapsed=p.elapsed, remaining=p.remaining)
            else:
                text = translate(code, "waiting", run=run.name, status=status)
            failed = view.failure is not None
            names = runs.metric_names(view.rows)
            left = metric_left if metric_left in names or not names else names[0]
            right = metric_right if metric_right in names or not names else \
                next((n for n in names if n != left), left)
            pickers = [gr.update(choices=names, value=left), gr.update(choices=names, value=right)] if names \
                else [gr.skip(), gr.skip()]
            steps = [r for r in view.rows if "train_runtime" not in r]
            return [text,
                    gr.update(value=translate(code, "failed", code=view.exit_code, line=view.failure) if failed else "",
                              visible=failed),
                    view.log, pd.DataFrame(steps), *pickers,
                    draw(view.rows, left), draw(view.rows, right), view.signature]

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
            return gr.update(choices=metrics or ["loss"]), _points_frame(runs.overlay(paths, metric))

        def on_delete(code: str, name: str | None):
            try:
                runs.delete_run(root, name or "")
            except ValueError as e:
                return (translate(code, "delete_failed", reason=e), *on_runs(code))
            return (translate(code, "deleted", run=name), *on_runs(code))

        language.change(relabel, language, [lang] + [c for c, _, _ in texts])
        app.load(lambda saved: saved if saved in LANGUAGES else "en", lang, language)
        stage.change(on_stage, [stage, data_dir], [dataset, output_dir, *accordions.values(), *holders])
        data_dir.change(lambda s, d: gr.update(choices=forms.datasets_for(s, d)), [stage, data_dir], dataset)
        preview.click(on_preview, [lang, *top_inputs, *widgets], [yaml_view, message])
        start.click(on_start, [lang, *top_inputs, *widgets], [yaml_view, message])
        stop.click(on_stop, lang, message)
        live_outputs = [progress, failure, log_box, log_rows, metric_a, metric_b, plot_a, plot_b, seen]
        timer.tick(on_tick, [lang, metric_a, metric_b, seen], live_outputs)
        language.change(lambda: None, None, seen)  # redraw the live view in the new language
        metric_a.input(lambda m: draw(runs.read_log(str(runs.latest_job_run(root) or root)), m), metric_a, plot_a)
        metric_b.input(lambda m: draw(runs.read_log(str(runs.latest_job_run(root) or root)), m), metric_b, plot_b)
        runs_outputs = [table, compare, to_delete, confirm_row]
        runs_tab.select(on_runs, lang, runs_outputs)
        refresh.click(on_runs, lang, runs_outputs)
        language.change(on_runs, language, runs_outputs)
        app.load(lambda: gr.update(choices=model_choices()), None, model)
        compare.change(on_compare, [compare, compare_metric], [compare_metric, overlay_plot])
        compare_metric.input(on_compare, [compare, compare_metric], [compare_metric, overlay_plot])
        delete.click(lambda name: gr.update(visible=bool(name)), to_delete, confirm_row)
        cancel.click(lambda: gr.update(visible=False), None, confirm_row)
        confirm.click(on_delete, [lang, to_delete], [runs_message, *runs_outputs])
    return app
