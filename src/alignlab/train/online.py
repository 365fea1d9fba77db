"""The explicit rollout -> score -> learn loop shared by ppo and grpo.

One batched, KV-cached generation per rollout (left padding); old log-probs, reference log-probs and
values computed once per rollout; the stage's `learn` runs `ppo_epochs` passes over mini-batches.
Checkpoints (`checkpoint-N/`) hold the policy, value head, optimiser, scheduler, stage state (KL
controller) and RNG, written to a temporary folder and renamed, so a killed run resumes exactly
where its last checkpoint was taken.

Under torchrun (`FORCE_TORCHRUN=1 NPROC_PER_NODE=N`) every process takes its own slice of each step's
prompts, generates and scores them, and the processes sum their gradients (`Ranks`): the losses are each
process's share of the loss over the whole step's mini-batch, so N processes with batch b train as one
with batch N x b. Sampling draws its noise from (seed, step, prompt, sample, position, token), not from a
random state, so a completion does not depend on which process or batch produced it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .callbacks import LOG_NAME, StopSignal, hms, read_log
from .plots import plot_metrics
from .ranks import Ranks
from .rollout import MASK32, generate_rollout, generation_kwargs, mix32, sample_keys
from .trainer import is_write_error, saving_failed

logger = logging.getLogger(__name__)


class NonFiniteError(RuntimeError, UserError):
    """A reward or loss became NaN/inf."""


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
    online.ranks.broadcast(params)
    return OnlineParts(model, reference, reward, tokenizer, template, online, params,
                       generation_kwargs(cfg.generating), cfg.finetuning, device, head)


PHASES = ("generate", "score", "logps", "learn")


def sample_and_score(parts: OnlineParts, batch: list[dict], indices, num_samples: int):
    """(rollout, this process's scores on the device, every process's scores, clock): `num_samples`
    completions per prompt (`indices`: the prompts' rows in the dataset), scored by the reward source;
    `clock` holds the start and the end of each phase so far (see PHASES and `phase_times`)."""
    online = parts.online
    clock = [time.perf_counter()]
    keys = sample_keys(online.args.seed, online.step, indices, num_samples, parts.device)
    rollout = generate_rollout(parts.model, parts.tokenizer, parts.template, batch, parts.gen_kwargs,
                               num_samples, parts.device, keys)
    clock.append(time.perf_counter())
    scores = parts.reward(rollout).to(parts.device).float()
    every = online.ranks.gather(scores)
    check_finite("The reward", every, online.step + 1)
    clock.append(time.perf_counter())
    return rollout, scores, every, clock


def phase_times(clock: list[float]) -> dict[str, float]:
    """Seconds spent in each phase of a step, as logged (`time/generate`, ...)."""
    return {f"time/{name}": clock[i + 1] - clock[i] for i, name in enumerate(PHASES)}


def check_finite(name: str, value: torch.Tensor, step: int) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteError(f"{name} is not finite at step {step}; stopping before the update. Lower "
                             "`learning_rate`, check the reward source, or resume from the last checkpoint.")


def check_online(cfg) -> None:
    """What ppo and grpo refuse before any model loads: engines the loop does not drive (yet), and a
    reward source that cannot work."""
    from ..config import ConfigError
    from .rewards import check_reward_source

    stage = cfg.finetuning.stage
    if cfg.training.deepspeed or cfg.training.fsdp:
        key = "deepspeed" if cfg.training.deepspeed else "fsdp"
        raise ConfigError(f"`{key}` is not supported by stage {stage} yet: its loop runs plain data parallel over "
                          "torchrun processes (FORCE_TORCHRUN=1 NPROC_PER_NODE=N, see docs/ppo.md \"Scaling out\"); "
                          "remove the key.")
    if cfg.model.infer_backend == "vllm":
        raise ConfigError(f"`infer_backend: vllm` does not drive stage {stage}'s rollouts yet: the policy samples "
                          "them itself; remove the key (or set `infer_backend: huggingface`).")
    check_reward_source(cfg)


class OnlineRun:
    """Prompts, optimiser, scheduler, logging and checkpoints of an online stage."""

    def __init__(self, cfg, model, params: list, dataset, extra_modules: dict | None = None):
        from transformers import Trainer, get_scheduler

        self.cfg, self.args = cfg, cfg.training
        self.model, self.dataset = model, dataset
        self.extra_modules = extra_modules or {}  # modules with save(dir)/load(dir), e.g. the value head
        self.ranks = Ranks()
        self.batch_size = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * \
            cfg.finetuning.ppo_buffer_size  # prompts per process and step
        self.steps_per_epoch = max(1, len(dataset) // (self.batch_size * self.ranks.world))
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
        """(prompts, their rows in the dataset) of this process for each step, from the current step on
        (resumable): a seeded order per epoch, each step's prompts split between the processes in rank order."""
        per_step = self.batch_size * self.ranks.world
        while self.step < self.max_steps:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.args.seed + epoch))
            begin = offset * per_step + self.ranks.rank * self.batch_size
            indices = [int(i) for i in order[begin:begin + self.batch_size]]
            yield [self.dataset[i] for i in indices], indices

    def samples(self, local: int) -> tuple[int, tuple[int, int]]:
        """(samples of the step over all processes, (first, end) of this process's among them)."""
        first = self.ranks.rank * local
        return local * self.ranks.world, (first, first + local)

    def order_seed(self, epoch: int) -> int:
        """The seed of the mini-batch order of this step's `epoch`-th pass (the same on every process)."""
        return int(mix32(torch.tensor((self.args.seed * 1_000_003 + self.step * 7919 + epoch) & MASK32)))

    def optimizer_step(self, loss: torch.Tensor, params, metrics: dict | None = None) -> dict[str, float]:
        """Backward this process's share of a mini-batch's loss, sum gradients and metric shares over the
        processes, clip and step. Returns the mini-batch's loss, metrics and gradient norm (all processes)."""
        if loss.requires_grad:
            loss.backward()
        self.ranks.sum_gradients(params)
        names = ["loss", *(metrics or {})]
        shares = torch.stack([loss.detach().float().reshape(()),
                              *(torch.as_tensor(v, dtype=torch.float32).detach().reshape(()).to(loss.device)
                                for v in (metrics or {}).values())])
        totals = self.ranks.sum(shares)
        check_finite("The loss", totals[0], self.step + 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm or float("inf"))
        check_finite("The gradient norm", grad_norm, self.step + 1)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**dict(zip(names, totals.tolist())), "grad_norm": float(grad_norm)}

    def log(self, metrics: dict) -> None:
        elapsed = time.time() - self.start
        done = max(self.step - self.start_step, 1)
        entry = {"current_steps": self.step, "total_steps": self.max_steps, "loss": metrics.pop("loss", None),
                 "lr": self.scheduler.get_last_lr()[0], "epoch": round(self.step / self.steps_per_epoch, 4),
                 "percentage": round(100 * self.step / self.max_steps, 2), "elapsed_time": hms(elapsed),
                 "remaining_time": hms(elapsed / done * (self.max_steps - self.step))}
        entry.update({k: round(float(v), 6) for k, v in metrics.items()})
        entry = {k: v for k, v in entry.items() if v is not None}
        if not self.ranks.main:
            return
        with (self.out / LOG_NAME).open("a") as f:
            f.write(json.dumps(entry) + "\n")
        shown = {k: entry[k] for k in ("reward", "kl", "loss") if entry.get(k) is not None}
        print(f"[{self.step}/{self.max_steps}] " + " ".join(f"{k}={v:.4f}" for k, v in shown.items()) +
              f" elapsed {entry['elapsed_time']} ETA {entry['remaining_time']}", flush=True)

    # ---- checkpoints ------------------------------------------------------------------
    def save(self, target: Path) -> None:
        """The checkpoint, written by the main process (every process's RNG states in it), then renamed."""
        rng = self.ranks.gather_objects({"torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                                         "numpy_rng": np.random.get_state()})
        if self.ranks.main:
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                tmp.mkdir(parents=True)
                self.model.save_pretrained(tmp)
                for module in self.extra_modules.values():
                    module.save(tmp)
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                            "step": self.step, "state": self.state, "world_size": self.ranks.world,
                            "rng": rng}, tmp / "online_state.pt")
            except (OSError, RuntimeError) as e:
                if not is_write_error(e):
                    raise
                raise saving_failed(e, str(tmp), str(self.out)) from None
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        self.ranks.barrier()

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
        rng = saved["rng"][self.ranks.rank % len(saved["rng"])]
        if saved["world_size"] != self.ranks.world:
            logger.warning("%s was saved by %d processes, this run has %d: prompts and sampling continue "
                           "exactly, other random draws (dropout) do not.", checkpoint, saved["world_size"],
                           self.ranks.world)
        torch.set_rng_state(rng["torch_rng"])
        random.setstate(rng["python_rng"])
        np.random.set_state(rng["numpy_rng"])
        if self.ranks.main:
            kept = [e for e in read_log(str(self.out)) if e["current_steps"] <= self.step]
            (self.out / LOG_NAME).write_text("".join(json.dumps(e) + "\n" for e in kept))
            logger.warning("Resumed from %s at step %d.", checkpoint, self.step)

    def last_checkpoint(self) -> Path | None:
        if self.cfg.finetuning.overwrite_output_dir:
            if self.ranks.main:
                for old in self.out.glob("checkpoint-*"):
                    shutil.rmtree(old, ignore_errors=True)
                (self.out / LOG_NAME).unlink(missing_ok=True)
            self.ranks.barrier()
            return None
        done = [p for p in self.out.glob("checkpoint-*") if (p / "online_state.pt").is_file()
                and p.name.split("-")[-1].isdigit()]
        return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None

    def train(self, rollout_and_learn, tokenizer) -> dict:
        """Run `rollout_and_learn(prompts, their dataset rows) -> metrics` for every step, with checkpoints
        and logs; save the final policy, value head and tokenizer, the results and (with `plot_loss`) the
        curves. Only the main process writes; a Stop on any process stops all at the same step."""
        checkpoint = self.last_checkpoint()
        if checkpoint:
            self.resume(checkpoint)
        elif not self.step and self.ranks.main:
            (self.out / LOG_NAME).write_text("")
        self.start_step = self.step
        with StopSignal() as stop:
            for batch, indices in self.batches():
                metrics = rollout_and_learn(batch, indices)
                self.scheduler.step()
                self.step += 1
                if self.step % max(int(self.args.logging_steps), 1) == 0 or self.step == self.max_steps:
                    self.log(metrics)
                stopping = bool(self.ranks.sum(torch.tensor(float(stop.requested))) > 0) and self.step < self.max_steps
                saving = self.args.save_strategy != "no" and self.args.save_steps and \
                    self.step % int(self.args.save_steps) == 0
                if saving or stopping:
                    self.save(self.out / f"checkpoint-{self.step}")
                if stopping:
                    logger.warning("Stopped at step %d of %d; checkpoint-%d is saved: run the same command "
                                   "again to resume.", self.step, self.max_steps, self.step)
                    return {"stopped_at_step": self.step}
        if not self.ranks.main:
            self.ranks.barrier()
            return {"train_steps": self.step}
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
        self.ranks.barrier()
        return results
