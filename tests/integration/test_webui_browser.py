"""The web UI in a real browser (Playwright + Debian's chromium, headless): choose the tiny model, sft,
the demo dataset and a few steps, Start; the page shows the logged points and the run in the Runs tab."""

from __future__ import annotations

import time

import pytest

from tests.conftest import read_jsonl
from tests.integration.webui_helpers import (  # noqa: F401
    SHOTS,
    chromium_browser,
    free_port,
    pick,
    served_app,
    table,
)

pytestmark = pytest.mark.timeout(400)
_free_port = free_port


@pytest.fixture
def browser():
    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def served(base_model_dir, tmp_path):
    root = tmp_path / "saves"
    with served_app(root, (base_model_dir,)) as url:
        yield url, root


def fill(page, group: str, key: str, value) -> None:
    box = page.locator(f"#group-{group} #key-{key}").locator("input, textarea").first
    box.wait_for(state="visible")
    page.wait_for_timeout(300)  # an accordion just opened renders its inputs once more
    box.fill(str(value))
    box.press("Tab")  # committed as a person leaving the field does


def test_train_from_the_page_then_find_the_run_finished(browser, served, base_model_dir):
    url, root = served
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector("#start", timeout=60_000)
    pick(page, "model", str(base_model_dir))
    pick(page, "template", "qwen3_nothink")
    pick(page, "dataset", "demo_sft")
    fill(page, "essentials", "max_steps", 4)
    fill(page, "essentials", "per_device_train_batch_size", 4)
    fill(page, "essentials", "logging_steps", 1)
    fill(page, "essentials", "learning_rate", 0.001)
    page.click("#group-data")
    fill(page, "data", "cutoff_len", 64)
    fill(page, "data", "max_samples", 64)
    page.locator("#group-data").get_by_text("data", exact=True).click()  # closed again
    page.click("#start")
    page.locator("#message").get_by_text("Started").wait_for(timeout=30_000)
    run_dir = next(root.iterdir())
    written = (run_dir / "webui_config.yaml").read_text()
    assert all(f"{key}: {value}\n" in written for key, value in
               [("max_steps", 4), ("cutoff_len", 64), ("max_samples", 64), ("per_device_train_batch_size", 4)]), written

    page.locator("#log_rows [role=gridcell]").first.wait_for(timeout=120_000)  # a first point
    page.locator("#progress").get_by_text("finished").wait_for(timeout=240_000)
    time.sleep(2.5)  # one more refresh after the last row
    logged = [r for r in read_jsonl(run_dir / "trainer_log.jsonl") if "train_runtime" not in r]
    shown = table(page, "log_rows")
    assert [int(r["current_steps"]) for r in shown] == [r["current_steps"] for r in logged] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in shown] == pytest.approx([r["loss"] for r in logged], rel=1e-3)
    assert "step 4/4" in page.locator("#progress").inner_text()
    page.screenshot(path=str(SHOTS / "webui_train.png"), full_page=True)

    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs_table [role=gridcell]").first.wait_for(timeout=30_000)
    [row] = table(page, "runs_table")
    assert row["run"] == run_dir.name and row["status"] == "finished" and row["stage"] == "sft"
    assert row["steps"] == "4/4" and "loss" in row["final metrics"]
    pick(page, "compare", run_dir.name)
    page.keyboard.press("Escape")
    page.locator("#overlay").get_by_text(run_dir.name).wait_for(timeout=30_000)  # the curve's legend
    page.screenshot(path=str(SHOTS / "webui_runs.png"), full_page=True)
