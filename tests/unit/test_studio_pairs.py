"""Rankings to preference pairs: each pair mode on a ranking with a tie, edits as chosen text,
per-annotator and majority rows checked field by field, the counts, and the errors."""

from __future__ import annotations

import pytest

from alignlab.studio.pairs import Judgement, build_pairs, ranked_pairs

PROMPT = {"system": "Be brief.", "history": [["hi", "hello"]], "instruction": "Name a colour."}


def item(item_id, *texts: str) -> dict:
    return {"id": item_id, "prompt": PROMPT,
            "candidates": [{"id": f"c{i}", "text": t} for i, t in enumerate(texts)]}


def submitted(item_id: str, annotator: str, edit: str | None = None, **ranks: int) -> Judgement:
    return Judgement(item_id, annotator, "submitted", ranks, edit)


def chosen_rejected(rows) -> list[tuple[str, str, str]]:
    return [(r["id"], r["chosen"], r["rejected"]) for r in rows]


def test_pair_modes_on_a_ranking_with_a_tie():
    ranks = {"c3": 3, "c2": 2, "c1": 2, "c0": 1}  # levels [c0], [c1, c2], [c3]
    assert ranked_pairs(ranks, "best_vs_rest") == [("c0", "c1"), ("c0", "c2"), ("c0", "c3")]
    assert ranked_pairs(ranks, "adjacent") == [("c0", "c1"), ("c0", "c2"), ("c1", "c3"),
                                               ("c2", "c3")]
    assert ranked_pairs(ranks, "all_pairs") == [("c0", "c1"), ("c0", "c2"), ("c0", "c3"),
                                                ("c1", "c3"), ("c2", "c3")]
    assert ranked_pairs({"c0": 1, "c1": 1}, "all_pairs") == []  # a tie never gives a pair
    # rank numbers need not be consecutive; insertion order does not matter
    assert ranked_pairs({"c1": 7, "c0": 3}, "adjacent") == [("c0", "c1")]
    with pytest.raises(ValueError, match="Unknown pair mode 'best'"):
        ranked_pairs(ranks, "best")


def test_per_annotator_rows_field_by_field():
    items = [item(7, "red", "blue", "green")]
    judgements = [submitted("7", "bob", c0=2, c1=1, c2=3),
                  submitted("7", "alice", c0=1, c1=2, c2=3)]
    rows, counts = build_pairs(items, judgements, "best_vs_rest", "per_annotator")
    assert rows[0] == {
        "id": "7:c0>c1@alice", "item_id": "7", "system": "Be brief.",
        "instruction": "Name a colour.", "input": "", "history": [["hi", "hello"]],
        "chosen": "red", "rejected": "blue",
        "chosen_candidate": "c0", "rejected_candidate": "c1", "annotators": ["alice"]}
    assert [r["id"] for r in rows] == ["7:c0>c1@alice", "7:c0>c2@alice", "7:c1>c0@bob",
                                       "7:c1>c2@bob"]
    assert [r["annotators"] for r in rows] == [["alice"], ["alice"], ["bob"], ["bob"]]
    assert counts == {"items": 1, "submitted": 1, "unannotated": 0, "skipped": 0, "flagged": 0,
                      "pairs": 4, "ties": 0, "no_majority": 0, "identical_texts": 0}


def test_edit_becomes_the_chosen_text_and_beats_each_best_candidate_it_changed():
    items = [item("q1", "red", "Red ", "blue")]
    judgement = submitted("q1", "alice", edit="Crimson.", c0=1, c1=1, c2=2)
    rows, counts = build_pairs(items, [judgement], "all_pairs", "per_annotator")
    assert chosen_rejected(rows) == [
        ("q1:c0>c2@alice", "Crimson.", "blue"), ("q1:c1>c2@alice", "Crimson.", "blue"),
        ("q1:edit>c0@alice", "Crimson.", "red"), ("q1:edit>c1@alice", "Crimson.", "Red ")]
    assert [(r["chosen_candidate"], r["rejected_candidate"]) for r in rows][2] == ("edit", "c0")
    assert counts["ties"] == 1 and counts["pairs"] == 4

    # an edit equal to a best candidate (after strip) adds no edit pair against it
    unchanged = submitted("q1", "alice", edit=" red\n", c0=1, c1=2, c2=3)
    rows, _ = build_pairs(items, [unchanged], "best_vs_rest", "per_annotator")
    assert [r["id"] for r in rows] == ["q1:c0>c1@alice", "q1:c0>c2@alice"]
    # a blank edit is no edit
    blank = submitted("q1", "alice", edit="  ", c0=1, c1=2, c2=3)
    rows, _ = build_pairs(items, [blank], "best_vs_rest", "per_annotator")
    assert [r["chosen"] for r in rows] == ["red", "red"]


def test_identical_texts_are_dropped_and_counted():
    items = [item(1, "same", " same ", "other")]  # duplicate candidates c0, c1
    rows, counts = build_pairs(items, [submitted("1", "alice", c0=1, c1=2, c2=3)],
                               "all_pairs", "per_annotator")
    assert [r["id"] for r in rows] == ["1:c0>c2@alice", "1:c1>c2@alice"]
    assert counts["identical_texts"] == 1 and counts["pairs"] == 2
    # an edit equal to a worse candidate's text gives a pair with equal texts: dropped too
    rows, counts = build_pairs(items, [submitted("1", "alice", edit="other", c0=1, c1=2, c2=3)],
                               "best_vs_rest", "per_annotator")
    assert [r["id"] for r in rows] == ["1:c0>c1@alice", "1:edit>c0@alice"]
    assert counts["identical_texts"] == 1


