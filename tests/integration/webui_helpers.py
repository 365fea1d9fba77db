"""What browser tests of the web UI share: chromium (Debian's, headless, through Playwright), the app
served on a free loopback port, and reading the page as a person does (pick an option, read a table)."""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "build" / "screenshots"  # the best are copied to docs/images by hand


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def chromium_browser():
    """A headless chromium (skips the test where Playwright or chromium is missing)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                     "'alignlab[dev]')")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def served_app(runs_root, models: tuple[str, ...] = ()):
    """`alignlab webui` over `runs_root` and the demo data on a free port; yields its URL."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'alignlab[webui]')")
    from alignlab.webui.app import CSS, build_app

    app = build_app(runs_root, str(ROOT / "data"), models=tuple(map(str, models)))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def pick(page, elem_id: str, option: str) -> None:
    """Choose `option` in the dropdown `elem_id` as a person does: open it, click the option in its own list
    (the list of a dropdown picked just before may still be closing and hold the same option)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    page.locator(f"#{box.get_attribute('aria-controls')}").get_by_role("option", name=option, exact=True).click()


def table(page, elem_id: str) -> list[dict]:
    """The rows of a Dataframe as a person reads them: column headers, then the cells of each row."""
    headers = [h.get_attribute("title") for h in page.locator(f"#{elem_id} th[role=columnheader]").all()]
    rows = []
    for row in page.locator(f"#{elem_id} [role=row][data-index]").all():
        cells = [c.strip() for c in row.locator("[role=gridcell]").all_inner_texts()]
        rows.append(dict(zip(headers, cells)))
    return rows


# The Annotate tab, as an annotator drives it (keyboard first).

def open_project(page, url, folder) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Annotate").click()
    name = page.locator("#ann_name input, #ann_name textarea").first
    name.fill("ada")
    name.press("Enter")
    project = page.locator("#ann_project input").first
    project.fill(str(folder))
    project.press("Enter")
    page.locator(".ann-cand").first.wait_for()
    page.mouse.click(5, 5)  # focus out of the inputs: keys go to the widget


def settled(page) -> None:
    page.wait_for_function("window.__alignlabAnnotate && window.__alignlabAnnotate.pending() === 0")


def shown(page) -> tuple[str, list[str]]:
    """The item id and the candidate ids in the order the page displays them."""
    settled(page)
    view = page.evaluate("window.__alignlabAnnotate.view()")
    return str(view["item"]["id"]), [c["id"] for c in view["candidates"]]


def keys(page, *pressed: str) -> None:
    for key in pressed:
        page.keyboard.press(key)
    settled(page)


def next_item(page, previous: str) -> None:
    try:
        page.wait_for_function(f"window.__alignlabAnnotate.view() && (window.__alignlabAnnotate.view().finished || "
                               f"String(window.__alignlabAnnotate.view().item.id) !== '{previous}')")
    except Exception as error:  # say what the page showed instead of only "timeout"
        state = page.evaluate("JSON.stringify({pending: window.__alignlabAnnotate.pending(), "
                              "props: window.__alignlabAnnotate.props(), view: window.__alignlabAnnotate.view()})")
        raise AssertionError(f"still on item {previous}: {state[:1500]}\n{page.locator('.annotate-root').inner_text()[:600]}") from error
