"""Row jobs of `generate` and `judge`: resume by row id from durable JSONL records, workers over the
endpoints' limits, failures recorded with their reason, progress with ETA, a summary."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..data import DataError
from ..files import append_durable, write_atomic
from .client import ChatEndpoint, Ledger, RequestFailed

logger = logging.getLogger(__name__)

FAILURES = "failures.jsonl"
SUMMARY = "summary.json"
PROGRESS_EVERY_S = 2.0


def output_folder(cfg, command: str) -> Path:
    """The job's `output_dir` (required: the records there are what a rerun resumes from)."""
    out = cfg.resolved.get("output_dir")
    if not out:
        raise ConfigError(f"`alignlab data {command}` needs `output_dir`: the folder for its records "
                          "(a rerun with the same folder resumes).")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"`output_dir` {path} is a file, not a folder: choose another `output_dir`.")
    return path


def read_records(path: Path) -> list[dict]:
    """The records of a JSONL file written line by line with `append_durable`; a torn last line (a kill
    during the write) is cut off the file, so that appending goes on after the last whole record."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run.", path, len(data) - end)
        with open(path, "r+b") as f:
            f.truncate(end)
    records = []
    for number, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {number} is not JSON ({e.msg}): fix or remove that line.") from None
        if not isinstance(record, dict) or "id" not in record:
            raise DataError(f"{path} line {number} is not a record with an `id`: fix or remove that line.")
        records.append(record)
    return records


class RowLog:
    """The record files of one output folder: the ids finished there, and appends that are on disk
    before they count. Failures are not finished: a rerun retries them."""

    def __init__(self, folder: Path, outputs: tuple[str, ...]):
        self.folder, self.outputs = folder, outputs
        self.finished = {record["id"] for name in outputs for record in read_records(folder / name)}
        self._files: dict[str, Any] = {}

    def open(self, pending: set) -> None:
        """Start appending; earlier failures of the rows about to be retried leave failures.jsonl."""
        self.folder.mkdir(parents=True, exist_ok=True)
        failures = read_records(self.folder / FAILURES)
        kept = [r for r in failures if r["id"] not in pending]
        if len(kept) < len(failures):
            write_atomic(self.folder / FAILURES, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        self._files = {name: open(self.folder / name, "a", encoding="utf-8") for name in (*self.outputs, FAILURES)}

    def write(self, name: str, record: dict) -> None:
        append_durable(self._files[name], json.dumps(record, ensure_ascii=False))

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """A line on stderr every PROGRESS_EVERY_S seconds: rows done of total, rows/s, ETA, failures,
    tokens and cost so far."""

    def __init__(self, command: str, total: int, ledger: Ledger):
        self.command, self.total, self.ledger = command, total, ledger
        self.done = self.failed = 0
        self.start = self.last = time.monotonic()

    def row_finished(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.print()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = _duration((self.total - self.done) / rate) if rate else "?"
        cost = self.ledger.cost()
        return (f"{self.command}: {self.done}/{self.total} rows ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.2f} rows/s, ETA {eta}, {self.failed} failed, "
                f"{self.ledger.total('prompt_tokens') + self.ledger.total('completion_tokens')} tokens"
                + (f", ${cost:.4f}" if cost is not None else ""))

    def print(self) -> None:
        self.last = time.monotonic()
        print(self.line(), file=sys.stderr, flush=True)


RowProcess = Callable[[Any], Awaitable[tuple[str, dict]]]


def run_job(command: str, rows: list, process: RowProcess, log: RowLog, endpoints: list[ChatEndpoint],
            ledger: Ledger, workers: int) -> dict:
    """Process every row whose id is not finished in `log`: `process(row)` returns the record file and
    the record (with the row's `id`); RequestFailed records the row in failures.jsonl with its reason.
    Writes and returns the run's summary (outcomes, failures, requests, tokens, cost)."""
    pending = [row for row in rows if row.id not in log.finished]
    progress = Progress(command, len(pending), ledger)
    outcomes: Counter = Counter()
    log.open({row.id for row in pending})
    if len(pending) < len(rows):
        print(f"{command}: resuming: {len(rows) - len(pending)} of {len(rows)} rows are already finished in "
              f"{log.folder}", file=sys.stderr, flush=True)

    async def work(queue) -> None:
        for row in queue:
            try:
                name, record = await process(row)
            except RequestFailed as e:
                log.write(FAILURES, {"id": row.id, "reason": str(e)})
                progress.row_finished(failed=True)
                continue
            log.write(name, record)
            outcomes[record.get("outcome", Path(name).stem)] += 1
            progress.row_finished(failed=False)

    async def main() -> None:
        queue = iter(pending)
        tasks = [asyncio.create_task(work(queue)) for _ in range(min(workers, len(pending)))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for endpoint in endpoints:
                await endpoint.aclose()

    start = time.monotonic()
    try:
        asyncio.run(main())
    finally:
        log.close()
    progress.print()
    summary = {"command": command, "rows": len(rows), "finished_before": len(rows) - len(pending),
               "processed": len(pending), "outcomes": dict(outcomes), "failed": progress.failed,
               "elapsed_s": round(time.monotonic() - start, 3), **ledger.summary()}
    write_atomic(log.folder / SUMMARY, json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    done = ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items())) or "nothing new"
    cost = f", ${summary['cost_usd']:.4f}" if summary["cost_usd"] is not None else ""
    print(f"{command}: {done}; {summary['failed']} failed{f' (reasons in {log.folder / FAILURES})' if summary['failed'] else ''}; "
          f"{summary['prompt_tokens']} prompt + {summary['completion_tokens']} completion tokens{cost}; "
          f"summary in {log.folder / SUMMARY}", file=sys.stderr, flush=True)
    return summary
