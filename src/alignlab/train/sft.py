"""Stage sft (and the shared loop of pt): causal-LM loss on the labelled tokens."""

from __future__ import annotations

import logging

import numpy as np

from ..data import IGNORE_INDEX, SupervisedCollator
from ..model.adapter import init_adapter
from ..model.loader import load_model
from .callbacks import LogCallback
from .trainer import AlignTrainer, fit, trainer_args

logger = logging.getLogger(__name__)


def token_accuracy(eval_pred) -> dict[str, float]:
    """Share of labelled next tokens predicted exactly (greedy), over the eval set."""
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    preds, labels = preds[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    return {"accuracy": float((preds[mask] == labels[mask]).mean()) if mask.any() else 0.0}


def _argmax_logits(logits, labels):
    return logits.argmax(dim=-1)


def build_model(cfg, tokenizer):
    model = load_model(tokenizer, cfg.model, cfg.finetuning, cfg.training, is_trainable=True,
                       cutoff_len=cfg.data.cutoff_len)
    return init_adapter(model, cfg.model, cfg.finetuning, is_trainable=True)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    training = cfg.training
    model = build_model(cfg, tokenizer)
    model.generation_config.eos_token_id = template.stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    collator = SupervisedCollator(tokenizer.pad_token_id, neat_packing=cfg.data.neat_packing)
    accuracy = cfg.finetuning.compute_accuracy and data.eval is not None
    trainer = AlignTrainer(
        model=model, args=trainer_args(training), data_collator=collator, train_dataset=data.train,
        eval_dataset=data.eval if training.do_eval or training.eval_strategy != "no" else None,
        processing_class=tokenizer, callbacks=[LogCallback(training.output_dir)],
        compute_metrics=token_accuracy if accuracy else None,
        preprocess_logits_for_metrics=_argmax_logits if accuracy else None,
        finetuning_args=cfg.finetuning,
    )
    def add_perplexity(eval_metrics: dict) -> None:
        if "eval_loss" in eval_metrics:
            eval_metrics["perplexity"] = float(np.exp(min(eval_metrics["eval_loss"], 50)))

    metrics = fit(trainer, data.eval, resume, ["loss", "eval_loss", "eval_accuracy"], add_perplexity)
    return metrics, trainer.model
