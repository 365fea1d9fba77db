"""The annotation store through the project's page calls (`view`, `Project.act`): the stored ranking is
the ranking the page displayed, for random permutations and ties (Argilla once saved every ranking as
1, 2, 3); resends are recorded once; a reopened store restores a half-done ranking; refused actions
record nothing."""

from __future__ import annotations

import json
import random

import pytest

from alignlab.studio.pairs import build_pairs
from alignlab.studio.project import Project, view
from alignlab.studio.store import ActionError


def project_folder(tmp_path, sizes: list[int]):
    rows = [{"id": i, "prompt": {"system": "", "history": [], "instruction": f"q{i}"},
             "candidates": [{"id": f"c{j}", "text": f"answer {j} of {i}"} for j in range(k)]} for i, k in enumerate(sizes)]
    (tmp_path / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_stored_ranking_is_the_displayed_ranking(tmp_path):
    rng = random.Random(7)
    sizes = [rng.randint(2, 4) for _ in range(200)]
    project = Project(project_folder(tmp_path, sizes))
    displayed: dict[str, dict[str, int]] = {}
    n = 0
    try:
        for i, k in enumerate(sizes):
            shown = view(project, "ada", str(i))
            order = [c["id"] for c in shown["candidates"]]
            assert sorted(order) == [f"c{j}" for j in range(k)]
            ranks_by_position = [rng.randint(1, k) for _ in range(k)]  # ties and gaps happen
            for position in rng.sample(range(k), k):  # ranked in any order, some changed or cleared first
                if rng.random() < 0.3:
                    n += 1
                    project.act("ada", f"a{n}", str(i), "rank", {"candidate": order[position], "rank": rng.randint(1, k)})
                    if rng.random() < 0.5:
                        n += 1
                        project.act("ada", f"a{n}", str(i), "rank", {"candidate": order[position], "rank": None})
                n += 1
                project.act("ada", f"a{n}", str(i), "rank", {"candidate": order[position],
                                                            "rank": ranks_by_position[position]})
            page = view(project, "ada", str(i))  # what a reload shows before submitting
            assert [c["rank"] for c in page["candidates"]] == ranks_by_position
            displayed[str(i)] = dict(zip(order, ranks_by_position))
            n += 1
            project.act("ada", f"a{n}", str(i), "submit", {"ranks": displayed[str(i)]})
        judgements = project.store.judgements()
        assert {j.item_id: j.ranks for j in judgements} == displayed
        rows, _ = build_pairs(project.items, judgements, "all_pairs", "per_annotator")
        for row in rows:
            ranks = displayed[row["item_id"]]
            assert ranks[row["chosen_candidate"]] < ranks[row["rejected_candidate"]]
        assert len(rows) == sum(sum(a < b for a in r.values() for b in r.values()) for r in displayed.values())
    finally:
        project.close()


def test_resends_restart_and_refusals(tmp_path):
    folder = project_folder(tmp_path, [3, 3, 2])
    project = Project(folder)
    first = view(project, "ada")
    assert first["item"]["id"] == "0" and first["done"] == 0
    order = [c["id"] for c in first["candidates"]]
    assert project.act("ada", "x1", "0", "rank", {"candidate": order[0], "rank": 2}) is True
    assert project.act("ada", "x1", "0", "rank", {"candidate": order[0], "rank": 2}) is False  # a resend
    project.act("ada", "x2", "0", "rank", {"candidate": order[2], "rank": 1})
    count = len(project.store.actions())
    for kind, item, payload in (("shout", "0", {}), ("rank", "0", {"candidate": order[1], "rank": 4}),
                                ("rank", "0", {"candidate": "c7", "rank": 1}),
                                ("submit", "0", {"ranks": {order[0]: 1, order[1]: 2}}), ("skip", "9", {})):
        with pytest.raises(ActionError):
            project.act("ada", f"bad-{kind}-{item}", item, kind, payload)
    assert len(project.store.actions()) == count
    project.close()

    project = Project(folder)  # a restarted server
    try:
        again = view(project, "ada")
        assert again["item"]["id"] == "0" and [c["id"] for c in again["candidates"]] == order
        assert [c["rank"] for c in again["candidates"]] == [2, None, 1]
        project.act("ada", "x3", "0", "submit", {"ranks": {order[0]: 2, order[1]: 3, order[2]: 1}})
        project.act("ada", "x4", "1", "flag", {"reason": "off topic"})
        assert view(project, "ada")["item"]["id"] == "2"
        bob = view(project, "bob")  # another annotator starts at the beginning, with his own order
        assert bob["item"]["id"] == "0" and all(c["rank"] is None for c in bob["candidates"])
        project.act("bob", "y1", "0", "skip", {})
        assert project.progress() == {"total": 3, "done": {"ada": 2, "bob": 1}}
        project.act("ada", "x5", "2", "skip", {})
        assert view(project, "ada")["finished"] is True
        project.act("ada", "x6", "1", "reopen", {})
        assert view(project, "ada")["item"]["id"] == "1"
    finally:
        project.close()
