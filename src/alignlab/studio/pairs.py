"""Rankings people gave to an item's candidates, turned into preference pairs for rm/dpo/kto.

A judgement ranks every candidate of one item (1 = best; equal numbers are a tie, and a tie
never gives a pair). `ranked_pairs` picks which (better, worse) pairs a ranking yields;
`build_pairs` turns all judgements into pairwise rows (system, instruction, input, history,
chosen, rejected), either one set per annotator or the pairs a majority of annotators agree on.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from ..errors import UserError

PAIR_MODES = ("best_vs_rest", "adjacent", "all_pairs")
ANNOTATOR_MODES = ("majority", "per_annotator")
STATUSES = ("submitted", "skipped", "flagged")
EDIT_ID = "edit"  # the chosen candidate id of a pair whose chosen text is an annotator's rewrite


class JudgementError(ValueError, UserError):
    """A judgement or mode that cannot be turned into pairs; the message names the item."""


@dataclass(frozen=True)
class Judgement:
    """One annotator's verdict on one item.

    ranks: candidate id -> rank (1 = best; equal numbers = a tie); covers every candidate when
    submitted. edit: the annotator's rewrite of the best answer; it becomes the chosen text.
    """

    item_id: str
    annotator: str
    status: str
    ranks: dict[str, int]
    edit: str | None = None


def rank_levels(ranks: dict[str, int]) -> list[list[str]]:
    """Candidate ids grouped by rank, best level first; ids sorted within a level."""
    by_rank: dict[int, list[str]] = defaultdict(list)
    for candidate_id in sorted(ranks):
        by_rank[ranks[candidate_id]].append(candidate_id)
    return [by_rank[rank] for rank in sorted(by_rank)]


def ranked_pairs(ranks: dict[str, int], mode: str) -> list[tuple[str, str]]:
    """(chosen id, rejected id) pairs a ranking yields, better level first, then worse level.

    mode: best_vs_rest (best level vs every worse level), adjacent (level k vs level k+1),
    all_pairs (every a, b with rank a < rank b).
    """
    if mode not in PAIR_MODES:
        raise JudgementError(f"Unknown pair mode {mode!r}: use one of {', '.join(PAIR_MODES)}.")
    levels = rank_levels(ranks)
    if mode == "best_vs_rest":
        level_pairs = [(0, worse) for worse in range(1, len(levels))]
    elif mode == "adjacent":
        level_pairs = [(k, k + 1) for k in range(len(levels) - 1)]
    else:
        level_pairs = [(i, j) for i in range(len(levels)) for j in range(i + 1, len(levels))]
    return [(a, b) for i, j in level_pairs for a in levels[i] for b in levels[j]]


def _edit_text(judgement: Judgement) -> str | None:
    """The annotator's rewrite, or None when there is none (a blank edit is no edit)."""
    return judgement.edit if judgement.edit and judgement.edit.strip() else None


