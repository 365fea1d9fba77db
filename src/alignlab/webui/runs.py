"""What the pages show of run folders: status, progress, curve series, the run table, the failure line.

Plain Python over files (run_config.yaml, trainer_log.jsonl, all_results.json, webui_job.json): a
restarted server or a reloaded page shows exactly what is on disk.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..train.callbacks import LOG_NAME, hms, read_log
from ..train.plots import smooth
from .jobs import CONFIG_FILE, JOB_FILE, LOG_FILE, read_job

STATUSES = ("running", "finished", "failed", "stopped")
NOT_CURVES = frozenset({"current_steps", "total_steps", "percentage", "epoch"})
# A run started outside the UI counts as running while its log was written this recently.
CLI_RUN_ACTIVE_S = 120


def find_runs(root: str | Path) -> list[Path]:
    """Every folder with a run_config.yaml under `root` (recursive, checkpoints excluded), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [p.parent for p in root.rglob("run_config.yaml") if not p.parent.name.startswith("checkpoint-")]
    return sorted(runs, key=_start_time, reverse=True)


def _start_time(run: Path) -> float:
    job = read_job(run)
    return job.start_time if job else (run / "run_config.yaml").stat().st_mtime


def checkpoints(run: str | Path) -> list[int]:
    """The steps of the run's complete checkpoints, ascending."""
    steps = []
    for path in Path(run).glob("checkpoint-*"):
        suffix = path.name.split("-")[-1]
        if suffix.isdigit() and ((path / "trainer_state.json").is_file() or (path / "online_state.pt").is_file()):
            steps.append(int(suffix))
    return sorted(steps)


def adapters(root: str | Path) -> list[Path]:
    """Every adapter under `root`: run folders holding adapter_config.json, each followed by its
    checkpoints that hold one (newest run first, checkpoints by step)."""
    found = []
    for run in find_runs(root):
        if (run / "adapter_config.json").is_file():
            found.append(run)
        found += [run / f"checkpoint-{s}" for s in checkpoints(run) if (run / f"checkpoint-{s}" / "adapter_config.json").is_file()]
    return found


def run_results(run: Path) -> dict:
    try:
        return json.loads((run / "all_results.json").read_text())
    except (OSError, ValueError):
        return {}


