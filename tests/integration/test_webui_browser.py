"""The web UI in a real browser (Playwright + Debian's chromium, headless): choose the tiny model, sft,
the demo dataset and a few steps, Start; the page shows the logged points and the run in the Runs tab."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from tests.conftest import ROOT, read_jsonl

pytestmark = pytest.mark.timeout(400)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "build" / "screenshots"  # the best are copied to docs/images by hand


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                     "'alignlab[dev]')")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def served(base_model_dir, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'alignlab[webui]')")
    from alignlab.webui.app import CSS, build_app

    root = tmp_path / "saves"
    app = build_app(root, str(ROOT / "data"), models=(str(base_model_dir),))
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    yield f"http://127.0.0.1:{port}/", root
    app.close()


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def fill(page, group: str, key: str, value) -> None:
    page.locator(f"#group-{group} #key-{key}").locator("input, textarea").first.fill(str(value))


def table(page, elem_id: str) -> list[dict]:
    """The rows of a Dataframe as a person reads them: column headers, then the cells of each row."""
    headers = [h.get_attribute("title") for h in page.locator(f"#{elem_id} th[role=columnheader]").all()]
    rows = []
    for row in page.locator(f"#{elem_id} [role=row][data-index]").all():
        cells = [c.strip() for c in row.locator("[role=gridcell]").all_inner_texts()]
        rows.append(dict(zip(headers, cells)))
    return rows


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
    assert "max_steps: 4" in (run_dir / "webui_config.yaml").read_text()

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
