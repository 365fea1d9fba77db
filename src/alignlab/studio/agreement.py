"""How much annotators agree on which of two candidates is better: percent agreement, Cohen's
kappa per pair of annotators, and Krippendorff's alpha (nominal) over all of them.

A unit is one candidate pair of one item; its label from an annotator is "a" (the first
candidate id in sort order ranked better), "b" (the second), or "tie". Only submitted judgements
count. Both coefficients are 1.0 by convention when every label is the same value (chance
agreement is then total and the textbook formula divides by zero).
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations

from ..errors import UserError


class AgreementError(ValueError, UserError):
    """Labels that no agreement coefficient can be computed from."""


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's kappa of two raters' nominal labels; a[i] and b[i] label the same unit i."""
    if len(a) != len(b):
        raise AgreementError(f"Cohen's kappa needs the same number of labels from both raters, "
                             f"got {len(a)} and {len(b)}.")
    if not a:
        raise AgreementError("Cohen's kappa needs at least one unit labelled by both raters.")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    chance = sum(count_a[label] * count_b[label] for label in count_a) / (n * n)
    if chance == 1.0:  # both raters gave one and the same label throughout
        return 1.0
    return (observed - chance) / (1.0 - chance)


def krippendorff_alpha(units: list[list]) -> float:
    """Krippendorff's alpha for nominal labels: 1 - observed / expected disagreement.

    units: for each unit, the labels coders gave it (None = missing); units with fewer than two
    labels are not pairable and are ignored.
    """
    pairable = [[v for v in unit if v is not None] for unit in units]
    pairable = [values for values in pairable if len(values) >= 2]
    if not pairable:
        raise AgreementError("Krippendorff's alpha needs at least one unit with two labels.")
    observed = 0.0  # sum over units of disagreeing ordered value pairs / (m_u - 1)
    value_totals: Counter = Counter()
    for values in pairable:
        counts = Counter(values)
        m = len(values)
        observed += (m * m - sum(c * c for c in counts.values())) / (m - 1)
        value_totals.update(counts)
    n = sum(value_totals.values())
    expected = (n * n - sum(c * c for c in value_totals.values())) / (n - 1)
    if expected == 0.0:  # one value throughout
        return 1.0
    return 1.0 - observed / expected


def preference_units(judgements) -> dict[tuple[str, str, str], dict[str, str]]:
    """(item_id, cand_a, cand_b) with cand_a < cand_b -> {annotator: "a" | "b" | "tie"}, from
    submitted judgements only."""
    units: dict[tuple[str, str, str], dict[str, str]] = {}
    for judgement in judgements:
        if judgement.status != "submitted":
            continue
        item_id = str(judgement.item_id)
        for cand_a, cand_b in combinations(sorted(judgement.ranks), 2):
            rank_a, rank_b = judgement.ranks[cand_a], judgement.ranks[cand_b]
            labels = units.setdefault((item_id, cand_a, cand_b), {})
            if judgement.annotator in labels:
                raise AgreementError(f"Item {item_id}: {judgement.annotator} has more than one "
                                     f"submitted judgement; keep only the latest.")
            label = "a" if rank_a < rank_b else "b" if rank_a > rank_b else "tie"
            labels[judgement.annotator] = label
    return units


def agreement_report(judgements) -> dict:
    """Agreement over the units judged by at least two annotators.

    Returns annotators (sorted names with a submitted judgement), units (number of units judged by
    two or more), percent_agreement (share of annotator pairs on a unit that gave the same label,
    over all such units and pairs; None without units), kappa ("alice/bob" -> Cohen's kappa over
    the units both judged, for each pair of annotators sharing a unit) and alpha (Krippendorff's
    nominal alpha; None without units).
    """
    judgements = list(judgements)
    units = preference_units(judgements)
    annotators = sorted({j.annotator for j in judgements if j.status == "submitted"})
    shared = {key: labels for key, labels in sorted(units.items()) if len(labels) >= 2}
    agreeing = compared = 0
    for labels in shared.values():
        for x, y in combinations(labels.values(), 2):
            agreeing += x == y
            compared += 1
    kappa = {}
    for first, second in combinations(annotators, 2):
        both = [labels for labels in shared.values() if first in labels and second in labels]
        if both:
            kappa[f"{first}/{second}"] = cohen_kappa([labels[first] for labels in both],
                                                     [labels[second] for labels in both])
    return {
        "annotators": annotators,
        "units": len(shared),
        "percent_agreement": agreeing / compared if compared else None,
        "kappa": kappa,
        "alpha": krippendorff_alpha([list(labels.values()) for labels in shared.values()])
        if shared else None,
    }
