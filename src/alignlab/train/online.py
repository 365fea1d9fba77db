"""The explicit rollout -> score -> learn loop shared by ppo and grpo.

One batched, KV-cached generation per rollout (left padding); old log-probs, reference log-probs and
values computed once per rollout; the stage's `learn` runs `ppo_epochs` passes over mini-batches.
Checkpoints (`checkpoint-N/`) hold the policy, value head, optimiser, scheduler, stage state (KL
controller) and RNG, written to a temporary folder and renamed, so a killed run resumes exactly
where its last checkpoint was taken.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.collate import pad_rows
from ..errors import UserError
from .callbacks import LOG_NAME, StopSignal, hms, read_log
from .plots import plot_metrics
from .trainer import is_write_error, saving_failed

logger = logging.getLogger(__name__)


@dataclass
class Rollout:
    sequences: torch.Tensor  # (N, P + R) left-padded prompts then responses
    attention_mask: torch.Tensor
    response_mask: torch.Tensor  # (N, R): tokens up to and including the first stop token
    prompt_len: int
    prompts: list[str]
    completions: list[str]
    messages: list[list[dict]]
    systems: list[str]
    rows: list[dict]
    lengths: list[int]
    stats: dict = field(default_factory=dict)

    def select(self, idx: torch.Tensor) -> Rollout:
        """The tensors of a subset of the sequences (for mini-batches)."""
        return Rollout(self.sequences[idx], self.attention_mask[idx], self.response_mask[idx], self.prompt_len,
                       [], [], [], [], [], [])

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class NonFiniteError(RuntimeError, UserError):
    """A reward or loss became NaN/inf."""


def response_logps(model, rollout: Rollout, sequences=None, with_hidden: bool = False):
    """Log-probs of the response tokens (N, R) (+ entropy and last hidden states when asked)."""
    sequences = rollout.sequences if sequences is None else sequences
    out = model(input_ids=sequences, attention_mask=rollout.attention_mask, position_ids=rollout.position_ids,
                output_hidden_states=with_hidden)
    p = rollout.prompt_len
    logits = out.logits[:, p - 1:-1].float()
    targets = sequences[:, p:]
    logps = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(2)).squeeze(2)
    if not with_hidden:
        return logps
    probs = logits.softmax(-1)
    entropy = -(probs * logits.log_softmax(-1)).sum(-1)
    return logps, entropy, out.hidden_states[-1][:, p - 1:-1]


def generation_kwargs(gen) -> dict:
    """Sampling keys from the generating arguments (top_k 0 = no top-k)."""
    return {"temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k or None,
            "max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty}


def minibatches(n: int, count: int, device) -> list[torch.Tensor]:
    order = torch.randperm(n, device=device)
    size = max(1, math.ceil(n / max(count, 1)))
    return [order[i:i + size] for i in range(0, n, size)]


@torch.no_grad()
def generate_rollout(model, tokenizer, template, batch: list[dict], gen_kwargs: dict, num_samples: int,
                     device) -> Rollout:
    """Sample `num_samples` completions per prompt in one batched generate call."""
    prompts = [list(row["input_ids"]) for row in batch]
    pad = tokenizer.pad_token_id
    ids, mask = pad_rows(prompts, pad, device=device)
    width = ids.shape[1]
    stop = template.stop_token_ids(tokenizer)
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, num_return_sequences=num_samples,
                         eos_token_id=stop, pad_token_id=pad, use_cache=True, **gen_kwargs)
    model.train(was_training)
    response = out[:, width:]
    is_stop = torch.isin(response, torch.tensor(stop, device=device))
    after_stop = (is_stop.long().cumsum(-1) - is_stop.long()) > 0  # strictly after the first stop token
    response_mask = ~after_stop
    response = response.masked_fill(~response_mask, pad)
    sequences = torch.cat([ids.repeat_interleave(num_samples, 0), response], dim=1)
    attention_mask = torch.cat([mask.repeat_interleave(num_samples, 0), response_mask.long()], dim=1)
    completions = tokenizer.batch_decode(response.masked_fill(~response_mask, pad), skip_special_tokens=True)
    repeat = lambda values: [v for v in values for _ in range(num_samples)]  # noqa: E731
    return Rollout(
        sequences=sequences, attention_mask=attention_mask, response_mask=response_mask, prompt_len=width,
        prompts=repeat([tokenizer.decode(p, skip_special_tokens=False) for p in prompts]),
        completions=completions,
        messages=repeat([json.loads(row["prompt_messages"]) for row in batch]),
        systems=repeat([row["system"] for row in batch]),
        rows=repeat([json.loads(row["extra"]) for row in batch]),
        lengths=response_mask.sum(-1).tolist(),
    )


@dataclass
class OnlineParts:
    """What one online step works with, built once by `prepare_online`."""

    model: object
    reference: object  # None: the policy with its adapter disabled
    reward: object  # rollout -> scores (N,)
    tokenizer: object
    template: object
    online: OnlineRun
    params: list  # what the optimiser updates
    gen_kwargs: dict
    finetuning: object
    device: object
    head: object = None  # ppo: the value head on the policy's last hidden state


def prepare_online(cfg, tokenizer, template, data, with_value_head: bool = False) -> OnlineParts:
    """Policy (+ value head), reference, reward source, optimiser and run state of an online stage."""
    from ..model.value_head import ValueHead
    from .reference import load_reference
    from .rewards import build_reward
    from .sft import build_model

    device = cfg.training.device
    model = build_model(cfg, tokenizer).to(device)
    head = ValueHead(model.config.hidden_size).to(device) if with_value_head else None
    reference = load_reference(cfg, tokenizer)
    if reference is not None:
        reference.to(device)
    reward = build_reward(cfg, tokenizer, template, device)
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    online = OnlineRun(cfg, model, params, data.train, extra_modules={"value_head": head} if head else None)
    return OnlineParts(model, reference, reward, tokenizer, template, online, params,
                       generation_kwargs(cfg.generating), cfg.finetuning, device, head)


PHASES = ("generate", "score", "logps", "learn")


def sample_and_score(parts: OnlineParts, batch: list[dict], num_samples: int):
    """(rollout, scores on the device, clock): `num_samples` completions per prompt, scored by the reward
    source; `clock` holds the start and the end of each phase so far (see PHASES and `phase_times`)."""
    clock = [time.perf_counter()]
    rollout = generate_rollout(parts.model, parts.tokenizer, parts.template, batch, parts.gen_kwargs,
                               num_samples, parts.device)
    clock.append(time.perf_counter())
    scores = parts.reward(rollout).to(parts.device)
    check_finite("The reward", scores, parts.online.step + 1)
    clock.append(time.perf_counter())
    return rollout, scores, clock


def phase_times(clock: list[float]) -> dict[str, float]:
    """Seconds spent in each phase of a step, as logged (`time/generate`, ...)."""
    return {f"time/{name}": clock[i + 1] - clock[i] for i, name in enumerate(PHASES)}


def check_finite(name: str, value: torch.Tensor, step: int) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteError(f"{name} is not finite at step {step}; stopping before the update. Lower "
                             "`learning_rate`, check the reward source, or resume from the last checkpoint.")


class OnlineRun:
    """Prompts, optimiser, scheduler, logging and checkpoints of an online stage."""

    def __init__(self, cfg, model, params: list, dataset, extra_modules: dict | None = None):
        from transformers import Trainer, get_scheduler

        self.cfg, self.args = cfg, cfg.training
        self.model, self.dataset = model, dataset
        self.extra_modules = extra_modules or {}  # modules with save(dir)/load(dir), e.g. the value head
        self.batch_size = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * \
            cfg.finetuning.ppo_buffer_size
        self.steps_per_epoch = max(1, len(dataset) // self.batch_size)
        self.max_steps = self.args.max_steps if self.args.max_steps > 0 else \
            math.ceil(self.args.num_train_epochs * self.steps_per_epoch)
        optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optim_cls([p for p in params if p.requires_grad], **optim_kwargs)
        warmup = self.args.get_warmup_steps(self.max_steps)
        self.scheduler = get_scheduler(self.args.lr_scheduler_type, self.optimizer, warmup, self.max_steps)
        self.step = 0
        self.state: dict = {}
        self.out = Path(self.args.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.start = time.time()

    def batches(self):
        """Prompt batches in a seeded order per epoch, from the current step on (resumable)."""
        while self.step < self.max_steps:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.args.seed + epoch))
            begin = offset * self.batch_size
            yield [self.dataset[int(i)] for i in order[begin:begin + self.batch_size]]

    def optimizer_step(self, loss: torch.Tensor, params) -> float:
        check_finite("The loss", loss.detach(), self.step + 1)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm or float("inf"))
        check_finite("The gradient norm", grad_norm, self.step + 1)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def log(self, metrics: dict) -> None:
        elapsed = time.time() - self.start
        done = max(self.step - self.start_step, 1)
        entry = {"current_steps": self.step, "total_steps": self.max_steps, "loss": metrics.pop("loss", None),
                 "lr": self.scheduler.get_last_lr()[0], "epoch": round(self.step / self.steps_per_epoch, 4),
                 "percentage": round(100 * self.step / self.max_steps, 2), "elapsed_time": hms(elapsed),
                 "remaining_time": hms(elapsed / done * (self.max_steps - self.step))}
        entry.update({k: round(float(v), 6) for k, v in metrics.items()})
        entry = {k: v for k, v in entry.items() if v is not None}
        with (self.out / LOG_NAME).open("a") as f:
            f.write(json.dumps(entry) + "\n")
        shown = {k: entry[k] for k in ("reward", "kl", "loss") if entry.get(k) is not None}
        print(f"[{self.step}/{self.max_steps}] " + " ".join(f"{k}={v:.4f}" for k, v in shown.items()) +
              f" elapsed {entry['elapsed_time']} ETA {entry['remaining_time']}", flush=True)

    # ---- checkpoints ------------------------------------------------------------------
    def save(self, target: Path) -> None:
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            self.model.save_pretrained(tmp)
            for module in self.extra_modules.values():
                module.save(tmp)
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "step": self.step, "state": self.state, "torch_rng": torch.get_rng_state(),
                        "python_rng": random.getstate(), "numpy_rng": np.random.get_state()}, tmp / "online_state.pt")
        except (OSError, RuntimeError) as e:
            if not is_write_error(e):
                raise
            raise saving_failed(e, str(tmp), str(self.out)) from None
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)

    def resume(self, checkpoint: Path) -> None:
        from safetensors.torch import load_file

        adapter = checkpoint / "adapter_model.safetensors"
        if adapter.is_file():
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(str(adapter)))
        else:
            self.model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
        for module in self.extra_modules.values():
            module.load(checkpoint)
        saved = torch.load(checkpoint / "online_state.pt", weights_only=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.step, self.state = saved["step"], saved["state"]
        torch.set_rng_state(saved["torch_rng"])
        random.setstate(saved["python_rng"])
        np.random.set_state(saved["numpy_rng"])
        kept = [e for e in read_log(str(self.out)) if e["current_steps"] <= self.step]
        (self.out / LOG_NAME).write_text("".join(json.dumps(e) + "\n" for e in kept))
        logger.warning("Resumed from %s at step %d.", checkpoint, self.step)

    def last_checkpoint(self) -> Path | None:
        if self.cfg.finetuning.overwrite_output_dir:
            for old in self.out.glob("checkpoint-*"):
                shutil.rmtree(old, ignore_errors=True)
            (self.out / LOG_NAME).unlink(missing_ok=True)
            return None
        done = [p for p in self.out.glob("checkpoint-*") if (p / "online_state.pt").is_file()
                and p.name.split("-")[-1].isdigit()]
        return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None

    def train(self, rollout_and_learn, tokenizer) -> dict:
        """Run `rollout_and_learn(batch) -> metrics` for every step, with checkpoints and logs; save the
        final policy, value head and tokenizer, the results and (with `plot_loss`) the curves."""
        checkpoint = self.last_checkpoint()
        if checkpoint:
            self.resume(checkpoint)
        elif not self.step:
            (self.out / LOG_NAME).write_text("")
        self.start_step = self.step
        with StopSignal() as stop:
            for batch in self.batches():
                metrics = rollout_and_learn(batch)
                self.scheduler.step()
                self.step += 1
                if self.step % max(int(self.args.logging_steps), 1) == 0 or self.step == self.max_steps:
                    self.log(metrics)
                saving = self.args.save_strategy != "no" and self.args.save_steps and \
                    self.step % int(self.args.save_steps) == 0
                if saving or stop.requested and self.step < self.max_steps:
                    self.save(self.out / f"checkpoint-{self.step}")
                if stop.requested and self.step < self.max_steps:
                    logger.warning("Stopped at step %d of %d; checkpoint-%d is saved: run the same command "
                                   "again to resume.", self.step, self.max_steps, self.step)
                    return {"stopped_at_step": self.step}
        self.model.save_pretrained(self.out)
        tokenizer.save_pretrained(self.out)
        for module in self.extra_modules.values():
            module.save(self.out)
        if self.cfg.finetuning.plot_loss:
            plot_metrics(str(self.out), ["reward", "kl", "loss"])
        log = [e for e in read_log(str(self.out)) if e.get("reward") is not None]
        results = {"train_steps": self.step, "train_runtime": time.time() - self.start,
                   "final_reward": log[-1]["reward"] if log else None,
                   "initial_reward": log[0]["reward"] if log else None}
        (self.out / "all_results.json").write_text(json.dumps(results, indent=2))
        return results
