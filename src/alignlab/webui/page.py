"""What every tab of the web UI shares: the runs root and job runner, the language, translated
labels, and the top bar (model, fine-tuning method, adapters, template, thinking).

Each tab is a module with `build(page: Page) -> None`, called inside `gr.Tabs()`; it reads the top
bar through `page.top` and labels its components with `page.said`, so the language switch reaches
them. Nothing here trains or loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from . import runs
from .i18n import translate
from .jobs import JobRunner

BUNDLED_MODEL = "examples/models/tiny-qwen3"


@dataclass
class TopBar:
    """The model pickers above the tabs; `inputs()` in this order feeds `model_keys`."""

    model: gr.Dropdown
    finetuning_type: gr.Dropdown
    adapters: gr.Dropdown  # multiselect of run folders and their checkpoints
    template: gr.Dropdown
    enable_thinking: gr.Checkbox

    def inputs(self) -> list:
        return [self.model, self.finetuning_type, self.adapters, self.template, self.enable_thinking]


def model_keys(model: str | None, finetuning_type: str, adapters: list[str] | None, template: str | None,
               enable_thinking: bool) -> dict:
    """The config keys of the top bar's choice (unset ones left out, so the CLI's defaults and the
    run's saved template apply)."""
    keys = {"model_name_or_path": model or None, "finetuning_type": finetuning_type,
            "adapter_name_or_path": ",".join(adapters) if adapters else None, "template": template or None,
            "enable_thinking": bool(enable_thinking)}
    return {k: v for k, v in keys.items() if v is not None}


@dataclass
class Page:
    root: Path  # the runs root (saves/)
    dataset_dir: str
    runner: JobRunner
    models: tuple[str, ...] = ()  # offered besides the bundled model and the runs
    lang: gr.BrowserState | None = None  # "en" or "zh", remembered by the browser
    top: TopBar | None = None
    tabs: gr.Tabs | None = None  # a tab may switch to another: `gr.Tabs(selected=id)` as an output
    texts: list[tuple[gr.components.Component, str, str]] = field(default_factory=list)
    lang_changed: list[tuple] = field(default_factory=list)  # (fn, inputs, outputs) run on a language switch

    def said(self, component, key: str, attr: str = "label"):
        """Label `component` with the string `key` (attribute `attr`), re-translated on a language switch."""
        setattr(component, attr, translate("en", key))
        self.texts.append((component, key, attr))
        return component

    def model_choices(self) -> list[str]:
        """The bundled tiny model, the given models and every run folder (a full run is a model; a
        LoRA run folder loads as its base model plus the adapter)."""
        return list(dict.fromkeys([BUNDLED_MODEL, *map(str, self.models), *map(str, runs.find_runs(self.root))]))

    def adapter_choices(self) -> list[str]:
        """Every adapter run folder and its checkpoints under the runs root."""
        return [str(p) for p in runs.adapters(self.root)]
