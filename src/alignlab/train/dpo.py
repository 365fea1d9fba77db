"""Stage dpo: preference optimisation from chosen/rejected pairs.

`pref_loss`: sigmoid (DPO, with `dpo_label_smoothing`), hinge, ipo, orpo and simpo (these two
need no reference). Chosen and rejected rows go through the policy in one concatenated forward.
The reference log-probs are computed once before training and stored in the data
(`precompute_ref_logps`, default true), so each step runs the policy only.
"""

from __future__ import annotations

import logging

import torch

from ..data import PairwiseCollator
from .callbacks import LogCallback
from .losses import dpo_loss, orpo_loss, sequence_logps, simpo_loss
from .reference import load_reference, precompute, reference_of
from .sft import build_model
from .trainer import MetricTrainer, fit

logger = logging.getLogger(__name__)
NO_REFERENCE = ("orpo", "simpo")
AVERAGED = ("ipo", "orpo", "simpo")  # losses defined on mean per-token log-probs


class PreferenceTrainer(MetricTrainer):
    def __init__(self, *args, reference=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference = reference
        f = self.finetuning_args
        self.loss_type, self.beta = f.pref_loss, f.pref_beta

    def pair_logps(self, model, batch):
        """(chosen, rejected) sequence log-probs, their per-token means, and the mean logits of each
        half, from one forward pass over the 2B rows."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        ld_alpha = self.finetuning_args.ld_alpha
        public_len = None
        if ld_alpha is not None:
            valid = (labels[:, 1:] != -100).sum(-1)
            public_len = torch.minimum(*valid.chunk(2)).repeat(2)
        logps, valid = sequence_logps(logits, labels, average=False, ld_alpha=ld_alpha, public_len=public_len)
        means = logps / valid.clamp(min=1)
        chosen_logits, rejected_logits = logits.detach().chunk(2)
        return logps.chunk(2), means.chunk(2), (chosen_logits.mean(), rejected_logits.mean())

    def reference_logps(self, batch):
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        with reference_of(self.model, self.reference) as ref:
            (c, r), (c_mean, r_mean), _ = self.pair_logps(ref, batch)
        return (c_mean, r_mean) if self.loss_type in AVERAGED else (c, r)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        (chosen, rejected), (chosen_mean, rejected_mean), (chosen_logits, rejected_logits) = \
            self.pair_logps(model, inputs)
        f = self.finetuning_args
        if self.loss_type == "orpo":
            loss, metrics = orpo_loss(chosen_mean, rejected_mean, self.beta)
        elif self.loss_type == "simpo":
            loss, metrics = simpo_loss(chosen_mean, rejected_mean, self.beta, f.simpo_gamma)
        else:
            ref_chosen, ref_rejected = self.reference_logps(inputs)
            policy = (chosen_mean, rejected_mean) if self.loss_type in AVERAGED else (chosen, rejected)
            loss, metrics = dpo_loss(*policy, ref_chosen.to(chosen.dtype), ref_rejected.to(chosen.dtype),
                                     self.beta, self.loss_type, f.dpo_label_smoothing)
        if f.pref_ftx > 0 and self.loss_type != "orpo":
            sft = -chosen_mean.mean()
            loss = loss + f.pref_ftx * sft
            metrics["sft_loss"] = sft.detach()
        metrics.update({"logps/chosen": chosen.detach().mean(), "logps/rejected": rejected.detach().mean(),
                        "logits/chosen": chosen_logits, "logits/rejected": rejected_logits})
        self.store_metrics(metrics, weight=len(chosen))
        return (loss, metrics) if return_outputs else loss

    def precompute_reference(self) -> None:
        def compute(ref, batch):
            (c, r), (c_mean, r_mean), _ = self.pair_logps(ref, batch)
            return (c_mean, r_mean) if self.loss_type in AVERAGED else (c, r)

        columns = ("ref_chosen_logps", "ref_rejected_logps")
        size = self.args.per_device_eval_batch_size
        self.train_dataset = precompute(self, self.train_dataset, compute, columns, size)
        self.eval_dataset = precompute(self, self.eval_dataset, compute, columns, size)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    training = cfg.training
    training.remove_unused_columns = False
    f = cfg.finetuning
    model = build_model(cfg, tokenizer)
    reference = None if f.pref_loss in NO_REFERENCE else load_reference(cfg, tokenizer)
    trainer = PreferenceTrainer(
        model=model, args=training, data_collator=PairwiseCollator(tokenizer.pad_token_id),
        train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer,
        callbacks=[LogCallback(training.output_dir)], finetuning_args=f, reference=reference,
    )
    if reference is not None:
        reference.to(training.device)
    if f.precompute_ref_logps and f.pref_loss not in NO_REFERENCE:
        trainer.precompute_reference()
        trainer.reference = reference = None  # every batch now carries its reference log-probs
    metrics = fit(trainer, data.eval, resume, ["loss", "rewards/accuracies", "eval_loss", "eval_rewards/accuracies"])
    return metrics, trainer.model
