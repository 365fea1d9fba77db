"""Prediction metrics against hand computation: BLEU-4 (characters, smoothing method3), ROUGE on
jieba tokens, exact match, classification P/R/F1 and the confusion matrix, custom metrics."""

from __future__ import annotations

import math

import jieba
import pytest

from alignlab.eval.metrics import bleu4, classification_metrics, compute_metrics, rouge


def test_bleu4_by_hand():
    assert bleu4("abcd", "abcd") == pytest.approx(100.0)
    # 1-4 gram precisions 3/4, 2/3, 1/2, 0/1 -> method3 turns the zero into 1/(2*1); no brevity penalty
    assert bleu4("abce", "abcd") == pytest.approx(100 * (0.75 * 2 / 3 * 0.5 * 0.5) ** 0.25)
    # 我爱北京 vs 我爱上海: 2/4, 1/3, 0/2 -> 1/(2*2), 0/1 -> 1/(4*1)
    assert bleu4("我爱北京", "我爱上海") == pytest.approx(100 * (0.5 / 3 * 0.25 * 0.25) ** 0.25)
    # a shorter prediction pays the brevity penalty exp(1 - 4/3)
    assert bleu4("abc", "abcd") == pytest.approx(100 * math.exp(1 - 4 / 3) * (1 * 1 * 1 * 0.5) ** 0.25)
    assert bleu4("", "abc") == 0.0


def test_rouge_by_hand_en_and_zh():
    en = rouge("the cat sat", "the cat ran")  # unigrams 2/3, bigrams 1/2, LCS 2 of 3
    assert en == pytest.approx({"rouge-1": 200 / 3, "rouge-2": 50.0, "rouge-l": 200 / 3}, abs=1e-4)
    assert list(jieba.cut("我爱北京")) == ["我", "爱", "北京"]  # the segmentation the numbers rest on
    zh = rouge("我爱北京", "我爱上海")
    assert zh == pytest.approx({"rouge-1": 200 / 3, "rouge-2": 50.0, "rouge-l": 200 / 3}, abs=1e-4)
    assert rouge("", "abc") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}


def test_classification_by_hand():
    m = classification_metrics(["a", "a", "b", "x"], ["a", "b", "b", "c"])
    # a: P 1/2 R 1 F 2/3; b: P 1 R 1/2 F 2/3; c: never predicted: P 0 R 0 F 0
    assert m["accuracy"] == 0.5
    assert m["precision_macro"] == pytest.approx(0.5) and m["recall_macro"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx(4 / 9)
    assert m["confusion_matrix"] == {"labels": ["a", "b", "c"], "columns": ["a", "b", "c", "(other)"],
                                     "matrix": [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]}


def custom_length_gap(predicts, labels):
    return {"length_gap": sum(len(p) - len(x) for p, x in zip(predicts, labels)) / len(predicts)}


def test_compute_metrics_with_classification_and_a_custom_function():
    m = compute_metrics([" 100", "110"], ["100", "120"], "classification,tests.unit.test_metrics:custom_length_gap")
    assert m["exact_match"] == 50.0 and m["accuracy"] == 0.5 and m["length_gap"] == 0.5
    assert set(m) >= {"bleu-4", "rouge-1", "rouge-2", "rouge-l", "f1_macro", "confusion_matrix"}
    with pytest.raises(ValueError, match="cannot import"):
        compute_metrics(["a"], ["a"], "nowhere:metric")
