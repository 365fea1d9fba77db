"""Stage dpo: preference optimisation from chosen/rejected pairs.

`pref_loss` names a row of config/stages.py's PREFERENCE_LOSSES: sigmoid (DPO, with
`dpo_label_smoothing`), hinge, ipo, kto_pair, bco_pair, orpo and simpo (these two need no reference).
Chosen and rejected rows go through the policy in one concatenated forward.
The reference log-probs are computed once before training and stored in the data
(`precompute_ref_logps`, default true), so each step runs the policy only.
"""

from __future__ import annotations

import logging

import torch

from ..config.stages import PREFERENCE_LOSSES
from ..data import PairwiseCollator
from . import losses
from .losses import per_position, sequence_logps
from .reference import precompute, reference_of, reference_trainer
from .trainer import MetricTrainer, fit, labelled_logits

logger = logging.getLogger(__name__)


class PreferenceTrainer(MetricTrainer):
    def __init__(self, *args, reference=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference = reference
        f = self.finetuning_args
        self.spec = PREFERENCE_LOSSES[f.pref_loss]
        self.loss_fn = getattr(losses, self.spec.fn)
        self.settings = {"beta": f.pref_beta, "label_smoothing": f.dpo_label_smoothing, "gamma": f.simpo_gamma}
        self.loss_state: dict = {}  # running statistics a loss carries between batches (bco_pair's mean)

    def pair_logps(self, model, batch):
        """(chosen, rejected) sequence log-probs, their per-token means, and the mean logit of the chosen
        and of the rejected answers, from one forward pass over the 2B rows."""
        labels = batch["labels"]
        with labelled_logits(model, labels):  # (N, V): the head runs on answer positions only
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ld_alpha = self.finetuning_args.ld_alpha
        public_len = None
        if ld_alpha is not None:
            valid = (labels[:, 1:] != -100).sum(-1)
            public_len = torch.minimum(*valid.chunk(2)).repeat(2)
        logps, valid = sequence_logps(logits, labels, average=False, ld_alpha=ld_alpha, public_len=public_len)
        means = logps / valid.clamp(min=1)
        answer = labels[:, 1:] != losses.IGNORE_INDEX  # each answer's mean logit, then the mean over answers:
        mean_logit = per_position(logits.detach(), answer, lambda x, _: x.float().mean(-1, keepdim=True), labels[:, 1:])
        per_row = mean_logit.sum(-1) / answer.sum(-1).clamp(min=1)
        chosen_logits, rejected_logits = per_row.chunk(2)  # padding and batch make-up change nothing
        return logps.chunk(2), means.chunk(2), (chosen_logits.mean(), rejected_logits.mean())

    def reference_logps(self, batch):
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        with reference_of(self.model, self.reference) as ref:
            (c, r), (c_mean, r_mean), _ = self.pair_logps(ref, batch)
        return (c_mean, r_mean) if self.spec.length_averaged else (c, r)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        (chosen, rejected), (chosen_mean, rejected_mean), (chosen_logits, rejected_logits) = \
            self.pair_logps(model, inputs)
        f = self.finetuning_args
        policy = (chosen_mean, rejected_mean) if self.spec.length_averaged else (chosen, rejected)
        refs = [r.to(chosen.dtype) for r in self.reference_logps(inputs)] if self.spec.needs_reference else []
        loss, metrics = self.loss_fn(*policy, *refs, **self.settings, **self.loss_state)
        self.loss_state.update({k.removeprefix("state/"): metrics.pop(k) for k in list(metrics)
                                if k.startswith("state/")})
        if f.pref_ftx > 0 and not self.spec.sft_term:
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
            return (c_mean, r_mean) if self.spec.length_averaged else (c, r)

        columns = ("ref_chosen_logps", "ref_rejected_logps")
        size = self.args.per_device_eval_batch_size
        self.train_dataset = precompute(self, self.train_dataset, compute, columns, size)
        self.eval_dataset = precompute(self, self.eval_dataset, compute, columns, size)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    needs_reference = PREFERENCE_LOSSES[cfg.finetuning.pref_loss].needs_reference
    trainer = reference_trainer(PreferenceTrainer, cfg, tokenizer, data, PairwiseCollator(tokenizer.pad_token_id),
                                needs_reference)
    metrics = fit(trainer, data.eval, resume, ["loss", "rewards/accuracies", "eval_loss", "eval_rewards/accuracies"])
    return metrics, trainer.model
