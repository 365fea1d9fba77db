"""The demo task's metric: does an answer recommend exactly the correct clothing size?"""

from __future__ import annotations

import re

SIZE_PATTERNS = (re.compile(r"(\d{2,3})\s*码"), re.compile(r"\bsize\s*(\d{2,3})\b", re.IGNORECASE))


def extract_size(answer: str) -> str | None:
    """The one size an answer recommends ("110 码", "size 110"); None when it names none or several."""
    sizes = {m for pattern in SIZE_PATTERNS for m in pattern.findall(answer)}
    return sizes.pop() if len(sizes) == 1 else None


def size_accuracy(answers: list[list[str]], labels: list[str]) -> float:
    """Share of all answers (every sample of every prompt) whose recommended size equals the label."""
    total = sum(len(a) for a in answers)
    correct = sum(extract_size(text) == label for group, label in zip(answers, labels) for text in group)
    return correct / total if total else 0.0


def size_metrics(predicts: list[str], labels: list[str]) -> dict:
    """`eval_metrics: alignlab.eval.size_accuracy:size_metrics`: classification metrics over the
    recommended sizes (labels may be reference answers or bare sizes)."""
    from .metrics import classification_metrics

    gold = [label if label.strip().isdigit() else (extract_size(label) or "(none)") for label in labels]
    found = [extract_size(p) or "(none)" for p in predicts]
    return {f"size_{k}": v for k, v in classification_metrics(found, gold).items()}
