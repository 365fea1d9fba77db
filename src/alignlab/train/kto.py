"""Stage kto: single answers tagged desirable or not, against a KL baseline from mismatched pairs
(each prompt with the next example's answer). The reference log-probs are precomputed as in dpo."""

from __future__ import annotations

import torch

from ..data import FeedbackCollator
from .losses import kto_loss, sequence_logps
from .reference import precompute, reference_of, reference_trainer
from .trainer import MetricTrainer, fit, labelled_logits


class KTOTrainer(MetricTrainer):
    def __init__(self, *args, reference=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference = reference

    @staticmethod
    def answer_logps(model, batch):
        """(answer, KL) sequence log-probs and the answers' per-token means. The batch holds B answer rows
        then B mismatched (KL) rows; the KL rows go through a forward without gradient of their own: the
        loss uses their log-probs detached, so a shared forward would only double the backward pass."""
        half = len(batch["input_ids"]) // 2

        def logps_of(rows: slice):  # each half cut to its own longest row (the collator pads on the right)
            mask = batch["attention_mask"][rows]
            width = int(mask.sum(-1).max())
            labels = batch["labels"][rows, :width]
            with labelled_logits(model, labels):  # (N, V): the head runs on answer positions only
                logits = model(input_ids=batch["input_ids"][rows, :width], attention_mask=mask[:, :width]).logits
            return sequence_logps(logits, labels)

        logps, valid = logps_of(slice(0, half))
        with torch.no_grad():
            kl_logps, _ = logps_of(slice(half, None))
        return (logps, kl_logps), (logps / valid.clamp(min=1), None)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        (logps, kl_logps), (means, _) = self.answer_logps(model, inputs)
        if "ref_logps" in inputs:
            ref_logps, ref_kl = inputs["ref_logps"].to(logps.dtype), inputs["ref_kl_logps"].to(logps.dtype)
        else:
            with reference_of(self.model, self.reference) as ref:
                (ref_logps, ref_kl), _ = self.answer_logps(ref, inputs)
        tags = inputs["kto_tags"]
        f = self.finetuning_args
        loss, metrics = kto_loss(logps[tags], logps[~tags], kl_logps, ref_logps[tags], ref_logps[~tags], ref_kl,
                                 f.pref_beta, f.kto_chosen_weight, f.kto_rejected_weight)
        if f.pref_ftx > 0 and tags.any():
            sft = -means[tags].mean()
            loss = loss + f.pref_ftx * sft
            metrics["sft_loss"] = sft.detach()
        self.store_metrics(metrics, weight=len(tags))
        return (loss, metrics) if return_outputs else loss

    def precompute_reference(self) -> None:
        def compute(ref, batch):
            (logps, kl_logps), _ = self.answer_logps(ref, batch)
            return logps, kl_logps

        size = self.args.per_device_eval_batch_size
        self.train_dataset = precompute(self, self.train_dataset, compute, ("ref_logps", "ref_kl_logps"), size)
        self.eval_dataset = precompute(self, self.eval_dataset, compute, ("ref_logps", "ref_kl_logps"), size)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    trainer = reference_trainer(KTOTrainer, cfg, tokenizer, data, FeedbackCollator(tokenizer.pad_token_id))
    metrics = fit(trainer, data.eval, resume, ["loss", "rewards/margins", "kl", "eval_loss"])
    return metrics, trainer.model
