"""Agreement coefficients against textbook and hand-computed values, and the report on rankings."""

from __future__ import annotations

import pytest

from alignlab.studio.agreement import (
    agreement_report,
    cohen_kappa,
    krippendorff_alpha,
    preference_units,
)
from alignlab.studio.pairs import Judgement


def submitted(item_id: str, annotator: str, **ranks: int) -> Judgement:
    return Judgement(item_id, annotator, "submitted", ranks)


def test_cohen_kappa_on_the_textbook_two_by_two_table():
    # 50 units: 20 both yes, 5 A yes / B no, 10 A no / B yes, 15 both no.
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_perfect_hand_computed_and_constant():
    assert cohen_kappa(["a", "b", "tie", "a"], ["a", "b", "tie", "a"]) == 1.0
    # p_o = 3/4; counts A: x2 y1 z1, B: x1 y2 z1 -> p_e = (2*1 + 1*2 + 1*1) / 16 = 5/16;
    # kappa = (12/16 - 5/16) / (11/16) = 7/11
    assert cohen_kappa(["x", "x", "y", "z"], ["x", "y", "y", "z"]) == pytest.approx(7 / 11)
    assert cohen_kappa(["a", "a"], ["a", "a"]) == 1.0  # both constant and equal: 1 by convention
    assert cohen_kappa(["a", "a"], ["b", "b"]) == 0.0  # p_o = 0, p_e = 0


def test_cohen_kappa_rejects_mismatched_or_empty_labels():
    with pytest.raises(ValueError, match="same number of labels"):
        cohen_kappa(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one unit"):
        cohen_kappa([], [])


def test_krippendorff_alpha_on_krippendorffs_reliability_data():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders, 12 units.
    m = None
    coder_a = [1, 2, 3, 3, 2, 1, 4, 1, 2, m, m, m]
    coder_b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, m, 3]
    coder_c = [m, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, m]
    coder_d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, m]
    units = [list(unit) for unit in zip(coder_a, coder_b, coder_c, coder_d)]
    assert round(krippendorff_alpha(units), 3) == 0.743


def test_krippendorff_alpha_two_coders_by_hand():
    # Pairable units (a,a) (a,b) (b,b) (b,b); the one-label and all-missing units are ignored.
    # n = 8 values: n_a = 3, n_b = 5. Observed: only unit (a,b) disagrees,
    # 2 ordered pairs / (2 - 1) = 2.
    # Expected: (8^2 - 3^2 - 5^2) / (8 - 1) = 30/7. alpha = 1 - 2 / (30/7) = 8/15.
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"], ["a", None], [None, None]]
    assert krippendorff_alpha(units) == pytest.approx(8 / 15)
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) == 1.0  # one value throughout
    with pytest.raises(ValueError, match="at least one unit with two labels"):
        krippendorff_alpha([["a", None], ["b"]])


def test_preference_units_label_each_candidate_pair_from_submitted_judgements():
    judgements = [submitted("q", "alice", c0=1, c1=2, c2=2),
                  submitted("q", "bob", c1=1, c0=2, c2=3),
                  Judgement("q", "carol", "skipped", {"c0": 1, "c1": 2, "c2": 3})]
    assert preference_units(judgements) == {
        ("q", "c0", "c1"): {"alice": "a", "bob": "b"},
        ("q", "c0", "c2"): {"alice": "a", "bob": "a"},
        ("q", "c1", "c2"): {"alice": "tie", "bob": "a"},
    }


def test_report_on_identical_rankings_is_perfect_agreement():
    rankings = {"1": {"c0": 1, "c1": 2, "c2": 3}, "2": {"c0": 2, "c1": 1}}
    judgements = [submitted(item, name, **ranks) for name in ("bob", "alice")
                  for item, ranks in rankings.items()]
    assert agreement_report(judgements) == {
        "annotators": ["alice", "bob"], "units": 4, "percent_agreement": 1.0,
        "kappa": {"alice/bob": 1.0}, "alpha": 1.0}
    # every label "a": kappa and alpha are 1 by the documented convention
    constant = [submitted("1", "alice", c0=1, c1=2), submitted("1", "bob", c0=1, c1=2)]
    report = agreement_report(constant)
    assert report["kappa"] == {"alice/bob": 1.0} and report["alpha"] == 1.0


def test_report_by_hand():
    judgements = [
        submitted("q1", "alice", c0=1, c1=2), submitted("q1", "bob", c0=2, c1=1),
        submitted("q2", "alice", c0=1, c1=2), submitted("q2", "bob", c0=1, c1=2),
        submitted("q2", "carol", c0=1, c1=2),
        submitted("q3", "alice", c0=1, c1=2),  # judged by one annotator: not a unit
        Judgement("q3", "dave", "skipped", {}),
    ]
    report = agreement_report(judgements)
    assert report["annotators"] == ["alice", "bob", "carol"]
    assert report["units"] == 2
    # unit q1: alice a, bob b (0 of 1 pairs agree); unit q2: a, a, a (3 of 3) -> 3/4
    assert report["percent_agreement"] == 0.75
    # alice/bob on [a, a] vs [b, a]: p_o = 1/2, p_e = (2*1)/4 = 1/2 -> 0; the others share one unit
    assert report["kappa"] == {"alice/bob": 0.0, "alice/carol": 1.0, "bob/carol": 1.0}
    # n = 5 (a: 4, b: 1); observed = (2^2 - 1 - 1)/1 + 0 = 2; expected = (25 - 16 - 1)/4 = 2 -> 0
    assert report["alpha"] == pytest.approx(0.0)
    assert agreement_report(judgements[-2:]) == {
        "annotators": ["alice"], "units": 0, "percent_agreement": None, "kappa": {}, "alpha": None}
