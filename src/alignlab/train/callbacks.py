"""Trainer callbacks: the run's `trainer_log.jsonl` with progress and ETA."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

LOG_NAME = "trainer_log.jsonl"


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def read_log(output_dir: str) -> list[dict]:
    path = Path(output_dir) / LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class LogCallback(TrainerCallback):
    """One JSON object per logging step: current_steps, total_steps, loss, lr, epoch, percentage,
    elapsed_time, remaining_time, plus every other metric the stage logs. A resumed run drops the
    entries written after its checkpoint, so the log reads as one uninterrupted run."""

    def __init__(self, output_dir: str):
        self.path = Path(output_dir) / LOG_NAME
        self.start_time = 0.0
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time, self.start_step = time.time(), state.global_step
        if not state.is_world_process_zero:
            return
        kept = [e for e in read_log(str(self.path.parent))
                if e.get("current_steps", 0) <= state.global_step and "train_runtime" not in e]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(e) + "\n" for e in kept) if state.global_step else "")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.time() - self.start_time
        done = state.global_step - self.start_step
        remaining = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        entry = {
            "current_steps": state.global_step,
            "total_steps": state.max_steps,
            "loss": logs.get("loss"),
            "lr": logs.get("learning_rate"),
            "epoch": round(state.epoch or 0.0, 4),
            "percentage": round(100 * state.global_step / max(state.max_steps, 1), 2),
            "elapsed_time": _hms(elapsed),
            "remaining_time": _hms(remaining),
        }
        entry.update({k: v for k, v in logs.items() if k not in ("loss", "learning_rate", "epoch")})
        entry = {k: v for k, v in entry.items() if v is not None}  # as LLaMA-Factory: no key without a value
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
