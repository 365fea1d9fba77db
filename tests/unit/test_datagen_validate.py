"""`alignlab data validate` on preference data: chosen equal to rejected and empty fields fail the dataset with
the rows per reason; duplicate prompts and length outliers are reported."""

from __future__ import annotations

import json

from alignlab.config import load_config
from alignlab.data.inspect import validate


def write_pairs(folder, rows) -> None:
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (folder / "dataset_info.json").write_text(json.dumps({"pairs": {
        "file_name": "pairs.jsonl", "ranking": True,
        "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}}))


def pair(i: int, chosen: str | None = None, rejected: str | None = None, question: str | None = None) -> dict:
    return {"instruction": question if question is not None else f"question {i}",
            "chosen": chosen if chosen is not None else f"a good answer number {i}",
            "rejected": rejected if rejected is not None else f"a weak answer number {i}"}


def test_preference_checks_report_rows_per_reason(tmp_path):
    rows = [pair(i) for i in range(12)]
    rows[3] = pair(3, chosen="same answer", rejected=" same answer ")
    rows[5] = pair(5, rejected="")
    rows[7] = pair(7, question="question 1")
    rows[9] = pair(9, chosen="long " * 100)
    write_pairs(tmp_path, rows)
    report, ok = validate(load_config([f"dataset_dir={tmp_path}"]).data, ["pairs"], None)
    assert not ok
    lines = report.splitlines()
    assert lines[0].startswith("pairs: ERRORS: 12 rows ok")
    assert lines[1] == ("  preference pairs: 2 rows unusable, drop them before training: "
                        "1 chosen equals rejected (row 3), 1 empty rejected (row 5)")
    assert lines[2] == ("  preference notes: 1 duplicate prompt (row 7 = 1), "
                        "1 chosen length outlier (median 22 chars) (row 9: 500)")


def test_clean_pairs_pass(tmp_path):
    write_pairs(tmp_path, [pair(i) for i in range(12)])
    report, ok = validate(load_config([f"dataset_dir={tmp_path}"]).data, ["pairs"], "dpo")
    assert ok and report == "pairs: ok: 12 rows ok, 0 dropped, 0 with errors (as dpo data)"
