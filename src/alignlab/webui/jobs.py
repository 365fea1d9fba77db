"""The web UI's job runner: one `alignlab train` subprocess at a time, in its own session, found
again from its job file by a restarted UI.

The subprocess runs under a small supervisor (`python -m alignlab.webui.jobs RUN_DIR CMD...`) that
owns `webui_job.json` (pid, start time, command, then exit code, end time and whether a stop was
asked), so the exit status is recorded even when the UI is gone. Output goes to `webui_train.log`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import write_atomic

JOB_FILE = "webui_job.json"
LOG_FILE = "webui_train.log"
CONFIG_FILE = "webui_config.yaml"


@dataclass
class Job:
    run_dir: str
    pid: int  # the supervisor's pid; it leads the job's session and process group
    start_time: float
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    end_time: float | None = None
    stop_requested: bool = False

    @property
    def running(self) -> bool:
        return self.exit_code is None and pid_alive(self.pid)


class JobRefused(RuntimeError):
    """A job cannot start (another one is running); the message says why."""


def read_job(run_dir: str | Path) -> Job | None:
    try:
        return Job(**json.loads((Path(run_dir) / JOB_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_job(job: Job) -> None:
    write_atomic(Path(job.run_dir) / JOB_FILE, json.dumps(asdict(job), indent=2))


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def train_command(run_dir: str | Path) -> list[str]:
    return [sys.executable, "-m", "alignlab.cli", "train", str(Path(run_dir) / CONFIG_FILE)]


class JobRunner:
    """Start, find and stop the one job of the runs under `runs_root`."""

    def __init__(self, runs_root: str | Path):
        self.runs_root = Path(runs_root)
        self._children: list[subprocess.Popen] = []  # supervisors started here, reaped when they end

    def active(self) -> Job | None:
        """The running job under the runs root, whoever started it."""
        self._children = [p for p in self._children if p.poll() is None]
        if not self.runs_root.is_dir():
            return None
        jobs = [job for path in self.runs_root.rglob(JOB_FILE) if (job := read_job(path.parent)) and job.running]
        return max(jobs, key=lambda j: j.start_time, default=None)

    def start(self, run_dir: str | Path, command: list[str] | None = None) -> Job:
        """Launch `command` (default: `alignlab train RUN_DIR/webui_config.yaml`); refuse while a job runs."""
        running = self.active()
        if running:
            raise JobRefused(f"{running.run_dir} is still running (pid {running.pid}): stop it first.")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / JOB_FILE).unlink(missing_ok=True)
        with (run_dir / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "alignlab.webui.jobs", str(run_dir), *(command or train_command(run_dir))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._children.append(process)
        for _ in range(200):  # the supervisor writes the job file first thing
            job = read_job(run_dir)
            if job and job.pid == process.pid:
                return job
            time.sleep(0.05)
        raise JobRefused(f"the job in {run_dir} did not start (see {run_dir / LOG_FILE}).")

    def stop(self) -> Job | None:
        """SIGTERM to the running job's process group: the trainer saves a checkpoint and ends after this step."""
        job = self.active()
        if job:
            try:
                os.killpg(job.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return job


def supervise(run_dir: str, command: list[str]) -> int:
    """Run `command`, recording pid, start, stop requests and the exit status in the job file."""
    job = Job(str(run_dir), os.getpid(), time.time(), command)

    def on_stop(signum, frame):  # the signal reaches the whole group; the child decides how to stop
        job.stop_requested = True
        write_job(job)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_stop)
    write_job(job)
    sys.stdout.flush()
    child = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # the log shows it as it happens
    job.exit_code = child.wait()
    job.end_time = time.time()
    write_job(job)
    return job.exit_code


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1], sys.argv[2:]))
