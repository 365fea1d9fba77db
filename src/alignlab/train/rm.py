"""Stage rm: a scalar value head learns which answer of a pair people prefer.

Loss -log sigmoid(r_chosen - r_rejected) on the score at the last non-padding token; metrics
accuracy and rewards/{chosen,rejected,margins}. The run saves the backbone (adapter or model),
`value_head.safetensors` and the tokenizer, and records whether the held-out accuracy reaches
`rm_min_accuracy` (`rm_ready` in all_results.json).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import ConfigError
from ..data import PairwiseCollator
from ..model.value_head import ValueHeadModel
from .callbacks import LogCallback
from .losses import pairwise_reward_loss
from .sft import build_model
from .trainer import MetricTrainer, fit, trainer_args

logger = logging.getLogger(__name__)


class RewardTrainer(MetricTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = model.scores(inputs["input_ids"], inputs["attention_mask"])
        chosen, rejected = scores.chunk(2)
        loss, metrics = pairwise_reward_loss(chosen, rejected)
        self.store_metrics(metrics, weight=len(chosen))
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.model.backbone.save_pretrained(output_dir)
        self.model.save_head(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.model
        model.load_head(resume_from_checkpoint)
        path = Path(resume_from_checkpoint)
        if (path / "adapter_model.safetensors").is_file():
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(model.backbone, load_file(str(path / "adapter_model.safetensors")))
        else:
            model.backbone.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)


@torch.no_grad()
def predict_scores(model, dataset, collator, batch_size: int, path: Path, device) -> None:
    """Per-pair scores, one JSON line each, written as they are computed."""
    from torch.utils.data import DataLoader

    model.eval()
    with path.open("w", encoding="utf-8") as f:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
            scores = model.scores(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            for chosen, rejected in zip(*scores.chunk(2)):
                f.write(json.dumps({"chosen": round(chosen.item(), 6), "rejected": round(rejected.item(), 6)}) + "\n")
                f.flush()


def check(cfg) -> None:
    """What must hold before any model loads: predictions need held-out pairs."""
    if cfg.training.do_predict and not (cfg.data.eval_dataset or cfg.data.val_size):
        raise ConfigError("`do_predict` scores the eval pairs: set `eval_dataset` or `val_size`.")


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    training = cfg.training
    model = ValueHeadModel(build_model(cfg, tokenizer))
    collator = PairwiseCollator(tokenizer.pad_token_id)
    trainer = RewardTrainer(
        model=model, args=trainer_args(training), data_collator=collator, train_dataset=data.train,
        eval_dataset=data.eval, processing_class=tokenizer, callbacks=[LogCallback(training.output_dir)],
        finetuning_args=cfg.finetuning,
    )
    def judge(eval_metrics: dict) -> None:
        accuracy = eval_metrics.get("eval_accuracy", 0.0)
        eval_metrics["rm_ready"] = accuracy >= cfg.finetuning.rm_min_accuracy
        message = (f"Reward model held-out accuracy {accuracy:.3f} "
                   f"({'>=' if eval_metrics['rm_ready'] else 'below'} rm_min_accuracy "
                   f"{cfg.finetuning.rm_min_accuracy})")
        if eval_metrics["rm_ready"]:
            logger.info("%s: ready.", message)
        else:
            logger.warning("%s: NOT ready; more data, epochs or a larger model are needed before using it "
                           "as a reward.", message)

    metrics = fit(trainer, data.eval, resume, ["loss", "eval_loss", "eval_accuracy", "accuracy"], judge)
    if training.do_predict and "stopped_at_step" not in metrics:
        if trainer.is_world_process_zero():
            predict_scores(model, data.eval, collator, training.per_device_eval_batch_size,
                           Path(training.output_dir) / "generated_predictions.jsonl", training.device)
    return metrics, model
