"""The Trainer every offline stage builds on: HF Trainer plus a non-finite-loss guard, LoRA+
optimiser groups and optional in-order sampling."""

from __future__ import annotations

import copy
import logging
import os
from contextlib import contextmanager

import torch
from transformers import Trainer

from ..errors import UserError
from .losses import IGNORE_INDEX


class LabelledHead(torch.nn.Module):
    """The LM head on the positions that predict a labelled token only: (B, T, H) -> (N, V) for the N
    positions whose next token is labelled. Prompt and padding positions never reach the head (on the
    tiny model 14% of a forward's multiply-adds are the head; on Qwen3-0.6B about a quarter)."""

    def __init__(self, head, keep: torch.Tensor):
        super().__init__()
        self.head, self.keep = head, keep

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden[:, :-1][self.keep])


def causal_lm(model):
    """The causal LM inside DDP and PEFT wrappers (the module that owns `lm_head`)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def labelled_logits(model, labels: torch.Tensor):
    """Within, `model`'s forward returns logits (N, V) for the N positions whose next token is labelled
    (row-major, as `labels[:, 1:] != IGNORE_INDEX` selects them) instead of (B, T, V); a model without an
    `lm_head` module is left as it is (its logits stay (B, T, V): the losses accept both)."""
    causal = causal_lm(model)
    head = getattr(causal, "lm_head", None)
    if not isinstance(head, torch.nn.Module):
        yield
        return
    causal.lm_head = LabelledHead(head, labels[:, 1:] != IGNORE_INDEX)
    try:
        yield
    finally:
        causal.lm_head = head


def trainer_args(training):
    """The run's TrainingArguments as our trainers need them (columns kept: the collators read them),
    without changing the config's own object."""
    args = copy.copy(training)
    args.remove_unused_columns = False
    return args


def fit(trainer, eval_dataset, resume: str | None, plot_keys: list[str], judge_eval=None) -> dict:
    """What every offline stage does with its trainer: train (saving model, metrics and state), then
    evaluate, as the training arguments ask; `judge_eval(metrics)` may add to the eval metrics before
    they are logged; curves are plotted with `plot_loss`. Returns train and eval metrics."""
    from .plots import plot_metrics

    args, metrics, f = trainer.args, {}, trainer.finetuning_args
    if f.early_stopping_steps is not None:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=f.early_stopping_steps))
    if args.do_train:
        from .callbacks import StopCallback, StopSignal

        with StopSignal() as stop:
            trainer.add_callback(StopCallback(stop))
            result = trainer.train(resume_from_checkpoint=resume)
        if stop.requested and trainer.state.global_step < trainer.state.max_steps:
            logging.getLogger(__name__).warning(
                "Stopped at step %d of %d; checkpoint-%d is saved: run the same command again to resume.",
                trainer.state.global_step, trainer.state.max_steps, trainer.state.global_step)
            return {"stopped_at_step": trainer.state.global_step}
        if f.include_effective_tokens_per_second and result.metrics.get("train_runtime"):
            data = trainer.train_dataset
            columns = [c for c in ("input_ids", "chosen_input_ids", "rejected_input_ids") if c in data.column_names]
            tokens = sum(len(ids) for col in columns for ids in data[col])
            result.metrics["effective_tokens_per_sec"] = round(
                tokens * trainer.state.epoch / result.metrics["train_runtime"], 2)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics.update(result.metrics)
    if args.do_eval and eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        if judge_eval is not None:
            judge_eval(eval_metrics)
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if trainer.finetuning_args.plot_loss and trainer.is_world_process_zero():
        plot_metrics(args.output_dir, plot_keys)
    return metrics


class NonFiniteLossError(RuntimeError, UserError):
    """The loss became NaN/inf; training stops and the last checkpoint stays usable."""


class CheckpointSaveError(RuntimeError, UserError):
    """A checkpoint could not be written (e.g. a full disk); the half-written one is removed."""


def is_write_error(error: Exception) -> bool:
    """OSError, or torch.save's RuntimeError from its zip writer (how a full disk shows up there)."""
    return isinstance(error, OSError) or "inline_container" in str(error) or "write" in str(error).lower()


