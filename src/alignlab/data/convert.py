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

from .registry import MEDIA_COLUMNS, DataError, DatasetAttr


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
    """Rows dropped for a reason, per dataset: counted and shown, never silently dropped.

    One report serves training and `alignlab data validate`; `summary()` reads e.g.
    "dropped 3 of 120 rows of `name`: 2 missing `output` (rows 7, 19), 1 null `instruction` (row 44)".
    """

    counts: dict[str, dict[str, list]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def skip(self, dataset: str, reason: str, where: int | str) -> None:
        self.counts[dataset][reason].append(where)

    def dropped(self, dataset: str) -> int:
        return sum(len(rows) for rows in self.counts.get(dataset, {}).values())

    def summary(self) -> str:
        lines = []
        for dataset, reasons in self.counts.items():
            parts = []
            for reason, rows in reasons.items():
                shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
                parts.append(f"{len(rows)} {reason} ({'row' if len(rows) == 1 else 'rows'} {shown})")
            lines.append(f"dropped {self.dropped(dataset)} of {self.totals[dataset]} rows of `{dataset}`: "
                         + ", ".join(parts))
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"counts": self.counts, "totals": self.totals})

    @classmethod
    def from_json(cls, text: str) -> SkipReport:
        report, data = cls(), json.loads(text)
        for dataset, reasons in data["counts"].items():
            for reason, rows in reasons.items():
                report.counts[dataset][reason] = list(rows)
        report.totals.update(data["totals"])
        return report


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


def _absent(row: dict, column: str) -> str | None:
    """Why a column gives no value in this row ("missing `x`" / "null `x`"), or None if it has one."""
    if column not in row:
        return f"missing `{column}`"
    return f"null `{column}`" if row[column] is None else None


def _convert_alpaca(attr: DatasetAttr, row: dict, where: str, kind: str | None) -> Example:
    col = attr.columns
    prompt: list[dict] = []
    history = row.get(col["history"]) if col.get("history") else None
    if history:
        if not isinstance(history, list) or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in history):
            raise DataError(f"{where}: history must be a list of [query, response] pairs.")
        for query, answer in history:
            prompt += [{"role": "user", "content": _text(query, "history query", where)},
                       {"role": "assistant", "content": _text(answer, "history response", where)}]
    parts = [_text(row.get(col[role]), f"column {col[role]!r}", where) for role in ("prompt", "query") if col.get(role)]
    content = "\n".join(part for part in parts if part)  # LLaMA-Factory: empty parts add no newline
    if not content and not history:
        raise _Skip((_absent(row, col["prompt"]) or f"empty `{col['prompt']}`") if col.get("prompt")
                    else "empty prompt (no `prompt` column mapped)")
    prompt.append({"role": "user", "content": content})
    ex = Example(prompt=prompt,
                 system=_text(row.get(col["system"]), "system", where) if col.get("system") else "",
                 tools=_tools(row.get(col["tools"])) if col.get("tools") else "")
    if kind == "feedback" and col.get("kto_tag") and _absent(row, col["kto_tag"]):
        raise _Skip(_absent(row, col["kto_tag"]))
    if kind in ("sft", "feedback"):
        if not col.get("response"):
            raise _Skip("no answer (no `response` column mapped)")
        if _absent(row, col["response"]):
            raise _Skip(_absent(row, col["response"]))
    response = row.get(col["response"]) if col.get("response") else None
    if col.get("kto_tag") and row.get(col["kto_tag"]) is not None:
        ex.kto_tag = _bool(row[col["kto_tag"]], where)
        ex.response = [{"role": "assistant", "content": _text(response, "response", where)}]
    elif attr.ranking:
        if not (col.get("chosen") and col.get("rejected")):
            raise DataError(f"dataset {attr.name!r}: a ranking dataset in alpaca format needs "
                            "`columns` with `chosen` and `rejected`.")
        for key in ("chosen", "rejected"):
            if _absent(row, col[key]):
                raise _Skip(_absent(row, col[key]))
        ex.chosen = {"role": "assistant", "content": _text(row.get(col["chosen"]), "chosen", where)}
        ex.rejected = {"role": "assistant", "content": _text(row.get(col["rejected"]), "rejected", where)}
    elif isinstance(response, str):
        ex.response = [{"role": "assistant", "content": response}]
    elif response is not None:
        raise DataError(f"{where}: column {col['response']!r} must be text, got {type(response).__name__}.")
    return ex


