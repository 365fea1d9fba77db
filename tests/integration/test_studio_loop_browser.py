"""The whole preference loop in chromium, from the Loop tab, as a user runs it: candidates for 30 demo prompts
from a demo SFT model, all 30 annotated by keyboard (one tie, one skip, one edit, a reload half-way through an
item), the pairs exported (exactly what was ranked), a reward model trained on them (from its edited YAML)
whose gate message appears because its accuracy is under the bar (the annotator ranks at random, seeded, so
there is nothing to learn; PPO stays disabled until the override is ticked), PPO run, and the before/after
report opened for the annotated and the held-out prompts."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time

import pytest
import yaml

from alignlab.studio.pairs import build_pairs
from alignlab.studio.project import Project
from tests.conftest import ROOT
from tests.integration.webui_helpers import (
    SHOTS,
    chromium_browser,
    keys,
    next_item,
    open_project,
    pick,
    served_app,
    settled,
    shown,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def demo_sft(tmp_path_factory):
    """The demo SFT model (examples/demo/sft.yaml), trained for 150 steps instead of 8 epochs."""
    out = tmp_path_factory.mktemp("demo") / "sft"
    subprocess.run([sys.executable, "-m", "alignlab.cli", "train", "examples/demo/sft.yaml", f"output_dir={out}",
                    "max_steps=150", "save_steps=1000"], check=True, cwd=ROOT, capture_output=True)
    return out


def overview(page) -> dict[str, str]:
    """step -> state, as the overview table says."""
    rows = {}
    for row in page.locator("#loop_overview tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        rows[cells[0].split("·", 1)[1].strip()] = cells[1].strip()
    return rows


def wait_state(page, step: str, state: str) -> None:
    """Wait until the overview shows `state` for `step`; a failed step says what its log ended with (a hang
    ends at the test's timeout)."""
    while (now := overview(page).get(step)) != state:
        if now == "failed":
            raise AssertionError(f"{step} failed\n{page.locator('#loop_log textarea').input_value()}")
        time.sleep(0.5)


def yaml_box(page, elem_id: str) -> str:
    """Open the folded YAML box `elem_id` (once) and read it."""
    if not page.locator(f"#{elem_id} .cm-content").is_visible():
        page.locator(f"#{elem_id}_box .label-wrap").first.click()
    return page.locator(f"#{elem_id} .cm-content").inner_text()


def set_yaml(page, elem_id: str, text: str) -> None:
    """Replace the text of a YAML editor as a person does: select all, type."""
    yaml_box(page, elem_id)
    page.locator(f"#{elem_id} .cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)


def test_the_whole_loop_from_the_loop_tab(demo_sft, tmp_path):
    root = tmp_path / "runs"
    folder = root / "studio" / "kids"
    SHOTS.mkdir(parents=True, exist_ok=True)
    expected: dict[str, dict[str, int]] = {}
    with served_app(root) as url, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        model = page.locator("#model input")
        model.fill(str(demo_sft))
        model.press("Enter")
        pick(page, "template", "qwen3_nothink")
        page.get_by_role("tab", name="Loop").click()
        name = page.locator("#loop_name input")
        name.fill("kids")
        name.press("Enter")
        pick(page, "loop_c_dataset", "demo_rl")
        page.locator("#loop_c_samples input").fill("30")
        page.locator("#loop_c_tokens input").fill("48")
        page.locator("#loop_c_start").click()
        wait_state(page, "candidates", "done")
        assert "30 prompts × 3 answers" in page.locator("#loop_overview").inner_text()
        shown_yaml = yaml_box(page, "loop_c_yaml")
        assert f"output_dir: {folder}" in shown_yaml and "num_candidates: 3" in shown_yaml

        page.locator("#loop_a_open").click()  # the Annotate tab opens on the loop's project
        assert page.locator("#ann_project input").input_value() == str(folder)
        open_project(page, url, folder)
        for n in range(30):
            item, order = shown(page)
            # ranks at random (seeded): nothing a reward model can learn, so its held-out accuracy stays
            # near chance, under the gate
            ranks = random.Random(n).sample(range(1, len(order) + 1), len(order))
            if n == 1:  # a tie for the best answer
                ranks = [1 if r <= 2 else 2 for r in ranks]
            if n == 2:
                keys(page, "s")
                next_item(page, item)
                continue
            if n == 10:  # half-ranked, then the page is reloaded and the annotator goes on
                keys(page, str(ranks[0]))
                page.reload()
                open_project(page, url, folder)
                assert shown(page) == (item, order)
                assert page.locator(".ann-cand .ann-rank").all_inner_texts()[0] == f"rank {ranks[0]}"
                keys(page, "ArrowDown", *map(str, ranks[1:]))
            else:
                keys(page, *map(str, ranks))
            if n == 3:  # the best answer rewritten
                keys(page, "e")
                page.locator("textarea.ann-edit-text").fill("Size 110 fits best.")
                page.keyboard.press("Control+Enter")
                settled(page)
            expected[item] = dict(zip(order, ranks))
            keys(page, "Enter")
            next_item(page, item)
        assert "All 30 items are done" in page.locator(".ann-finished").inner_text()

        page.get_by_role("tab", name="Loop").click()
        page.locator("#loop_e_start").click()
        wait_state(page, "export pairs", "done")
        project = Project(folder)
        try:
            judgements = project.store.judgements()
            assert {j.item_id: j.ranks for j in judgements if j.status == "submitted"} == expected
            want, counts = build_pairs(project.items, judgements, "best_vs_rest", "majority")
        finally:
            project.close()
        assert json.loads((folder / "pairs.json").read_text()) == want  # the pairs are what was ranked
        assert (counts["submitted"], counts["skipped"]) == (29, 1)

        rm_yaml = yaml_box(page, "loop_r_yaml")
        assert "dataset: kids_pairs" in rm_yaml and f"output_dir: {folder / 'rm-1'}" in rm_yaml
        set_yaml(page, "loop_r_yaml", rm_yaml.replace("num_train_epochs: 3", "num_train_epochs: 2"))
        page.locator("#loop_r_start").click()
        wait_state(page, "reward model", "done")
        accuracy = json.loads((folder / "rm-1" / "all_results.json").read_text())["eval_accuracy"]
        assert accuracy < 0.85, "random rankings taught the reward model something: pick another seed"
        ran = yaml.safe_load((folder / "rm-1" / "run_config.yaml").read_text())
        assert (ran["num_train_epochs"], ran["dataset"]) == (2, "kids_pairs")  # the edited YAML ran
        gate = page.locator("#loop_gate")
        gate.filter(has_text="below").wait_for()
        more = re.search(r"annotate about (\d+) more", gate.inner_text()).group(1)
        assert 20 <= int(more) <= 50 and page.locator("#loop_more").inner_text() == f"Annotate {more} more items"
        page.locator("#loop_more").click()  # all 30 are done: candidates for `more` further prompts, then Annotate
        page.locator("#ann_project").filter(visible=True).wait_for()
        assert page.locator("#ann_project input").input_value() == str(folder)
        page.get_by_role("tab", name="Loop").click()
        page.locator("#loop_overview").filter(has_text=f"{30 + int(more)} prompts × 3 answers").wait_for(
            timeout=240_000)
        wait_state(page, "candidates", "done")
        assert overview(page)["annotate"] == "in progress"
        assert page.locator("#loop_p_start").is_disabled()
        page.locator("#loop_p_override input").check()
        page.locator("#loop_p_start:not([disabled])").wait_for()
        page.screenshot(path=str(SHOTS / "studio_loop_gate_page.png"), full_page=True)
        page.locator("#loop_rm").screenshot(path=str(SHOTS / "studio_loop_gate.png"))
        page.locator("#loop_overview").screenshot(path=str(SHOTS / "studio_loop_overview.png"))
        ppo_yaml = yaml_box(page, "loop_p_yaml")
        assert "rm_gate_override: true" in ppo_yaml and f"reward_model: {folder / 'rm-1'}" in ppo_yaml
        set_yaml(page, "loop_p_yaml", ppo_yaml.replace("max_steps: 40", "max_steps: 3"))
        page.locator("#loop_p_start").click()
        wait_state(page, "PPO / DPO", "done")
        ran = yaml.safe_load((folder / "ppo-1" / "run_config.yaml").read_text())
        assert (ran["rm_gate_override"], ran["max_steps"]) == (True, 3)

        pick(page, "loop_h_dataset", "demo_prompts")
        page.locator("#loop_h_annotated input").fill("8")
        page.locator("#loop_h_samples input").fill("8")
        page.locator("#loop_h_start").click()
        wait_state(page, "before / after", "done")
        report = page.frame_locator("#loop_h_report iframe")
        report.locator("body").filter(has_text="before").wait_for()
        page.get_by_role("radio", name="held-out prompts").check()
        first = json.loads((ROOT / "data" / "demo_prompts.json").read_text())[0]["instruction"]
        page.wait_for_function("(text) => document.querySelector('#loop_h_report iframe')?.srcdoc.includes(text)",
                               arg=first)
        page.screenshot(path=str(SHOTS / "studio_loop_page.png"), full_page=True)
        page.locator("#loop_compare").screenshot(path=str(SHOTS / "studio_loop.png"))
        rm_next = yaml_box(page, "loop_r_yaml")  # the next rm run starts from the last one's settings
        assert f"output_dir: {folder / 'rm-2'}" in rm_next and "num_train_epochs: 2" in rm_next
    runs = [r["folder"] for r in json.loads((folder / "loop.json").read_text())["runs"]]
    assert runs == ["rm-1", "ppo-1", "compare-1"]
