"""`alignlab train`: resolve the run directory, tokenizer, template and data, then hand over to
the stage module."""

from __future__ import annotations

import enum
import importlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ConfigError, split_list
from ..config.stages import STAGES
from ..files import write_atomic

logger = logging.getLogger(__name__)

# What makes a run folder's checkpoints usable by another invocation: the same stage, model, method,
# data and template. Training length may change (more epochs continue from the last checkpoint).
IDENTITY_KEYS = ("stage", "model_name_or_path", "adapter_name_or_path", "finetuning_type", "lora_rank",
                 "lora_target", "use_dora", "dataset", "template")
LENGTH_KEYS = ("num_train_epochs", "max_steps")


def run_identity(cfg) -> dict:
    """The identity and length settings of a run, as recorded in its run_config.yaml."""
    m, d, f, t = cfg.model, cfg.data, cfg.finetuning, cfg.training
    values = {"stage": f.stage, "model_name_or_path": m.model_name_or_path,
              "adapter_name_or_path": m.adapter_name_or_path, "finetuning_type": f.finetuning_type,
              "dataset": d.dataset, "template": d.template,
              "num_train_epochs": float(t.num_train_epochs), "max_steps": int(t.max_steps)}
    if f.finetuning_type == "lora":
        values.update(lora_rank=f.lora_rank, lora_target=f.lora_target, use_dora=f.use_dora)
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def _same(key: str, old, new) -> bool:
    if key in ("model_name_or_path", "adapter_name_or_path") and old and new:
        norm = lambda v: ",".join(os.path.realpath(p) if os.path.exists(p) else p for p in split_list(v))
        return norm(old) == norm(new)
    return old == new