def _convert_messages(attr: DatasetAttr, row: dict, where: str, kind: str | None) -> Example:
    col, tags = attr.columns, attr.tags
    messages = row.get(col["messages"])
    if messages is None:
        raise _Skip(_absent(row, col["messages"]))
    if not isinstance(messages, list):
        raise DataError(f"{where}: column {col['messages']!r} must be a list of messages, "
                        f"got {type(messages).__name__}.")
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    roles = {tag: role for tag, role in ((tags.get("user_tag"), "user"), (tags.get("assistant_tag"), "assistant"),
                                         (tags.get("observation_tag"), "observation"),
                                         (tags.get("function_tag"), "function")) if tag}

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
        if content is None:
            raise _Skip(f"null `{content_tag}` in a message")
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        return {"role": roles.get(m[role_tag], m[role_tag]), "content": content}

    system = ""
    system_tag = tags.get("system_tag")
    if system_tag and messages and isinstance(messages[0], dict) and messages[0].get(role_tag) == system_tag:
        system = _text(messages[0].get(content_tag), "system message", where)
        messages = messages[1:]
    elif col.get("system"):
        system = _text(row.get(col["system"]), "system", where)
    aligned = [message(m, i) for i, m in enumerate(messages)]
    if attr.formatting == "openai":  # parallel tool results: one observation turn, as LLaMA-Factory
        merged: list[dict] = []
        for m in aligned:
            if m["role"] == "observation" and merged and merged[-1]["role"] == "observation":
                merged[-1]["content"] += "\n</tool_response>\n<tool_response>\n" + m["content"]
            else:
                merged.append(m)
        aligned = merged
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
        if not (col.get("chosen") and col.get("rejected")):
            raise DataError(f"dataset {attr.name!r}: a ranking dataset needs `columns` with `chosen` and "
                            "`rejected`.")
        pair = []
        for key in ("chosen", "rejected"):
            if _absent(row, col[key]):
                raise _Skip(_absent(row, col[key]))
            value = row[col[key]]
            if not isinstance(value, dict):
                raise DataError(f"{where}: column {col[key]!r} must be one message object.")
            pair.append(message(value, len(aligned)))
        ex.prompt, (ex.chosen, ex.rejected) = aligned, pair
        return ex
    if not aligned or len(aligned) % 2:
        raise _Skip("conversation must be non-empty and end with an assistant turn")
    ex.prompt, ex.response = aligned[:-1], aligned[-1:]
    if kind == "feedback" and col.get("kto_tag") and _absent(row, col["kto_tag"]):
        raise _Skip(_absent(row, col["kto_tag"]))
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


def convert_row(attr: DatasetAttr, path: Path, index: int, row: dict, report: SkipReport,
                kind: str | None = None) -> Example | None:
    """Convert one row; None (and a counted reason) for rows dropped on purpose.

    kind: the stage's encoding (pt, sft, pairwise, feedback, prompt); rows it cannot use are
    dropped here with their reason, so that validate and training drop the same rows.
    """
    where = _where(attr, path, index)
    report.totals[attr.name] += 1
    for role in attr.required:
        if attr.columns[role] not in row:
            raise DataError(
                f"{where}: column {attr.columns[role]!r} (mapped from `{role}`) is missing; the row has "
                f"columns {', '.join(map(repr, row))}. Fix `columns` for {attr.name!r} in dataset_info.json."
            )
    for role in MEDIA_COLUMNS:
        if row.get(attr.columns.get(role, role)):
            raise DataError(f"{where}: column {attr.columns.get(role, role)!r} holds {role}: multimodal data is not "
                            "supported by alignlab (text only). Remove the column or use a text-only dataset.")
    try:
        convert = _convert_alpaca if attr.formatting == "alpaca" else _convert_messages
        ex = convert(attr, row, where, kind)
        _check_fits(ex, kind)
    except _Skip as skip:
        report.skip(attr.name, str(skip), index)
        return None
    used = set(attr.columns.values())
    ex.extra = {k: v for k, v in row.items() if k not in used}
    ex.dataset, ex.row = attr.name, index
    return ex


def _check_fits(ex: Example, kind: str | None) -> None:
    """Drop (with its reason) an example the stage's encoding cannot use."""
    if kind in ("sft", "feedback") and (len(ex.prompt) % 2 != 1 or len(ex.response) != 1):
        raise _Skip("no answer after a user turn")
    if kind == "feedback" and ex.kto_tag is None:
        raise _Skip("no kto_tag")
    if kind == "pairwise" and (ex.chosen is None or ex.rejected is None or len(ex.prompt) % 2 != 1):
        raise _Skip("no chosen/rejected pair after a user turn")
    if kind == "prompt" and len(ex.prompt) % 2 != 1:
        raise _Skip("prompt does not end with a user turn")
