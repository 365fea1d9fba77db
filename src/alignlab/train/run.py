"""`alignlab train`: resolve the run directory, tokenizer, template and data, then hand over to
the stage module."""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

STAGES = ("pt", "sft", "rm", "dpo", "kto", "ppo", "grpo")


def write_run_config(cfg, template_name: str | None) -> None:
    """`run_config.yaml`: the resolved config with the template, written atomically."""
    resolved = {k: v.value if isinstance(v, enum.Enum) else v for k, v in cfg.resolved.items()}
    resolved.update({"stage": cfg.finetuning.stage, "template": template_name,
                     "finetuning_type": cfg.finetuning.finetuning_type,
                     "cutoff_len": cfg.data.cutoff_len, "enable_thinking": cfg.data.enable_thinking})
    if cfg.data.default_system is not None:
        resolved["default_system"] = cfg.data.default_system
    out = Path(cfg.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".run_config", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(resolved, f, allow_unicode=True, sort_keys=False)
    os.replace(tmp, out / "run_config.yaml")


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

    stage = cfg.finetuning.stage
    if stage not in STAGES:
        raise NotImplementedError(f"stage {stage!r} is not available yet in this version; available: "
                                  f"{', '.join(STAGES)}.")
    training = cfg.training
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template, tokenizer, default_system=cfg.data.default_system,
                            enable_thinking=cfg.data.enable_thinking, tool_format=cfg.data.tool_format)
    if hasattr(template, "to_jinja"):  # every saved tokenizer renders what training sees
        tokenizer.chat_template = template.to_jinja(tokenizer)
    # online stages (ppo, grpo) keep their own checkpoint format and resume logic
    predict = stage == "sft" and training.do_predict
    if predict and not training.predict_with_generate:
        from ..config import ConfigError

        raise ConfigError("`do_predict` for stage sft generates answers: set `predict_with_generate: true`.")
    if predict and not training.do_train:
        return _predict_only(cfg)
    resume = resume_checkpoint(cfg) if stage not in ("ppo", "grpo") else None
    if training.process_index == 0:
        write_run_config(cfg, cfg.data.template)
    set_seed(training.seed)  # adapter initialisation is reproducible too
    with training.main_process_first(desc="tokenising the data"):
        data = get_dataset(cfg.data, stage, tokenizer, template, seed=training.data_seed or training.seed)
    if data.report.counts:
        logger.warning("Rows skipped while preparing the data:\n%s", data.report.summary())
    from . import dpo, grpo, kto, ppo, pt, rm, sft

    module = {"pt": pt, "sft": sft, "rm": rm, "dpo": dpo, "kto": kto, "ppo": ppo, "grpo": grpo}[stage]
    result = RunResult(*module.run(cfg, tokenizer, template, data, resume))
    if predict and training.process_index == 0:
        from ..eval.predict import run_predict

        result.metrics.update(run_predict(cfg, result.model, tokenizer, template))
    return result


def _predict_only(cfg) -> RunResult:
    """`do_predict` without `do_train`: the model (+ adapters) as it is, with the template it was
    trained with unless `template` is given, answering the eval data."""
    from ..eval.predict import run_predict
    from ..infer.engine import load_inference_model

    loaded = load_inference_model(cfg)
    return RunResult(run_predict(cfg, loaded.model, loaded.tokenizer, loaded.template), loaded.model)
