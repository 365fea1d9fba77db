"""Prediction metrics: BLEU-4 and ROUGE-1/2/L as LLaMA-Factory computes them, exact match,
classification metrics over a label set, and user metrics named `module:function`.

BLEU-4 is nltk's character-level `sentence_bleu` with smoothing method3; ROUGE is the F-score of
rouge-chinese on jieba tokens; both x100 and averaged over examples.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from ..config import ConfigError, split_list

logger = logging.getLogger(__name__)


def bleu4(predict: str, label: str) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if not predict or not label:
        return 0.0
    return 100 * sentence_bleu([list(label)], list(predict), smoothing_function=SmoothingFunction().method3)


def rouge(predict: str, label: str) -> dict[str, float]:
    """ROUGE-1/2/L F-scores (x100) on jieba tokens."""
    import jieba
    from rouge_chinese import Rouge

    jieba.setLogLevel(logging.WARNING)
    hypothesis, reference = " ".join(jieba.cut(predict)), " ".join(jieba.cut(label))
    if not hypothesis.split() or not reference.split():
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    scores = Rouge().get_scores(hypothesis, reference)[0]
    return {k: 100 * v["f"] for k, v in scores.items()}


def similarity_metrics(predicts: list[str], labels: list[str]) -> dict[str, float]:
    """Mean BLEU-4, ROUGE-1/2/L and exact match (stripped strings), x100."""
    totals = {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "exact_match": 0.0}
    for predict, label in zip(predicts, labels):
        totals["bleu-4"] += bleu4(predict, label)
        for key, value in rouge(predict, label).items():
            totals[key] += value
        totals["exact_match"] += 100.0 * (predict.strip() == label.strip())
    return {k: v / max(len(predicts), 1) for k, v in totals.items()}


def classification_metrics(predicts: list[str], labels: list[str]) -> dict:
    """Accuracy and macro precision/recall/F1 over the classes of `labels` (a prediction outside
    them counts as wrong, column `(other)` of the confusion matrix). Stripped strings compare."""
    predicts, labels = [p.strip() for p in predicts], [x.strip() for x in labels]
    classes = sorted(set(labels))
    columns = classes + (["(other)"] if any(p not in classes for p in predicts) else [])
    matrix = [[0] * len(columns) for _ in classes]
    for predict, label in zip(predicts, labels):
        matrix[classes.index(label)][columns.index(predict if predict in classes else "(other)")] += 1
    precision, recall, f1 = [], [], []
    for i in range(len(classes)):
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        p = matrix[i][i] / predicted if predicted else 0.0
        r = matrix[i][i] / support if support else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    n = max(len(classes), 1)
    return {"accuracy": sum(matrix[i][i] for i in range(len(classes))) / max(len(labels), 1),
            "precision_macro": sum(precision) / n, "recall_macro": sum(recall) / n, "f1_macro": sum(f1) / n,
            "confusion_matrix": {"labels": classes, "columns": columns, "matrix": matrix}}


def load_metric(spec: str) -> Callable[[list[str], list[str]], dict]:
    """`module:function` -> the function (predicts, labels) -> {name: value}."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"eval_metrics {spec!r}: cannot import {name!r} from {module!r} ({e}). Give "
                         "`module:function` on the Python path, taking (predicts, labels) and returning a dict.") from None


def parse_metrics(extra: str | None) -> list[Callable[[list[str], list[str]], dict]]:
    """`eval_metrics` -> its metric functions, in order; a bad entry is a ConfigError naming it."""
    metrics = []
    for spec in split_list(extra):
        if spec == "classification":
            metrics.append(classification_metrics)
        elif ":" in spec:
            metrics.append(load_metric(spec))
        else:
            raise ConfigError(f"eval_metrics {spec!r}: use `classification` or `module:function`.")
    return metrics


def compute_metrics(predicts: list[str], labels: list[str], extra: str | None = None) -> dict:
    """Similarity metrics always; `extra` adds `classification` and/or `module:function` metrics."""
    metrics: dict = similarity_metrics(predicts, labels)
    for metric in parse_metrics(extra):
        metrics.update(metric(predicts, labels))
    return metrics
