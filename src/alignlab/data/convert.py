"""Rows in alpaca / sharegpt / openai layout -> one canonical `Example`.

Malformed rows (a mapped column missing, a value of the wrong type) raise `DataError` naming
dataset, file and row. Rows that are well-formed but unusable for a documented reason (broken
role alternation, wrong message count) are skipped and counted in a `SkipReport`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import DataError, DatasetAttr


@dataclass
class Example:
    """One training/eval example, independent of its source format.

    prompt: messages up to the answer (roles user/assistant/observation/function, alternating
    user-side/assistant-side, ending user-side). response: the answer (empty for prompt-only or
    pre-training text). chosen/rejected: the two answers of a preference pair. kto_tag: whether a
    KTO answer is desirable. extra: source columns not used above (e.g. a `label` for rewards).
    """

    prompt: list[dict]
    response: list[dict] = field(default_factory=list)
    system: str = ""
    tools: str = ""
    chosen: dict | None = None
    rejected: dict | None = None
    kto_tag: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""  # where it came from, for messages downstream
    row: int = -1


@dataclass
class SkipReport:
    """Rows skipped for a reason, per dataset: counted and shown, never silently dropped."""

    counts: dict[str, dict[str, list]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def skip(self, dataset: str, reason: str, where: str) -> None:
        self.counts[dataset][reason].append(where)

    def summary(self) -> str:
        lines = []
        for dataset, reasons in self.counts.items():
            n = sum(len(v) for v in reasons.values())
            lines.append(f"{dataset}: skipped {n} of {self.totals[dataset]} rows")
            for reason, where in reasons.items():
                shown = ", ".join(map(str, where[:5])) + (" ..." if len(where) > 5 else "")
                lines.append(f"  {len(where)} x {reason} (rows {shown})")
        return "\n".join(lines)


class _Skip(Exception):
    """A row that cannot be used, for a reason that is reported, not raised."""


def _where(attr: DatasetAttr, path: Path, row: int) -> str:
    return f"dataset {attr.name!r}, file {path}, row {row}"


def _text(value: Any, what: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} must be text, got {type(value).__name__} {str(value)[:60]!r}.")
    return value


def _tools(value: Any) -> str:
    if value is None or value == "" or value == []:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise DataError(f"{where}: kto_tag must be true or false, got {value!r}.")


def _convert_alpaca(attr: DatasetAttr, row: dict, where: str) -> Example:
    col = attr.columns
    prompt: list[dict] = []
    history = row.get(col["history"]) if col.get("history") else None
    if history:
        if not isinstance(history, list) or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in history):
            raise DataError(f"{where}: history must be a list of [query, response] pairs.")
        for query, answer in history:
            prompt += [{"role": "user", "content": _text(query, "history query", where)},
                       {"role": "assistant", "content": _text(answer, "history response", where)}]
    parts = [_text(row.get(col["prompt"]), f"column {col['prompt']!r}", where)]
    if col.get("query") and row.get(col["query"]):
        parts.append(_text(row[col["query"]], f"column {col['query']!r}", where))
    prompt.append({"role": "user", "content": "\n".join(parts)})
    ex = Example(prompt=prompt,
                 system=_text(row.get(col["system"]), "system", where) if col.get("system") else "",
                 tools=_tools(row.get(col["tools"])) if col.get("tools") else "")
    response = row.get(col["response"]) if col.get("response") else None
    if col.get("kto_tag") and row.get(col["kto_tag"]) is not None:
        ex.kto_tag = _bool(row[col["kto_tag"]], where)
        ex.response = [{"role": "assistant", "content": _text(response, "response", where)}]
    elif attr.ranking:
        if not (col.get("chosen") and col.get("rejected")):
            raise DataError(f"dataset {attr.name!r}: a ranking dataset in alpaca format needs "
                            "`columns` with `chosen` and `rejected`.")
        ex.chosen = {"role": "assistant", "content": _text(row.get(col["chosen"]), "chosen", where)}
        ex.rejected = {"role": "assistant", "content": _text(row.get(col["rejected"]), "rejected", where)}
    elif isinstance(response, str):
        ex.response = [{"role": "assistant", "content": response}]
    elif response is not None:
        raise DataError(f"{where}: column {col['response']!r} must be text, got {type(response).__name__}.")
    return ex


def _convert_messages(attr: DatasetAttr, row: dict, where: str) -> Example:
    col, tags = attr.columns, attr.tags
    messages = row.get(col["messages"])
    if not isinstance(messages, list):
        raise DataError(f"{where}: column {col['messages']!r} must be a list of messages, "
                        f"got {type(messages).__name__}.")
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant",
             tags.get("observation_tag"): "observation", tags.get("function_tag"): "function"}

    def message(m: Any, i: int) -> dict:
        if not isinstance(m, dict) or role_tag not in m:
            raise DataError(f"{where}: message {i} must be an object with {role_tag!r} and "
                            f"{content_tag!r}; got {str(m)[:80]!r}. Check `tags` in dataset_info.json.")
        if attr.formatting == "openai" and m.get("tool_calls"):
            calls = [c.get("function", c) for c in m["tool_calls"]]
            return {"role": "function", "content": json.dumps(
                [{"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                  else json.dumps(c["arguments"], ensure_ascii=False)} for c in calls],
                ensure_ascii=False)}
        if content_tag not in m:
            raise DataError(f"{where}: message {i} has no {content_tag!r} field. Check `tags` in "
                            "dataset_info.json.")
        content = m[content_tag]
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        return {"role": roles.get(m[role_tag], m[role_tag]), "content": content}

    system = ""
    if messages and isinstance(messages[0], dict) and messages[0].get(role_tag) == tags.get("system_tag"):
        system = _text(messages[0].get(content_tag), "system message", where)
        messages = messages[1:]
    elif col.get("system"):
        system = _text(row.get(col["system"]), "system", where)
    aligned = [message(m, i) for i, m in enumerate(messages)]
    for i, m in enumerate(aligned):
        expected = ("user", "observation") if i % 2 == 0 else ("assistant", "function")
        if m["role"] not in expected:
            raise _Skip(f"broken role alternation (message {i} is {m['role']!r}, expected "
                        f"{' or '.join(expected)})")
    ex = Example(prompt=[], system=system,
                 tools=_tools(row.get(col["tools"])) if col.get("tools") else "")
    if attr.ranking:
        if len(aligned) % 2 == 0:
            raise _Skip("ranking conversation must end with a user turn")
        pair = []
        for key in ("chosen", "rejected"):
            value = row.get(col.get(key, key))
            if not isinstance(value, dict):
                raise DataError(f"{where}: column {col.get(key, key)!r} must be one message object.")
            pair.append(message(value, len(aligned)))
        ex.prompt, (ex.chosen, ex.rejected) = aligned, pair
        return ex
    if not aligned or len(aligned) % 2:
        raise _Skip("conversation must be non-empty and end with an assistant turn")
    ex.prompt, ex.response = aligned[:-1], aligned[-1:]
    if col.get("kto_tag") and row.get(col["kto_tag"]) is not None:
        ex.kto_tag = _bool(row[col["kto_tag"]], where)
    return ex


def check_mapped_columns(attr: DatasetAttr, path: Path, seen: set[str]) -> None:
    """A column named in `columns` that no row of the file has is a wrong mapping."""
    missing = [f"{attr.columns[r]!r} (mapped from `{r}`)" for r in attr.mapped if attr.columns[r] not in seen]
    if missing and seen:
        raise DataError(f"dataset {attr.name!r}, file {path}: column {', '.join(missing)} appears in no row; "
                        f"the rows have columns {', '.join(map(repr, sorted(seen)))}. Fix `columns` for "
                        f"{attr.name!r} in dataset_info.json.")


def convert_row(attr: DatasetAttr, path: Path, index: int, row: dict, report: SkipReport) -> Example | None:
    """Convert one row; None (and a counted reason) for rows skipped on purpose."""
    where = _where(attr, path, index)
    report.totals[attr.name] += 1
    for role in attr.required:
        if attr.columns[role] not in row:
            raise DataError(
                f"{where}: column {attr.columns[role]!r} (mapped from `{role}`) is missing; the row has "
                f"columns {', '.join(map(repr, row))}. Fix `columns` for {attr.name!r} in dataset_info.json."
            )
    try:
        ex = _convert_alpaca(attr, row, where) if attr.formatting == "alpaca" else _convert_messages(attr, row, where)
    except _Skip as skip:
        report.skip(attr.name, str(skip), index)
        return None
    used = set(attr.columns.values())
    ex.extra = {k: v for k, v in row.items() if k not in used}
    ex.dataset, ex.row = attr.name, index
    return ex
