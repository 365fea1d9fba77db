"""The Train tab: stage, data and every key the stage reads (generated from the key registry),
Preview (data and YAML), Save/Load config, Start/Stop, and the live view of the latest job."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
import yaml

from ..config import ConfigError, split_list
from ..config.stages import STAGES
from . import forms, runs
from .i18n import translate
from .jobs import CONFIG_FILE
from .page import Page, model_keys

REFRESH_S = 2.0


def points_frame(points: list[dict]) -> pd.DataFrame | None:
    """Curve points as the plots take them; None for none (Gradio 6.31 draws no lines in a plot that
    once held an empty frame, nor after its title is updated)."""
    if not points:
        return None
    return pd.DataFrame(points, columns=["step", "value", "series"]).astype(
        {"step": "int64", "value": "float64", "series": "str"})


def progress_bar(percentage: float) -> str:
    width = max(0.0, min(float(percentage), 100.0))
    return (f'<div class="bar" role="progressbar" aria-valuenow="{width:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div style="width:{width:.1f}%"></div></div>')


def _widget(field: forms.Field) -> gr.components.Component:
    common = {"label": field.info.name, "info": field.info.help or None, "elem_id": f"key-{field.info.name}"}
    if field.kind == "checkbox":
        return gr.Checkbox(value=field.value, **common)
    if field.kind == "dropdown":
        return gr.Dropdown(choices=list(field.choices), value=field.value, allow_custom_value=True, **common)
    if field.kind in ("integer", "number"):
        return gr.Number(value=field.value, precision=0 if field.kind == "integer" else None, **common)
    return gr.Textbox(value=field.value, max_lines=1, **common)


def default_output_dir(root: Path, stage: str) -> str:
    return str(root / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}")


@dataclass
class TrainForm:
    """What other tabs need of the Train tab: the components a config fills, and how to fill them."""

    tab: gr.Tab
    outputs: list  # the top bar's model pickers, then stage, data, run folder, every key widget
    load: callable  # config dict -> updates for `outputs`
    message: gr.Markdown  # the tab's message line


def build(page: Page) -> TrainForm:
    root, top = page.root, page.top
    said = page.said
    with said(gr.Tab(translate("en", "tab_train"), id="train"), "tab_train") as tab:
        with gr.Row():
            stage = said(gr.Dropdown(list(STAGES), value="sft", label="", elem_id="stage", scale=1), "stage")
            data_dir = said(gr.Textbox(page.dataset_dir, label="", max_lines=1, scale=1), "dataset_dir")
            dataset = said(gr.Dropdown(forms.datasets_for("sft", page.dataset_dir), multiselect=True, label="",
                                       elem_id="dataset", scale=2), "dataset")
            data_preview = said(gr.Button("", size="sm", scale=0, min_width=120, elem_id="data_preview"),
                                "data_preview", "value")
        output_dir = said(gr.Textbox(default_output_dir(root, "sft"), label="", max_lines=1, elem_id="output_dir"),
                          "output_dir")
        segments = gr.HighlightedText(visible=False, show_legend=True, combine_adjacent=False,
                                      color_map={"trained": "#f7b267", "reference": "#8ecae6"}, elem_id="segments")
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
            save = said(gr.Button("", elem_id="save_config"), "save_config", "value")
            upload = said(gr.UploadButton("", file_types=[".yaml", ".yml"], elem_id="load_config"), "load_config")
            start = said(gr.Button("", variant="primary", elem_id="start"), "start", "value")
            stop = said(gr.Button("", variant="stop", elem_id="stop"), "stop", "value")
        message = gr.Markdown(elem_id="message")
        saved_file = said(gr.File(visible=False, interactive=False, elem_id="saved_config"), "saved_config")
        yaml_view = said(gr.Code(language="yaml", label="", visible=False, elem_id="yaml"), "yaml")
        progress = gr.Markdown(translate("en", "idle"), elem_id="progress")
        bar = gr.HTML(progress_bar(0), elem_id="bar")
        failure = gr.Markdown(visible=False, elem_id="failure")
        with gr.Row():
            with gr.Column():
                metric_a = said(gr.Dropdown(["loss"], value="loss", label="", elem_id="metric_a"), "metric_left")
                plot_a = gr.LinePlot(None, x="step", y="value", color="series", height=280, elem_id="plot_a")
            with gr.Column():
                metric_b = said(gr.Dropdown(["lr"], value="lr", label="", elem_id="metric_b"), "metric_right")
                plot_b = gr.LinePlot(None, x="step", y="value", color="series", height=280, elem_id="plot_b")
        log_rows = said(gr.Dataframe(pd.DataFrame(columns=["current_steps", "total_steps", "loss"]), label="",
                                     max_height=220, interactive=False, elem_id="log_rows"), "log_rows")
        log_box = said(gr.Textbox(label="", lines=10, max_lines=10, autoscroll=True, interactive=False,
                                  elem_id="log", elem_classes="log"), "log")
        seen = gr.State(None)
        timer = gr.Timer(REFRESH_S)

    picks = [stage, data_dir, dataset, output_dir]
    inputs = [*top.inputs(), *picks, *widgets]

    def build_cfg(values: list):
        n = len(top.inputs())
        stage_name, folder, names, out = values[n:n + len(picks)]
        keys = {"stage": stage_name, **model_keys(*values[:n]), "dataset_dir": folder, "dataset": names,
                "output_dir": out}
        return forms.build_config(keys, forms.changed_values(fields, values[n + len(picks):], stage_name))

    def visibility(stage_name: str) -> list:
        shown = forms.stage_groups(stage_name)
        return ([gr.update(visible=g == forms.PROMINENT or g in shown) for g in accordions]
                + [gr.update(visible=forms.visible_in(f, stage_name)) for f in fields])

    def on_stage(stage_name: str, folder: str):
        return ([gr.update(choices=forms.datasets_for(stage_name, folder), value=[]),
                 default_output_dir(root, stage_name)] + visibility(stage_name))

    def load(config: dict) -> list:
        """Updates for `outputs` from a config: every key it sets, the rest back to the defaults."""
        stage_name = config.get("stage") if config.get("stage") in STAGES else "sft"
        folder = str(config.get("dataset_dir") or page.dataset_dir)
        names = split_list(config.get("dataset"))
        adapters = split_list(config.get("adapter_name_or_path"))
        tops = [gr.update(value=config.get("model_name_or_path"),
                          choices=list(dict.fromkeys([*page.model_choices(), str(config.get("model_name_or_path"))]))),
                config.get("finetuning_type") or "lora",
                gr.update(value=adapters, choices=list(dict.fromkeys([*page.adapter_choices(), *adapters]))),
                config.get("template"), config.get("enable_thinking", True) is not False]
        return [*tops, stage_name, folder,
                gr.update(choices=list(dict.fromkeys([*forms.datasets_for(stage_name, folder), *names])),
                          value=names),
                str(config.get("output_dir") or default_output_dir(root, stage_name)),
                *forms.widget_values(fields, config), *visibility(stage_name)]

    def on_preview(code: str, *values):
        try:
            return gr.update(value=build_cfg(list(values)).to_yaml(), visible=True), ""
        except ConfigError as e:
            return gr.update(visible=False), translate(code, "bad_config", error=e)

    def on_data_preview(code: str, *values):
        try:
            cfg = build_cfg(list(values))
            if not cfg.data.dataset:
                return gr.update(visible=False), translate(code, "no_dataset")
            shown = []
            for title, parts in forms.preview_segments(cfg):
                shown += [(f"\n=== {title}\n", None), *parts]
            return gr.update(value=shown, visible=True), ""
        except Exception as e:  # a bad dataset or model path: one line, never a traceback in the page
            return gr.update(visible=False), translate(code, "preview_failed", error=e)

    def on_save(code: str, *values):
        try:
            text = build_cfg(list(values)).to_yaml()
        except ConfigError as e:
            return gr.update(visible=False), translate(code, "bad_config", error=e)
        stage_name = values[len(top.inputs())]
        path = Path(tempfile.mkdtemp(prefix="alignlab-config-")) / f"{stage_name}.yaml"
        path.write_text(text, encoding="utf-8")
        return gr.update(value=str(path), visible=True), translate(code, "saved", path=path.name)

    def on_upload(code: str, file):
        try:
            config = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                raise ValueError("not a mapping of keys")
        except (OSError, ValueError, yaml.YAMLError) as e:
            return [gr.skip()] * len(outputs) + [translate(code, "load_failed", error=e)]
        return load(config) + [translate(code, "loaded", path=Path(file).name)]

    def on_start(code: str, *values):
        n = len(top.inputs())
        if not values[0]:
            return gr.update(), translate(code, "no_model")
        names, out = values[n + 2], values[n + 3]
        if not names:
            return gr.update(), translate(code, "no_dataset")
        run_dir = Path(out)
        if not run_dir.resolve().is_relative_to(root.resolve()) or run_dir.resolve() == root.resolve():
            return gr.update(), translate(code, "outside_root", root=root)
        try:
            cfg = build_cfg(list(values))
        except ConfigError as e:
            return gr.update(visible=False), translate(code, "bad_config", error=e)
        text = cfg.to_yaml()
        running = page.runner.active()
        if running:
            reason = f"{running.run_dir} ({runs.run_status(running.run_dir)})"
            return gr.update(value=text, visible=True), translate(code, "refused", reason=reason)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
        done = [] if cfg.finetuning.overwrite_output_dir else runs.checkpoints(run_dir)
        try:
            page.runner.start(run_dir)
        except Exception as e:  # JobRefused, or the supervisor did not start
            return gr.update(value=text, visible=True), translate(code, "refused", reason=e)
        said_started = translate(code, "resuming", run=run_dir, step=done[-1]) if done else \
            translate(code, "started", run=run_dir)
        return gr.update(value=text, visible=True), said_started

    def on_stop(code: str):
        job = page.runner.stop()
        return translate(code, "stopping", run=job.run_dir) if job else translate(code, "nothing_running")

    def draw(rows: list[dict], metric: str):
        return points_frame(runs.curve(rows, metric))

    def on_tick(code: str, metric_left: str, metric_right: str, last):
        run = runs.latest_job_run(root)
        if run is None:
            return [gr.skip()] * 9 + [last]
        view = runs.live_view(run)
        if view.signature == last:
            return [gr.skip()] * 9 + [last]
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
        right = metric_right if metric_right in names or not names else next((n for n in names if n != left), left)
        pickers = [gr.update(choices=names, value=left), gr.update(choices=names, value=right)] if names \
            else [gr.skip(), gr.skip()]
        steps = [r for r in view.rows if "train_runtime" not in r]
        return [text, progress_bar(view.progress.percentage if view.progress else 0),
                gr.update(value=translate(code, "failed", code=view.exit_code, line=view.failure) if failed else "",
                          visible=failed),
                view.log, pd.DataFrame(steps), *pickers, draw(view.rows, left), draw(view.rows, right),
                view.signature]

    outputs = [*top.inputs(), *picks, *widgets, *accordions.values(), *holders]
    stage.input(on_stage, [stage, data_dir], [dataset, output_dir, *accordions.values(), *holders])
    data_dir.input(lambda s, d: gr.update(choices=forms.datasets_for(s, d)), [stage, data_dir], dataset)
    lang = page.lang
    preview.click(on_preview, [lang, *inputs], [yaml_view, message])
    data_preview.click(on_data_preview, [lang, *inputs], [segments, message])
    save.click(on_save, [lang, *inputs], [saved_file, message])
    upload.upload(on_upload, [lang, upload], [*outputs, message])
    start.click(on_start, [lang, *inputs], [yaml_view, message])
    stop.click(on_stop, lang, message)
    live = [progress, bar, failure, log_box, log_rows, metric_a, metric_b, plot_a, plot_b, seen]
    timer.tick(on_tick, [lang, metric_a, metric_b, seen], live)
    page.lang_changed.append((lambda: None, None, seen))  # redraw the live view in the new language
    metric_a.input(lambda m: draw(runs.read_log(str(runs.latest_job_run(root) or root)), m), metric_a, plot_a)
    metric_b.input(lambda m: draw(runs.read_log(str(runs.latest_job_run(root) or root)), m), metric_b, plot_b)
    return TrainForm(tab, outputs, load, message)
