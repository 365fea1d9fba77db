"""The Annotate tab in chromium, keyboard only, as an annotator works: rank, tie, skip, flag, edit the
best answer, reload the page half-way through an item and continue; then the exported pairs are exactly
the rankings the page displayed (answers are shuffled per annotator, so the test reads the order off the
page as a person does)."""

from __future__ import annotations

import json

import pytest

from alignlab.studio.pairs import build_pairs
from alignlab.studio.project import Project
from tests.integration.webui_helpers import (
    SHOTS,
    chromium_browser,
    keys,
    next_item,
    open_project,
    served_app,
    settled,
    shown,
)

pytestmark = pytest.mark.timeout(300)


def write_project(folder, count: int) -> None:
    folder.mkdir(parents=True)
    rows = [{"id": i, "prompt": {"system": "", "history": [], "instruction": f"What size for {80 + 5 * i} cm?"},
             "candidates": [{"id": f"c{j}", "text": f"**Size {90 + 10 * j}** for prompt {i}.\n\n- reason {j}"}
                            for j in range(3)]} for i in range(count)]
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "guideline.md").write_text("Prefer the answer with the **correct size**; concise, no filler.")


def test_keyboard_annotation_with_reload_exports_what_was_displayed(tmp_path):
    root = tmp_path / "runs"
    folder = root / "studio" / "demo"
    write_project(folder, 6)
    expected: dict[str, dict[str, int]] = {}
    SHOTS.mkdir(parents=True, exist_ok=True)
    with served_app(root) as url, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        open_project(page, url, folder)
        assert "correct size" in page.locator(".ann-guide").inner_text()

        item, order = shown(page)  # item 0: ranks 2, 1, 3 by displayed position
        keys(page, "2", "1", "3")
        assert page.locator(".ann-cand .ann-rank").all_inner_texts() == ["rank 2", "rank 1", "rank 3"]
        page.screenshot(path=str(SHOTS / "annotate_ranked.png"), full_page=True)
        expected[item] = dict(zip(order, [2, 1, 3]))
        keys(page, "Enter")
        next_item(page, item)

        item, order = shown(page)  # item 1: a tie for best
        keys(page, "1", "1", "2", "Enter")
        expected[item] = dict(zip(order, [1, 1, 2]))
        next_item(page, item)

        item, _ = shown(page)  # item 2: skipped
        keys(page, "s")
        next_item(page, item)

        item, order = shown(page)  # item 3: half-ranked, then the page is reloaded
        keys(page, "3")
        page.reload()
        open_project(page, url, folder)
        again, order_again = shown(page)
        assert (again, order_again) == (item, order)  # back on the unfinished item, same order
        assert page.locator(".ann-cand .ann-rank").all_inner_texts()[0] == "rank 3"
        keys(page, "ArrowDown", "1", "2")  # cursor 1 -> rank 1; it moves on to the last unranked -> rank 2
        keys(page, "e")
        page.locator("textarea.ann-edit-text").fill("**Size 110**: the best answer, rewritten.")
        page.keyboard.press("Control+Enter")
        settled(page)
        assert "rewritten" in page.locator(".ann-edited").inner_text()
        page.screenshot(path=str(SHOTS / "annotate_edited.png"), full_page=True)
        expected[item] = dict(zip(order, [3, 1, 2]))
        keys(page, "Enter")
        next_item(page, item)

        item, _ = shown(page)  # item 4: flagged
        keys(page, "f")
        next_item(page, item)

        item, order = shown(page)  # item 5: refused until complete, then ranked
        keys(page, "1", "Enter")
        assert "missing" in page.locator(".ann-error").inner_text()
        keys(page, "2", "3", "Enter")
        expected[item] = dict(zip(order, [1, 2, 3]))
        next_item(page, item)
        assert "All 6 items are done" in page.locator(".ann-finished").inner_text()
        assert page.locator(".ann-head b").inner_text() == "6 / 6 done"

    project = Project(folder)
    try:
        judgements = {j.item_id: j for j in project.store.judgements()}
        assert {k: j.status for k, j in judgements.items()} == {
            "0": "submitted", "1": "submitted", "2": "skipped", "3": "submitted", "4": "flagged", "5": "submitted"}
        assert {k: j.ranks for k, j in judgements.items() if j.status == "submitted"} == expected
        assert judgements["3"].edit == "**Size 110**: the best answer, rewritten."
        report = project.export(str(tmp_path), "studio_pairs", "best_vs_rest", "majority")
    finally:
        project.close()
    rows = json.loads((folder / "pairs.json").read_text())
    want, _ = build_pairs(project.items, list(judgements.values()), "best_vs_rest", "majority")
    assert rows == want
    texts = {str(r["id"]): {c["id"]: c["text"] for c in r["candidates"]} for r in project.items}
    for row in rows:  # the chosen answer was ranked above the rejected one on the page
        ranks = expected[row["item_id"]]
        if row["chosen_candidate"] == "edit":
            assert row["chosen"] == judgements["3"].edit and row["rejected"] == texts["3"][row["rejected_candidate"]]
        else:
            assert ranks[row["chosen_candidate"]] < ranks[row["rejected_candidate"]]
            assert row["rejected"] == texts[row["item_id"]][row["rejected_candidate"]]
    counts = report["counts"]
    assert (counts["skipped"], counts["flagged"], counts["submitted"]) == (1, 1, 4)
    assert counts["ties"] == 1  # item 1's two best answers give no pair
