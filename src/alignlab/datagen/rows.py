"""Dataset rows as chat requests (a stable id, the system prompt, the conversation) and back as alpaca records."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from ..data import DataError, SkipReport, load_examples

logger = logging.getLogger(__name__)

# The alpaca columns every record of ours carries, registered in dataset_info.json under these roles.
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "system": "system", "history": "history"}
# Columns of a row not carried to the next output: the prompt (written anew) and the bookkeeping of a step.
NOT_CARRIED = frozenset({"id", *ALPACA_COLUMNS.values(), "output", "model", "finish_reason", "usage"})


@dataclass
class PromptRow:
    id: Any
    system: str
    turns: list[dict]  # user/assistant messages, ending with a user turn
    response: str | None = None  # the row's own answer (what `judge` judges)
    extra: dict[str, Any] = field(default_factory=dict)  # other columns of the row, carried to the output

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def record(self) -> dict:
        """The row as alpaca columns (the last user turn as instruction, earlier turns as history)."""
        history = [[self.turns[i]["content"], self.turns[i + 1]["content"]] for i in range(0, len(self.turns) - 1, 2)]
        return {"id": self.id, **self.extra, "system": self.system, "instruction": self.turns[-1]["content"],
                "input": "", "history": history}

    @classmethod
    def from_record(cls, record: dict, response: str | None = None) -> PromptRow:
        """A row back from one of our records (`record()` plus answer fields)."""
        turns = []
        for query, answer in record.get("history") or []:
            turns += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
        question = "\n".join(p for p in (record.get("instruction", ""), record.get("input", "")) if p)
        return cls(id=record["id"], system=record.get("system") or "", turns=[*turns, {"role": "user", "content": question}],
                   response=response)


def _row_id(ex, has_ids: bool) -> Any:
    if not has_ids:
        return ex.row
    value = ex.extra.get("id")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise DataError(f"dataset {ex.dataset!r}, row {ex.row}: `id` must be text or an integer, got {value!r} "
                        "(every row needs one when some have it).")
    return value


def load_rows(data_args, names: str | None, kind: str, command: str) -> list[PromptRow]:
    """The rows of the named datasets, keyed by their `id` column (or, without one, their row index).

    kind: `prompt` (questions to answer) or `sft` (questions with the answer to judge). Rows dropped for a
    reason are reported on stderr; ids must be unique, since resuming goes by id.
    """
    if not names:
        raise DataError(f"`alignlab data {command}` needs `dataset`: the entry of dataset_info.json to read.")
    report = SkipReport()
    examples = load_examples(data_args, names, seed=42, report=report, kind=kind)
    if report.counts:
        print(f"{command}: {report.summary()}", file=sys.stderr, flush=True)
    has_ids = any("id" in ex.extra for ex in examples)
    rows, seen = [], {}
    for ex in examples:
        row_id = _row_id(ex, has_ids)
        if row_id in seen:
            raise DataError(f"dataset {ex.dataset!r}: rows {seen[row_id]} and {ex.row} have the same id {row_id!r}; "
                            "ids must be unique (resuming goes by id): give every row a distinct `id`.")
        seen[row_id] = ex.row
        bad = next((m["role"] for m in ex.prompt if m["role"] not in ("user", "assistant")), None)
        if bad:
            raise DataError(f"dataset {ex.dataset!r}, row {ex.row}: a {bad!r} turn; `alignlab data {command}` "
                            "sends plain user/assistant conversations.")
        response = ex.response[0]["content"] if ex.response else None
        extra = {k: v for k, v in ex.extra.items() if k not in NOT_CARRIED}
        rows.append(PromptRow(id=row_id, system=ex.system, turns=ex.prompt, response=response, extra=extra))
    return rows
