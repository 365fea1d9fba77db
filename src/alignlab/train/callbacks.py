"""Trainer callbacks: the run's `trainer_log.jsonl` with progress and ETA; stop on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

LOG_NAME = "trainer_log.jsonl"
logger = logging.getLogger(__name__)


def hms(seconds: float) -> str:
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
            "elapsed_time": hms(elapsed),
            "remaining_time": hms(remaining),
        }
        entry.update({k: v for k, v in logs.items() if k not in ("loss", "learning_rate", "epoch")})
        entry = {k: v for k, v in entry.items() if v is not None}  # as LLaMA-Factory: no key without a value
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


class StopSignal:
    """While active, SIGINT/SIGTERM ask training to stop at the end of the current step (a second
    signal interrupts at once). Used as `with StopSignal() as stop:`; `stop.requested` is the flag."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Got %s: saving a checkpoint and stopping after this step (again to stop now).",
                       signal.Signals(signum).name)

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class StopCallback(TrainerCallback):
    """After a stop signal: save a checkpoint and end training at the end of the current step."""

    def __init__(self, stop: StopSignal):
        self.stop = stop

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop.requested:
            control.should_save = True
            control.should_training_stop = True
