"""The web UI as a separate `alignlab webui` process with a password, driven by a real browser
through what LLaMA-Board users lose: the page closed mid-run, the UI server killed -9, Stop, and
Start again on the same run folder from the Runs tab (resumes from the stop's checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.conftest import ROOT, read_jsonl
from tests.integration.test_webui_browser import SHOTS, _free_port, browser, fill, pick  # noqa: F401 (fixture)
from tests.integration.test_webui_jobs import wait_for

pytestmark = pytest.mark.timeout(500)
USER, PASSWORD = "ada", "s3cret"


def start_ui(root, tmp_path, name: str):
    port = _free_port()
    log = (tmp_path / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "alignlab.cli", "webui", "--port", str(port), "--runs-root", str(root),
         "--dataset-dir", str(ROOT / "data"), "--auth", f"{USER}:{PASSWORD}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (tmp_path / f"{name}.log").read_text()[-2000:]
        time.sleep(0.5)
    raise AssertionError("the UI did not start")


def log_in(browser, url):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.locator("input[type=text], input[name=username]").first.fill(USER)
    page.locator("input[type=password]").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#start", timeout=60_000)
    return page


def steps(run_dir) -> list[int]:
    path = run_dir / "trainer_log.jsonl"
    return [r["current_steps"] for r in read_jsonl(path) if "train_runtime" not in r] if path.is_file() else []


def test_close_the_page_kill_the_server_stop_and_resume_from_the_runs_tab(browser, base_model_dir, tmp_path):  # noqa: F811
    root = tmp_path / "saves"
    ui, url = start_ui(root, tmp_path, "ui-1")
    restarted = None
    try:
        assert httpx.get(url + "/config", timeout=10).status_code == 401  # the password is required
        page = log_in(browser, url)
        box = page.locator("#model input")
        box.fill(str(base_model_dir))
        box.press("Enter")
        pick(page, "template", "qwen3_nothink")
        pick(page, "dataset", "demo_sft")
        fill(page, "essentials", "max_steps", 100_000)
        fill(page, "essentials", "per_device_train_batch_size", 2)
        fill(page, "essentials", "logging_steps", 1)
        fill(page, "essentials", "save_steps", 100_000)
        page.click("#group-data")
        fill(page, "data", "cutoff_len", 32)
        fill(page, "data", "max_samples", 16)
        page.click("#preview")
        page.locator("#yaml .cm-content").get_by_text("max_steps").wait_for(timeout=30_000)
        previewed = page.locator("#yaml .cm-content").inner_text()
        page.click("#start")
        page.locator("#message").get_by_text("Started").wait_for(timeout=30_000)
        [run_dir] = list(root.iterdir())
        # Preview shows exactly the file Start runs
        assert yaml.safe_load(previewed) == yaml.safe_load((run_dir / "webui_config.yaml").read_text())

        wait_for(lambda: len(steps(run_dir)) >= 3, what="step 3")
        page.context.close()  # the browser goes away mid-run
        at_close = steps(run_dir)[-1]
        wait_for(lambda: steps(run_dir)[-1] > at_close, timeout=120, what="a step after the page closed")
        page = log_in(browser, url)
        page.locator("#progress").get_by_text("running").wait_for(timeout=30_000)  # re-attached to the run
        shown = int(page.locator("#progress").inner_text().split("step ")[1].split("/")[0])
        assert shown > at_close

        os.killpg(ui.pid, signal.SIGKILL)  # the UI server dies; training must not
        ui.wait(timeout=30)
        at_kill = steps(run_dir)[-1]
        wait_for(lambda: steps(run_dir)[-1] > at_kill, timeout=120, what="a step after the UI was killed")
        restarted, url = start_ui(root, tmp_path, "ui-2")
        page = log_in(browser, url)
        page.locator("#progress").get_by_text("running").wait_for(timeout=30_000)
        page.click("#stop")
        page.locator("#message").get_by_text("Stop sent").wait_for(timeout=30_000)
        page.locator("#progress").get_by_text("stopped").wait_for(timeout=120_000)
        stopped_at = steps(run_dir)[-1]
        assert (run_dir / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()
        logged = steps(run_dir)
        assert logged == list(range(1, stopped_at + 1))  # no gap through the close, the kill and the stop
        assert stopped_at < 100_000 and not (run_dir / "all_results.json").exists()

        page.get_by_role("tab", name="Runs").click()
        pick(page, "chosen_run", run_dir.name)
        page.click("#open_run")
        page.locator("#message").get_by_text("Opened").wait_for(timeout=30_000)  # on the Train tab
        assert page.locator("#output_dir input, #output_dir textarea").first.input_value() == str(run_dir)
        fill(page, "essentials", "max_steps", stopped_at + 2)
        page.click("#start")
        page.locator("#message").get_by_text(f"resuming from checkpoint-{stopped_at}").wait_for(timeout=30_000)
        page.locator("#progress").get_by_text("finished").wait_for(timeout=180_000)
        assert steps(run_dir) == list(range(1, stopped_at + 3))
        time.sleep(2.5)
        page.screenshot(path=str(SHOTS / "webui_resumed.png"), full_page=True)
    finally:
        for process in (ui, restarted):
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        from alignlab.webui.jobs import JobRunner

        JobRunner(root).stop()