def saving_failed(error: Exception, partial: str, output_dir: str) -> CheckpointSaveError:
    """Remove the half-written `partial` folder; the error names the cause and the last good checkpoint."""
    import shutil

    from transformers.trainer_utils import get_last_checkpoint

    shutil.rmtree(partial, ignore_errors=True)
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    return CheckpointSaveError(
        f"Could not save {os.path.basename(partial)} ({getattr(error, 'strerror', None) or error}; is the disk "
        "full?); it was removed and the last "
        f"complete checkpoint is {os.path.basename(last) if last else 'none'} in {output_dir}. Free disk space "
        "(or raise `save_steps`, set `save_total_limit`) and run the same command again to resume.")


class AlignTrainer(Trainer):
    def __init__(self, *args, finetuning_args=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.finetuning_args = finetuning_args
        self._guarded = None  # the trainable parameters the non-finite guard checks, listed at the first step

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as e:
            if not is_write_error(e):
                raise
            raise saving_failed(e, folder, self.args.output_dir) from None

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Forward and backward as usual, then refuse to continue when the loss or any gradient is
        NaN/inf: the optimiser step has not run yet, so weights and checkpoints stay finite."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._guarded is None:  # walking every module each step costs ~2% of a tiny step
            self._guarded = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad for p in self._guarded if p.grad is not None]
        what = None
        if not torch.isfinite(loss).all():
            what = f"The training loss is {loss.item()}"
        elif grads and not torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
            what = f"A gradient is not finite (loss {loss.item():.4g})"
        if what:
            from transformers.trainer_utils import get_last_checkpoint

            last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
            raise NonFiniteLossError(
                f"{what} at step {self.state.global_step + 1}; stopping before the update. Last checkpoint: "
                f"{os.path.basename(last) if last else 'none yet'} in {self.args.output_dir}. Lower "
                "`learning_rate`, enable `max_grad_norm`, or check the data.")
        return loss

    def _get_train_sampler(self, *args, **kwargs):
        if self.finetuning_args is not None and self.finetuning_args.disable_shuffling:
            return torch.utils.data.SequentialSampler(self.train_dataset)
        return super()._get_train_sampler(*args, **kwargs)

    def create_optimizer(self):
        ratio = getattr(self.finetuning_args, "loraplus_lr_ratio", None)
        if self.optimizer is not None or not ratio:
            return super().create_optimizer()
        lr = self.args.learning_rate
        decay = set(self.get_decay_parameter_names(self.model))
        groups: dict[tuple[float, float], list] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if "lora_embedding" in name:
                group_lr = self.finetuning_args.loraplus_lr_embedding
            elif "lora_B" in name or param.ndim == 1 and "lora" in name:
                group_lr = lr * ratio
            else:
                group_lr = lr
            wd = self.args.weight_decay if name in decay else 0.0
            groups.setdefault((group_lr, wd), []).append(param)
        optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optim_cls(
            [{"params": p, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), p in groups.items()], **optim_kwargs)
        return self.optimizer


class MetricTrainer(AlignTrainer):
    """Trainers whose loss also yields metrics (rm, dpo, kto): metrics are averaged between logging
    steps (weighted by pairs) and logged beside the loss, with `eval_` in front during evaluation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stored: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}
        # These losses are means over the micro-batch, not sums over `num_items_in_batch`: the Trainer
        # must divide them by the accumulation steps (it skips that for models taking loss kwargs).
        self.model_accepts_loss_kwargs = False

    def store_metrics(self, metrics: dict, weight: int) -> None:
        split = self._stored["train" if self.model.training else "eval"]
        for key, value in metrics.items():
            total = split.setdefault(key, [0.0, 0.0])
            total[0] += float(value.detach() if torch.is_tensor(value) else value) * weight
            total[1] += weight

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Every process's stored metrics summed (a key some process lacks counts there with weight 0),
        so the logged values are those of the whole batch, as with one process."""
        split = "eval" if "eval_loss" in logs else "train"
        prefix = "eval_" if split == "eval" else ""
        stored = self._stored[split]
        if self.args.world_size > 1:
            import torch.distributed as dist

            every = [None] * self.args.world_size
            dist.all_gather_object(every, stored)
            stored = {}
            for part in every:
                for key, (total, weight) in part.items():
                    summed = stored.setdefault(key, [0.0, 0.0])
                    summed[0] += total
                    summed[1] += weight
        for key, (total, weight) in stored.items():
            if weight:
                logs[prefix + key] = total / weight
        self._stored[split] = {}
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
