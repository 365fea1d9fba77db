"""Judge replies -> verdicts: strict JSON, else a fenced block, else the first balanced object; then the
verdict's schema. A reply that fails either raises VerdictError with the problem, for a re-ask."""

from __future__ import annotations

import json
import re

FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
WINNERS = {"A": "A", "B": "B", "TIE": "tie"}


class VerdictError(ValueError):
    """A judge reply that cannot be used; the message says why (and is sent back in the re-ask)."""


def parse_json_object(text: str) -> dict:
    """The JSON object in a judge reply: the whole reply, a ```json fenced block, or the first `{` at which
    a JSON object decodes (strings and nesting handled by the JSON decoder)."""
    text = (text or "").strip()
    candidates = [text] + [block.strip() for block in FENCE.findall(text)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            value, _end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise VerdictError("the reply holds no JSON object" if text else "the reply is empty")


def _text_field(verdict: dict, key: str) -> str:
    value = verdict.get(key)
    if not isinstance(value, str):
        raise VerdictError(f"`{key}` must be a string, got {json.dumps(value, ensure_ascii=False)[:80]}")
    return value.strip()


def same_text(a: str, b: str) -> bool:
    """Equal after normalising whitespace."""
    return a.split() == b.split()


def check_improve_verdict(verdict: dict, original: str) -> dict:
    """`{"is_good": bool, "reason": str, "improved_answer": str}`; a bad answer needs an improved answer that
    differs from the original."""
    if not isinstance(verdict.get("is_good"), bool):
        raise VerdictError(f"`is_good` must be true or false, got {json.dumps(verdict.get('is_good'))}")
    checked = {"is_good": verdict["is_good"], "reason": _text_field(verdict, "reason")}
    if not verdict["is_good"]:
        improved = _text_field(verdict, "improved_answer")
        if not improved:
            raise VerdictError("`is_good` is false but `improved_answer` is empty")
        if same_text(improved, original):
            raise VerdictError("`improved_answer` repeats the original answer")
        checked["improved_answer"] = improved
    return checked


def check_pairwise_verdict(verdict: dict) -> dict:
    """`{"winner": "A" | "B" | "tie", "reason": str}`."""
    winner = verdict.get("winner")
    if not isinstance(winner, str) or winner.strip().upper() not in WINNERS:
        raise VerdictError(f"`winner` must be \"A\", \"B\" or \"tie\", got {json.dumps(winner, ensure_ascii=False)}")
    return {"winner": WINNERS[winner.strip().upper()], "reason": _text_field(verdict, "reason")}