def _exported(run: Path) -> bool:
    """An `alignlab export` folder: its run_config.yaml names the run it came from."""
    try:
        return "exported_from" in (yaml.safe_load((run / "run_config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        return False


def run_status(run: str | Path) -> str:
    """running / finished / failed / stopped, from the job file, process liveness and the results."""
    run = Path(run)
    job = read_job(run)
    finished = bool(run_results(run))
    if job is not None:
        if job.running:
            return "running"
        if job.exit_code == 0 and finished and not job.stop_requested:
            return "finished"
        if job.stop_requested:
            return "stopped"
        return "finished" if job.exit_code == 0 and finished else "failed"
    if finished or _exported(run):
        return "finished"
    log = run / LOG_NAME
    if log.is_file() and time.time() - log.stat().st_mtime < CLI_RUN_ACTIVE_S:
        return "running"
    return "stopped" if checkpoints(run) else "failed"


@dataclass
class Progress:
    step: int
    total: int
    percentage: float
    elapsed: str
    remaining: str


def progress(rows: list[dict]) -> Progress | None:
    """Step, total, percentage, elapsed and ETA from the last row with a step count."""
    last = next((r for r in reversed(rows) if "total_steps" in r and "train_runtime" not in r), None)
    if last is None:
        return None
    return Progress(last["current_steps"], last["total_steps"], last.get("percentage", 0.0),
                    last.get("elapsed_time", ""), last.get("remaining_time", ""))


def metric_names(rows: list[dict]) -> list[str]:
    """The numeric metrics the run logs per step, in the order they first appear."""
    names: dict[str, None] = {}
    for row in rows:
        if "train_runtime" in row:  # the closing summary row, not a step
            continue
        for key, value in row.items():
            if key not in NOT_CURVES and isinstance(value, (int, float)) and not isinstance(value, bool):
                names.setdefault(key)
    return list(names)


def curve(rows: list[dict], metric: str) -> list[dict]:
    """Points {step, value, series} of one metric: the logged values ("raw") and their EMA ("EMA")."""
    points = [(r["current_steps"], r[metric]) for r in rows
              if "train_runtime" not in r and isinstance(r.get(metric), (int, float))]
    raw = [{"step": s, "value": v, "series": "raw"} for s, v in points]
    ema = [{"step": s, "value": v, "series": "EMA"} for (s, _), v in zip(points, smooth([v for _, v in points]))]
    return raw + (ema if len(points) > 1 else [])


def overlay(runs: list[str | Path], metric: str) -> list[dict]:
    """Points {step, value, series=run name} of one metric for several runs (EMA-smoothed lines)."""
    points = []
    for run in runs:
        series = curve(read_log(str(run)), metric)
        kind = "EMA" if any(p["series"] == "EMA" for p in series) else "raw"
        points += [{**p, "series": Path(run).name} for p in series if p["series"] == kind]
    return points


def log_tail(run: str | Path, lines: int = 40) -> str:
    """The last lines of the job's log (read from the end: the file may be large)."""
    path = Path(run) / LOG_FILE
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(max(f.seek(0, 2) - 64_000, 0))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


ERROR_LINE = re.compile(r"^(alignlab \w+: .+|\w*(Error|Exception|Interrupt)\b.*)$")


def failure_line(log_text: str) -> str:
    """The line that says why a job failed: the CLI's `alignlab train: ...` or the traceback's last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if ERROR_LINE.match(line)), lines[-1] if lines else "")


def _duration(run: Path, job) -> float | None:
    if job is not None:
        return (job.end_time or time.time()) - job.start_time
    runtime = run_results(run).get("train_runtime")
    return float(runtime) if runtime is not None else None


FINAL_METRICS = ("loss", "eval_loss", "reward", "rewards/accuracies", "accuracy", "eval_accuracy", "kl")
TABLE_COLUMNS = ("run", "status", "stage", "model", "dataset", "started", "duration", "steps", "final metrics")


def run_row(run: str | Path, root: str | Path) -> list[str]:
    """One row of the runs table (TABLE_COLUMNS) for a run folder."""
    run = Path(run)
    try:
        config = yaml.safe_load((run / "run_config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    job, rows = read_job(run), read_log(str(run))
    steps = [r for r in rows if "train_runtime" not in r]
    last = steps[-1] if steps else {}
    finals = ", ".join(f"{k} {last[k]:.4g}" for k in FINAL_METRICS if isinstance(last.get(k), (int, float)))
    step = f"{last['current_steps']}/{last['total_steps']}" if "total_steps" in last else ""
    return [str(run.relative_to(root)) if run.is_relative_to(root) else str(run), run_status(run),
            str(config.get("stage", "")), Path(str(config.get("model_name_or_path", ""))).name,
            str(config.get("dataset", "")), time.strftime("%Y-%m-%d %H:%M", time.localtime(_start_time(run))),
            hms(d) if (d := _duration(run, job)) is not None else "", step, finals]


def run_table(root: str | Path) -> list[list[str]]:
    """The runs table: one row per run folder under `root`, newest first."""
    return [run_row(run, root) for run in find_runs(root)]


def delete_run(root: str | Path, name: str) -> None:
    """Remove a run folder (not a running one; only inside `root`)."""
    root, run = Path(root).resolve(), (Path(root) / name).resolve()
    if not run.is_relative_to(root) or run == root or not (run / "run_config.yaml").is_file():
        raise ValueError(f"{name} is not a run folder under {root}")
    if run_status(run) == "running":
        raise ValueError(f"{name} is running: stop it first")
    shutil.rmtree(run)


def latest_job_run(root: str | Path) -> Path | None:
    """The run folder of the most recently started Train-tab job (what the Train tab shows after a
    reload); evaluate and export jobs, which write no CONFIG_FILE, are not training runs."""
    root = Path(root)
    jobs = [job for path in root.rglob(JOB_FILE) if (path.parent / CONFIG_FILE).is_file()
            and (job := read_job(path.parent))] if root.is_dir() else []
    return Path(max(jobs, key=lambda j: j.start_time).run_dir) if jobs else None


@dataclass
class LiveView:
    """What the Train tab shows of one run: status, progress, logged rows, log tail, failure line."""

    run: Path
    status: str
    rows: list[dict]
    progress: Progress | None
    log: str
    failure: str | None  # the error line when the job exited non-zero
    exit_code: int | None

    @property
    def signature(self) -> tuple:
        """Changes whenever anything shown changes (the page redraws only then)."""
        return str(self.run), self.status, len(self.rows), len(self.log)


def live_view(run: str | Path) -> LiveView:
    run = Path(run)
    rows, log, job = read_log(str(run)), log_tail(run), read_job(run)
    status = run_status(run)
    exit_code = job.exit_code if job else None
    failure = failure_line(log) if status == "failed" else None
    return LiveView(run, status, rows, progress(rows), log, failure, exit_code)