def _edit_pairs(judgement: Judgement, texts: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(chosen id, rejected id, chosen text, rejected text): the edit over each best candidate it
    changed."""
    edit = _edit_text(judgement)
    if edit is None:
        return []
    best = rank_levels(judgement.ranks)[0]
    return [(EDIT_ID, c, edit, texts[c]) for c in best if texts[c].strip() != edit.strip()]


def _annotator_pairs(judgement: Judgement, texts: dict[str, str], mode: str):
    """One judgement's pairs as (chosen id, rejected id, chosen text, rejected text); a best-level
    chosen candidate carries the edit's text when there is an edit."""
    edit = _edit_text(judgement)
    best = set(rank_levels(judgement.ranks)[0])
    pairs = [(a, b, edit if edit is not None and a in best else texts[a], texts[b])
             for a, b in ranked_pairs(judgement.ranks, mode)]
    return pairs + _edit_pairs(judgement, texts)


def _tied_pairs(ranks: dict[str, int]) -> int:
    """Number of candidate pairs that share a rank."""
    return sum(n * (n - 1) // 2 for n in Counter(ranks.values()).values())


def _check(judgement: Judgement, candidate_ids: list[str]) -> None:
    """Raise when the status is unknown or submitted ranks are not whole numbers over exactly the
    item's candidates."""
    item = judgement.item_id
    if judgement.status not in STATUSES:
        raise JudgementError(f"Item {item}: judgement by {judgement.annotator} has status "
                             f"{judgement.status!r}; use one of {', '.join(STATUSES)}.")
    if judgement.status != "submitted":
        return
    if set(judgement.ranks) != set(candidate_ids):
        raise JudgementError(f"Item {item}: the submitted ranks of {judgement.annotator} cover "
                             f"{sorted(judgement.ranks)} but the item's candidates are "
                             f"{sorted(candidate_ids)}.")
    if not all(type(r) is int and r >= 1 for r in judgement.ranks.values()):
        raise JudgementError(f"Item {item}: the ranks of {judgement.annotator} must be whole "
                             f"numbers from 1 (best), got {judgement.ranks}.")


def _majority_pairs(submitted: list[Judgement], texts: dict[str, str], candidate_ids: list[str],
                    mode: str):
    """Pairs a strict majority of the item's submitted judgements agree on, as
    (chosen id, rejected id, chosen text, rejected text, annotators), in the item's candidate
    order; plus each annotator's edit pairs. Returns (pairs, number of pairs with no majority)."""
    order = {c: i for i, c in enumerate(candidate_ids)}
    considered = {tuple(sorted(pair, key=order.get))
                  for j in submitted for pair in ranked_pairs(j.ranks, mode)}
    pairs, no_majority = [], 0
    for a, b in sorted(considered, key=lambda p: (order[p[0]], order[p[1]])):
        for chosen, rejected in ((a, b), (b, a)):
            voters = sorted(j.annotator for j in submitted if j.ranks[chosen] < j.ranks[rejected])
            if 2 * len(voters) > len(submitted):
                pairs.append((chosen, rejected, texts[chosen], texts[rejected], voters))
                break
        else:
            no_majority += 1
    for judgement in submitted:
        pairs += [(*pair, [judgement.annotator]) for pair in _edit_pairs(judgement, texts)]
    return pairs, no_majority


def build_pairs(items: list[dict], judgements: list[Judgement], pair_mode: str,
                annotator_mode: str) -> tuple[list[dict], dict]:
    """Pairwise rows from every submitted judgement, and counts of what was used and withheld.

    items: rows {"id", "prompt": {"system", "history", "instruction"}, "candidates":
    [{"id", "text"}]}; item ids are compared as text.
    per_annotator: each submitted judgement gives its own pairs; row id
    "item:chosen>rejected@annotator".
    majority: an item with one submitted judgement gives that judgement's pairs; with several, a
    pair a > b (from `ranked_pairs` of at least one judgement) is kept when strictly more than half
    of the item's submitted judgements rank a above b (a tie counts for neither), with the original
    texts, plus each annotator's edit pairs. Row id "item:chosen>rejected", with "@annotator" only
    on edit pairs (chosen candidate "edit"), so two annotators' edits never share an id.

    Counts: items (rows in `items`); submitted (items with at least one submitted judgement);
    unannotated (items with no judgement of any status); skipped, flagged (judgements with that
    status); pairs (rows returned); ties (candidate pairs sharing a rank, summed over submitted
    judgements); no_majority (majority mode: considered pairs where neither order had a majority);
    identical_texts (pairs dropped because chosen and rejected texts are equal after strip).
    """
    if annotator_mode not in ANNOTATOR_MODES:
        raise JudgementError(f"Unknown annotator mode {annotator_mode!r}: use one of "
                             f"{', '.join(ANNOTATOR_MODES)}.")
    ranked_pairs({}, pair_mode)  # rejects an unknown pair mode even with no judgement
    by_item: dict[str, list[Judgement]] = {str(item["id"]): [] for item in items}
    for judgement in judgements:
        item_id = str(judgement.item_id)
        if item_id not in by_item:
            raise JudgementError(f"Item {item_id}: a judgement by {judgement.annotator} names an "
                                 f"item that is not in the project.")
        if any(j.annotator == judgement.annotator for j in by_item[item_id]):
            raise JudgementError(f"Item {item_id}: {judgement.annotator} has more than one "
                                 f"judgement; keep only the latest.")
        by_item[item_id].append(judgement)

    counts = dict.fromkeys(("items", "submitted", "unannotated", "skipped", "flagged", "pairs",
                            "ties", "no_majority", "identical_texts"), 0)
    counts["items"] = len(items)
    rows = []
    for item in items:
        item_id = str(item["id"])
        texts = {str(c["id"]): c["text"] for c in item["candidates"]}
        candidate_ids = [str(c["id"]) for c in item["candidates"]]
        item_judgements = sorted(by_item[item_id], key=lambda j: j.annotator)
        for judgement in item_judgements:
            _check(judgement, candidate_ids)
        submitted = [j for j in item_judgements if j.status == "submitted"]
        counts["unannotated"] += not item_judgements
        counts["submitted"] += bool(submitted)
        counts["skipped"] += sum(j.status == "skipped" for j in item_judgements)
        counts["flagged"] += sum(j.status == "flagged" for j in item_judgements)
        counts["ties"] += sum(_tied_pairs(j.ranks) for j in submitted)

        if annotator_mode == "per_annotator" or len(submitted) == 1:
            suffix = annotator_mode == "per_annotator"
            pairs = [(*pair, [j.annotator], suffix or pair[0] == EDIT_ID)
                     for j in submitted for pair in _annotator_pairs(j, texts, pair_mode)]
        else:
            majority, no_majority = _majority_pairs(submitted, texts, candidate_ids, pair_mode)
            counts["no_majority"] += no_majority
            pairs = [(*pair, pair[0] == EDIT_ID) for pair in majority]

        prompt = item.get("prompt", {})
        for chosen_id, rejected_id, chosen, rejected, annotators, with_annotator in pairs:
            if chosen.strip() == rejected.strip():
                counts["identical_texts"] += 1
                continue
            row_id = f"{item_id}:{chosen_id}>{rejected_id}"
            rows.append({
                "id": row_id + (f"@{annotators[0]}" if with_annotator else ""),
                "item_id": item_id, "system": prompt.get("system", ""),
                "instruction": prompt.get("instruction", ""), "input": "",
                "history": [list(turn) for turn in prompt.get("history", [])],
                "chosen": chosen, "rejected": rejected,
                "chosen_candidate": chosen_id, "rejected_candidate": rejected_id,
                "annotators": annotators,
            })
    counts["pairs"] = len(rows)
    return rows, counts
