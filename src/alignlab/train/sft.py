"""Stage sft (and the shared loop of pt): causal-LM loss on the labelled tokens."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..data import IGNORE_INDEX, SupervisedCollator
from ..model.adapter import init_adapter
from ..model.loader import load_model
from .callbacks import LogCallback
from .trainer import AlignTrainer, causal_lm, fit, labelled_logits, trainer_args

logger = logging.getLogger(__name__)


def token_accuracy(eval_pred) -> dict[str, float]:
    """Share of labelled next tokens predicted exactly (greedy), over the eval set."""
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    preds, labels = preds[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    return {"accuracy": float((preds[mask] == labels[mask]).mean()) if mask.any() else 0.0}


def _argmax_logits(logits, labels):
    return logits.argmax(dim=-1)


class SFTTrainer(AlignTrainer):
    """The causal-LM loss over labelled tokens, with the head computed where a label is (`labelled_logits`):
    the same sum of token cross-entropies over `num_items_in_batch` as the model's own loss. Evaluation
    that needs the logits (accuracy) and label smoothing take the Trainer's own path."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or self.label_smoother is not None or not isinstance(
                getattr(causal_lm(model), "lm_head", None), torch.nn.Module):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        targets = inputs["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        with labelled_logits(model, inputs["labels"]):
            logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
        if num_items_in_batch is None or not self.model_accepts_loss_kwargs:  # the Trainer divides by accumulation
            return loss / keep.sum().clamp(min=1)
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as the Trainer scales the model's own loss
        return loss


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
    trainer = SFTTrainer(
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
