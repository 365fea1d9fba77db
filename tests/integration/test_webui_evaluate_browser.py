"""The Evaluate and Export tabs in a real browser (Playwright + Debian's chromium, headless): predict on
the tiny model with the demo prompts and read the metrics table; compare two models and read the report
inside the page; export and read the files written and the template carried."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import read_jsonl
from tests.integration.webui_helpers import SHOTS, chromium_browser, pick, served_app, table

# slow: test_webui_evaluate.py checks the same jobs, tables and report without a browser in the default tier
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def browser():
    with chromium_browser() as browser:
        yield browser


def fill(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")  # committed as a person leaving the field does


def test_predict_compare_and_export_from_the_page(browser, base_model_dir, tmp_path):
    root = tmp_path / "saves"
    with served_app(root, (base_model_dir,)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#model", timeout=60_000)
        pick(page, "model", str(base_model_dir))
        pick(page, "template", "qwen3_nothink")

        page.get_by_role("tab", name="Evaluate").click()
        pick(page, "eval_dataset", "demo_prompts")
        page.keyboard.press("Escape")
        fill(page, "eval_max_samples", 6)
        fill(page, "eval_max_new_tokens", 12)
        pick(page, "eval_extra_metrics", "alignlab.eval.size_accuracy:size_metrics")
        page.click("#eval_start")
        page.locator("#eval_message").get_by_text("Started").wait_for(timeout=30_000)
        [folder] = root.iterdir()
        page.locator("#eval_progress").get_by_text("finished").wait_for(timeout=180_000)
        page.locator("#eval_table [role=gridcell]").first.wait_for(timeout=30_000)
        written = json.loads((folder / "predict_results.json").read_text())
        shown = {r["metric"]: r["value"] for r in table(page, "eval_table")}
        assert float(shown["BLEU-4"]) == pytest.approx(written["predict_bleu-4"], abs=1e-4)
        assert float(shown["ROUGE-1"]) == pytest.approx(written["predict_rouge-1"], abs=1e-4)
        assert float(shown["size_accuracy"]) == pytest.approx(written["predict_size_accuracy"], abs=1e-4)
        assert shown["samples"] == "6"
        predictions = table(page, "eval_rows")
        assert [r["predict"] for r in predictions] == [r["predict"].strip() for r in
                                                       read_jsonl(folder / "generated_predictions.jsonl")]
        assert page.locator("#eval_failure").is_hidden()
        page.screenshot(path=str(SHOTS / "webui_evaluate.png"), full_page=True)

        page.get_by_role("radio", name="Compare models").click()
        pick(page, "eval_compare_with", str(base_model_dir))
        page.keyboard.press("Escape")
        fill(page, "eval_max_samples", 3)
        page.click("#eval_start")
        page.locator("#eval_message").get_by_text("Started eval-compare").wait_for(timeout=30_000)
        page.locator("#eval_progress", has_text=re.compile(r"eval-compare.*finished")).wait_for(timeout=180_000)
        report = page.frame_locator("#eval_report iframe")
        report.locator("h1").get_by_text("Model comparison").wait_for(timeout=30_000)
        assert report.locator("#answers tr").count() == 4  # the header and 3 prompts, inside the page
        columns = [h.get_attribute("title") for h in page.locator("#eval_table th[role=columnheader]").all()]
        assert columns == ["metric", base_model_dir.name, f"{base_model_dir.name}-2"]
        page.screenshot(path=str(SHOTS / "webui_compare.png"), full_page=True)

        page.get_by_role("tab", name="Export").click()
        page.click("#export_start")
        page.locator("#export_message").get_by_text("Started").wait_for(timeout=30_000)
        page.locator("#export_progress").get_by_text("finished").wait_for(timeout=180_000)
        page.locator("#export_files [role=gridcell]").first.wait_for(timeout=30_000)
        files = {r["file"]: r["size"] for r in table(page, "export_files")}
        [export] = [p for p in root.iterdir() if p.name.startswith("export-")]
        assert set(files) == {str(p.relative_to(export / "model")) for p in (export / "model").rglob("*") if p.is_file()}
        assert "chat_template.jinja" in files and files["model.safetensors"].endswith("MB")
        carried = {r["setting"]: r["value"] for r in table(page, "export_carried")}
        assert carried["chat_template.jinja"] == "written" and carried["template"] == "qwen3_nothink"
        page.screenshot(path=str(SHOTS / "webui_export.png"), full_page=True)

        page.locator("#language").get_by_text("中文").click()  # the tables are redrawn in the new language
        page.locator("#export_files th[role=columnheader][title=文件]").wait_for(timeout=30_000)
        assert {r["设置"]: r["值"] for r in table(page, "export_carried")}["chat_template.jinja"] == "已写出"
        page.get_by_role("tab", name="评估").click()
        page.locator("#eval_table th[role=columnheader][title=指标]").wait_for(timeout=30_000)