def test_counts_judgements_for_skipped_flagged_and_items_for_submitted_unannotated():
    items = [item(i, "a", "b") for i in range(4)]
    judgements = [
        Judgement("1", "alice", "skipped", {}),
        Judgement("2", "bob", "flagged", {}),
        submitted("2", "alice", c0=1, c1=2),  # item 2: flagged by bob and submitted by alice
        submitted("3", "alice", c0=1, c1=1),  # a tie: submitted, no pair
        Judgement("3", "bob", "skipped", {"c0": 1}),  # ranks of a skipped judgement are not checked
    ]
    rows, counts = build_pairs(items, judgements, "best_vs_rest", "per_annotator")
    assert [r["id"] for r in rows] == ["2:c0>c1@alice"]
    assert counts == {"items": 4, "submitted": 2, "unannotated": 1, "skipped": 2, "flagged": 1,
                      "pairs": 1, "ties": 1, "no_majority": 0, "identical_texts": 0}


def test_majority_keeps_pairs_more_than_half_agree_on_with_their_voters():
    items = [item("q", "A", "B", "C")]
    judgements = [submitted("q", "alice", c0=1, c1=2, c2=3),
                  submitted("q", "bob", c0=1, c1=3, c2=2),
                  submitted("q", "carol", c0=2, c1=1, c2=2)]  # carol ties c0 and c2
    rows, counts = build_pairs(items, judgements, "all_pairs", "majority")
    # c0>c1: alice, bob (2 of 3); c0>c2: alice, bob, carol tie counts for neither (2 of 3);
    # c1>c2: alice, carol (2 of 3)
    assert chosen_rejected(rows) == [("q:c0>c1", "A", "B"), ("q:c0>c2", "A", "C"),
                                     ("q:c1>c2", "B", "C")]
    assert [r["annotators"] for r in rows] == [["alice", "bob"], ["alice", "bob"],
                                               ["alice", "carol"]]
    assert counts["no_majority"] == 0 and counts["ties"] == 1


def test_majority_needs_strictly_more_than_half():
    items = [item("q", "A", "B"), item("r", "A", "B")]
    judgements = [submitted("q", "alice", c0=1, c1=2), submitted("q", "bob", c0=2, c1=1),  # 1 vs 1
                  submitted("r", "alice", c0=1, c1=2), submitted("r", "bob", c0=1, c1=1)]  # 1 of 2
    rows, counts = build_pairs(items, judgements, "all_pairs", "majority")
    assert rows == []
    assert counts["no_majority"] == 2 and counts["ties"] == 1 and counts["submitted"] == 2


def test_majority_considers_only_pairs_the_mode_yields_for_some_judgement():
    items = [item("q", "A", "B", "C")]
    judgements = [submitted("q", name, c0=1, c1=2, c2=3) for name in ("alice", "bob")]
    rows, _ = build_pairs(items, judgements, "best_vs_rest", "majority")
    assert [r["id"] for r in rows] == ["q:c0>c1", "q:c0>c2"]  # c1>c2 is no best_vs_rest pair


def test_majority_uses_original_texts_plus_each_annotators_edit_pairs():
    items = [item("q", "A", "B")]
    judgements = [submitted("q", "bob", edit="A, better", c0=1, c1=2),
                  submitted("q", "alice", edit="A+", c0=1, c1=2)]
    rows, _ = build_pairs(items, judgements, "all_pairs", "majority")
    assert chosen_rejected(rows) == [("q:c0>c1", "A", "B"), ("q:edit>c0@alice", "A+", "A"),
                                     ("q:edit>c0@bob", "A, better", "A")]
    assert [r["annotators"] for r in rows] == [["alice", "bob"], ["alice"], ["bob"]]


def test_majority_with_one_judgement_gives_that_judgements_pairs():
    items = [item("q", "A", "B", "C")]
    judgements = [submitted("q", "alice", edit="A+", c0=1, c1=2, c2=3)]
    majority, _ = build_pairs(items, judgements, "adjacent", "majority")
    per_annotator, _ = build_pairs(items, judgements, "adjacent", "per_annotator")
    without_id = lambda rows: [{k: v for k, v in r.items() if k != "id"} for r in rows]
    assert without_id(majority) == without_id(per_annotator)
    assert [r["chosen"] for r in majority] == ["A+", "B", "A+"]  # the edit replaces the best text
    assert [r["id"] for r in majority] == ["q:c0>c1", "q:c1>c2", "q:edit>c0@alice"]


@pytest.mark.parametrize("judgement, message", [
    (submitted("q", "alice", c0=1), r"Item q: the submitted ranks of alice cover \['c0'\]"),
    (submitted("q", "alice", c0=1, c1=2, c9=3), "Item q: .* but the item's candidates are"),
    (submitted("q", "alice", c0=0, c1=1), "Item q: the ranks of alice must be whole numbers"),
    (submitted("nope", "alice", c0=1, c1=2), "Item nope: .* not in the project"),
    (Judgement("q", "alice", "done", {}), "Item q: .* status 'done'"),
])
def test_bad_judgements_name_the_item_and_the_problem(judgement, message):
    with pytest.raises(ValueError, match=message):
        build_pairs([item("q", "A", "B")], [judgement], "all_pairs", "per_annotator")


def test_bad_modes_and_duplicate_judgements_raise():
    items = [item("q", "A", "B")]
    with pytest.raises(ValueError, match="Unknown annotator mode 'vote'"):
        build_pairs(items, [], "all_pairs", "vote")
    with pytest.raises(ValueError, match="Unknown pair mode 'pairs'"):
        build_pairs(items, [], "pairs", "majority")
    twice = [submitted("q", "alice", c0=1, c1=2), submitted("q", "alice", c0=2, c1=1)]
    with pytest.raises(ValueError, match="Item q: alice has more than one judgement"):
        build_pairs(items, twice, "all_pairs", "majority")
