"""The Gradio Blocks of `alignlab webui`: the header (title, language), the top bar (model, method,
adapters, template, thinking) and the tabs, each a module with `build(page)`. Thin glue only."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import yaml

from ..data import TEMPLATES
from . import annotate_tab, chat_tab, evaluate_tab, export_tab, loop_tab, runs_tab, train_tab
from .i18n import LANGUAGES, translate
from .jobs import JobRunner
from .page import Page, TopBar

CSS = ("#failure {border: 1px solid #d33; border-radius: 6px; padding: 0 8px} .log textarea {font-family: monospace}"
       " .bar {height: 10px; background: #eee; border-radius: 5px; overflow: hidden}"
       " .bar > div {height: 100%; background: #f97316; transition: width .5s}")


def _run_template(path: str | None) -> str | None:
    """The template a run folder (or a checkpoint in one) was trained with."""
    if not path:
        return None
    for folder in (Path(path), Path(path).parent):
        try:
            return (yaml.safe_load((folder / "run_config.yaml").read_text()) or {}).get("template")
        except (OSError, yaml.YAMLError):
            continue
    return None


def build_app(runs_root: str | Path = "saves", dataset_dir: str = "data", models: tuple[str, ...] = ()) -> gr.Blocks:
    """The web UI over the run folders under `runs_root`; `models` are offered besides the bundled one."""
    root = Path(runs_root)
    page = Page(root, dataset_dir, JobRunner(root), tuple(models))
    said = page.said
    with gr.Blocks(title="alignlab") as app:
        page.lang = gr.BrowserState("en", storage_key="alignlab_webui_language")
        with gr.Row():
            said(gr.Markdown(translate("en", "title")), "title", "value")
            language = gr.Radio([(name, code) for code, name in LANGUAGES.items()], value="en", show_label=False,
                                scale=0, min_width=180, elem_id="language")
        with gr.Row(elem_id="topbar"):
            model = said(gr.Dropdown(page.model_choices(), value=None, allow_custom_value=True, label="",
                                     elem_id="model", scale=3), "model")
            finetuning_type = said(gr.Dropdown(["lora", "freeze", "full"], value="lora", label="",
                                               elem_id="finetuning_type", scale=1), "finetuning_type")
            adapters = said(gr.Dropdown(page.adapter_choices(), value=[], multiselect=True, allow_custom_value=True,
                                        label="", elem_id="adapters", scale=3), "adapters")
            template = said(gr.Dropdown(list(TEMPLATES), value=None, label="", elem_id="template", scale=2, min_width=200),
                            "template")
            thinking = said(gr.Checkbox(True, label="", elem_id="enable_thinking", scale=0, min_width=140),
                            "enable_thinking")
        page.top = TopBar(model, finetuning_type, adapters, template, thinking)
        with gr.Tabs() as page.tabs:
            train = train_tab.build(page)
            runs_tab.build(page, train)
            chat_tab.build(page)
            evaluate_tab.build(page)
            export_tab.build(page)
            annotate_project = annotate_tab.build(page)
            loop_tab.build(page, annotate_project)

        def relabel(code: str):
            return [code] + [gr.update(**{attr: translate(code, key)}) for _, key, attr in page.texts]

        def default_template(path: str | None, chosen: list[str] | None, current: str | None):
            """The template follows the picked run (its adapter's run first) until one is chosen by hand."""
            if current:
                return gr.skip()
            found = next((t for t in map(_run_template, [*(chosen or []), path]) if t), None)
            return found if found else gr.skip()

        language.change(relabel, language, [page.lang] + [c for c, _, _ in page.texts])
        for fn, inputs, outputs in page.lang_changed:  # the new language, not the remembered one
            inputs = [language if c is page.lang else c for c in inputs] if isinstance(inputs, list) else \
                language if inputs is page.lang else inputs
            language.change(fn, inputs, outputs)
        app.load(lambda saved: saved if saved in LANGUAGES else "en", page.lang, language)
        app.load(lambda: (gr.update(choices=page.model_choices()), gr.update(choices=page.adapter_choices())),
                 None, [model, adapters])
        model.input(default_template, [model, adapters, template], template)
        adapters.input(default_template, [model, adapters, template], template)
    return app
