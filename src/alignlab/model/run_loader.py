"""Reading a run folder and loading what it trained, for inference.

A run folder (or an export) records its settings in `run_config.yaml`. `load_inference_model` loads
the model with its adapters (+ the value head of a reward model), the tokenizer and the template the
run trained with, and places the model on the GPU when there is one; chat, api, eval, compare, export
and predict all load models through here. `load_tokenizer_and_template` is the part an engine that
loads its own weights (vLLM) needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..data import get_template
from .adapter import adapter_paths, init_adapter
from .loader import load_model
from .tokenizer import load_tokenizer
from .value_head import HEAD_FILE, ValueHeadModel

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: object  # None when an engine loads the weights itself (vLLM)
    tokenizer: object
    template: object
    name: str
    reward_model: object = None  # a ValueHeadModel when the run is a reward model


def run_settings(folder) -> dict | None:
    """The run_config.yaml a training run (or an export) left in `folder`; None when there is none."""
    path = Path(folder) / "run_config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def training_settings(model_args) -> dict:
    """The run settings saved with the newest adapter, else with the model folder, else {}."""
    for folder in [*reversed(adapter_paths(model_args)), model_args.model_name_or_path]:
        settings = run_settings(folder)
        if settings is not None:
            return settings
    return {}


def inference_device() -> torch.device:
    """Where inference runs: the current CUDA device when there is one, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def load_tokenizer_and_template(cfg):
    """The tokenizer and the template the run trained with; an explicit `template` that differs from the
    run's is used, with a warning."""
    saved = training_settings(cfg.model)
    name = cfg.data.template if "template" in cfg.resolved else saved.get("template")
    if "template" in cfg.resolved and saved.get("template") and saved["template"] != name:
        logger.warning("Serving with template %r, but the model was trained with %r: answers may be garbage. "
                       "Drop `template` to use the training template.", name, saved["template"])
    pick = {k: cfg.resolved.get(k, saved.get(k))
            for k in ("default_system", "enable_thinking", "tool_format", "preserve_thinking")}
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(name, tokenizer, default_system=pick["default_system"],
                            enable_thinking=True if pick["enable_thinking"] is None else pick["enable_thinking"],
                            tool_format=pick["tool_format"], preserve_thinking=bool(pick["preserve_thinking"]))
    return tokenizer, template


def load_inference_model(cfg) -> LoadedModel:
    """Model (+ adapters, + value head for reward models) on the inference device, its tokenizer and
    its training template."""
    tokenizer, template = load_tokenizer_and_template(cfg)
    model = init_adapter(load_model(tokenizer, cfg.model), cfg.model, cfg.finetuning, is_trainable=False).eval()
    if not getattr(model, "hf_device_map", None):  # quantised models were placed when loaded
        model.to(inference_device())
    adapters = adapter_paths(cfg.model)
    last = Path(adapters[-1] if adapters else cfg.model.model_name_or_path)
    reward_model = None
    if (last / HEAD_FILE).is_file():
        reward_model = ValueHeadModel(model)
        reward_model.load_head(str(last))
        reward_model.to(next(model.parameters()).device).eval()
    return LoadedModel(model, tokenizer, template, last.name or "model", reward_model)