def check_run_folder(cfg) -> bool:
    """Refuse to mix runs in one output_dir; return True when it already holds this run, finished.

    A folder with checkpoints or a finished model may only be continued by the same run (same
    IDENTITY_KEYS); `overwrite_output_dir: true` or a new folder are the ways out."""
    out = Path(cfg.training.output_dir)
    if cfg.finetuning.overwrite_output_dir or not (out / "run_config.yaml").is_file():
        return False
    try:
        previous = yaml.safe_load((out / "run_config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        previous = {}
    results = out / "all_results.json"
    try:
        finished = "train_runtime" in (saved := json.loads(results.read_text())) or "train_steps" in saved
    except (OSError, ValueError):
        finished = False
    if not finished and not any(out.glob("checkpoint-*")):
        return False  # nothing another run could lose
    current = run_identity(cfg)
    differing = [k for k in IDENTITY_KEYS if k in previous and not _same(k, previous[k], current.get(k))]
    if differing:
        changes = "; ".join(f"{k}: {previous[k]!r} there, {current.get(k)!r} now" for k in differing)
        raise ConfigError(
            f"output_dir {out} holds another run ({changes}). Set `overwrite_output_dir: true` to replace it, "
            "or choose a new `output_dir`.")
    return finished and all(previous.get(k, current[k]) == current[k] for k in LENGTH_KEYS)


def write_run_config(cfg, template_name: str | None) -> None:
    """`run_config.yaml`: the resolved config with the template, written atomically."""
    resolved = {k: v.value if isinstance(v, enum.Enum) else v for k, v in cfg.resolved.items()}
    resolved.update(run_identity(cfg))
    resolved.update({"template": template_name, "cutoff_len": cfg.data.cutoff_len,
                     "enable_thinking": cfg.data.enable_thinking})
    if cfg.data.default_system is not None:
        resolved["default_system"] = cfg.data.default_system
    write_atomic(Path(cfg.training.output_dir) / "run_config.yaml",
                 yaml.safe_dump(resolved, allow_unicode=True, sort_keys=False))


def _complete(checkpoint: Path) -> bool:
    """HF writes trainer_state.json last: a checkpoint without a readable one was cut off mid-save."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def resume_checkpoint(cfg) -> str | None:
    """The checkpoint to resume: the one asked for, else the last complete one in output_dir
    (unless overwriting). Checkpoints cut off by a crash are removed."""
    training = cfg.training
    if training.resume_from_checkpoint:
        return training.resume_from_checkpoint
    out = Path(training.output_dir)
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                         if p.name.split("-")[-1].isdigit() else -1, reverse=True) if out.is_dir() else []
    main = training.process_index == 0
    if cfg.finetuning.overwrite_output_dir:
        for child in checkpoints:
            if main:
                shutil.rmtree(child, ignore_errors=True)
        return None
    for checkpoint in checkpoints:
        if _complete(checkpoint):
            logger.warning("Resuming from %s (set `overwrite_output_dir: true` to start afresh).", checkpoint)
            return str(checkpoint)
        logger.warning("Removing %s: it was cut off while being saved.", checkpoint)
        if main:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None


@dataclass
class RunResult:
    metrics: dict
    model: object  # the trained model (a PeftModel for LoRA), still in memory


def run_train(cfg) -> RunResult:
    """Train the configured stage; return its final metrics and the trained model."""
    from transformers import set_seed

    from ..data import get_dataset, get_template
    from ..model import load_tokenizer
    from ..model.tokenizer import resolve_model_paths

    stage = STAGES[cfg.finetuning.stage]  # the config parser accepts only registered stages
    module = importlib.import_module(stage.module)
    if hasattr(module, "check"):  # stage checks run before any model or data loads
        module.check(cfg)
    if stage.name == "sft" and cfg.training.do_predict:
        from ..eval.metrics import parse_metrics

        parse_metrics(cfg.finetuning.eval_metrics)
    training = cfg.training
    resolve_model_paths(cfg.model)  # before the run folder is compared: an adapter given as the model
    if training.do_train and check_run_folder(cfg):
        logger.warning("%s already holds this run, finished: nothing to train (set `overwrite_output_dir: true` "
                       "to train it again).", training.output_dir)
        return RunResult(json.loads((Path(training.output_dir) / "all_results.json").read_text()), None)
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template, tokenizer, default_system=cfg.data.default_system,
                            enable_thinking=cfg.data.enable_thinking, tool_format=cfg.data.tool_format,
                            preserve_thinking=cfg.data.preserve_thinking)
    if hasattr(template, "to_jinja"):  # every saved tokenizer renders what training sees
        tokenizer.chat_template = template.to_jinja(tokenizer)
    predict = stage.name == "sft" and training.do_predict
    if predict and not training.predict_with_generate:
        raise ConfigError("`do_predict` for stage sft generates answers: set `predict_with_generate: true`.")
    if predict and not training.do_train:
        return _predict_only(cfg)
    resume = None if stage.online else resume_checkpoint(cfg)  # online stages keep their own checkpoints
    if training.process_index == 0:
        write_run_config(cfg, cfg.data.template)
    set_seed(training.seed)  # adapter initialisation is reproducible too
    with training.main_process_first(desc="tokenising the data"):
        data = get_dataset(cfg.data, stage.name, tokenizer, template, seed=training.data_seed or training.seed)
    if data.report.counts:
        logger.warning("Rows skipped while preparing the data:\n%s", data.report.summary())
    result = RunResult(*module.run(cfg, tokenizer, template, data, resume))
    if predict and training.process_index == 0 and "stopped_at_step" not in result.metrics:  # not after a Stop
        from ..eval.predict import run_predict

        result.metrics.update(run_predict(cfg, result.model, tokenizer, template))
    return result


def _predict_only(cfg) -> RunResult:
    """`do_predict` without `do_train`: the model (+ adapters) as it is, with the template it was
    trained with unless `template` is given, answering the eval data."""
    from ..eval.predict import run_predict
    from ..model.run_loader import load_inference_model

    loaded = load_inference_model(cfg)
    return RunResult(run_predict(cfg, loaded.model, loaded.tokenizer, loaded.template), loaded.model)
