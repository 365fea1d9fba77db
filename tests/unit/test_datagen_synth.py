"""`alignlab data synth`: the same seed gives byte-identical files, the exact count, no duplicates (after
normalising whitespace), a split and a registration; impossible counts are one clear error and write nothing."""

from __future__ import annotations

import json

import pytest
import yaml

from alignlab.cli import main
from alignlab.config import load_config
from alignlab.datagen.synth import run_synth
from tests.conftest import ROOT, read_jsonl

EXAMPLE = ROOT / "examples" / "data" / "kids_clothing" / "synth.yaml"


def synth(*args):
    return run_synth(load_config([str(EXAMPLE), *args]))


def test_same_seed_same_bytes_other_seed_other_questions(tmp_path):
    for folder in ("a", "b", "c"):
        synth(f"dataset_dir={tmp_path / folder}", f"seed={7 if folder == 'c' else 3}")
    for name in ("kids_questions.jsonl", "kids_questions_test.jsonl", "dataset_info.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "kids_questions.jsonl").read_bytes() != (tmp_path / "c" / "kids_questions.jsonl").read_bytes()


def test_exact_counts_split_registration_and_no_duplicates(tmp_path):
    synth(f"dataset_dir={tmp_path}")
    train, test = read_jsonl(tmp_path / "kids_questions.jsonl"), read_jsonl(tmp_path / "kids_questions_test.jsonl")
    rows = train + test
    assert len(rows) == 150 and len(test) == 15  # synth_count 150, synth_test_size 0.1
    by_category = {c: sum(r["category"] == c for r in rows) for c in ("size", "fabric", "safety")}
    assert by_category == {"size": 70, "fabric": 40, "safety": 40}  # size's own count, the rest shared evenly
    assert len({" ".join(r["instruction"].split()) for r in rows}) == 150
    assert len({r["id"] for r in rows}) == 150 and not {r["id"] for r in train} & {r["id"] for r in test}
    assert all("{" not in r["instruction"] and r["system"] for r in rows)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["kids_questions"]["file_name"] == "kids_questions.jsonl" and "kids_questions_test" in info
    from alignlab.datagen.rows import load_rows

    loaded = load_rows(load_config([f"dataset_dir={tmp_path}"]).data, "kids_questions", "prompt", "generate")
    assert [r.id for r in loaded] == [r["id"] for r in train] and loaded[0].system == train[0]["system"]


def small_config(tmp_path, count: int, pool: list) -> str:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({
        "dataset_dir": str(tmp_path / "data"), "register_as": "small", "synth_count": count,
        "synth_pools": {"x": pool},
        "synth_categories": {"one": {"templates": ["size {x} ?", "size  {x}  ?"]}}}))
    return str(path)


def test_whitespace_duplicates_are_removed_and_the_count_still_met(tmp_path):
    # the two templates differ only in spaces, and the pool holds "1" twice in different spacing
    run_synth(load_config([small_config(tmp_path, 3, ["1", " 1 ", "2", "3", "4"])]))
    rows = read_jsonl(tmp_path / "data" / "small.jsonl")
    assert len(rows) == 3 and len({" ".join(r["instruction"].split()) for r in rows}) == 3


def test_impossible_count_is_one_line_exit_1_and_writes_nothing(tmp_path, capsys):
    config = small_config(tmp_path, 5, ["1", " 1 ", "2", "3"])  # 8 combinations, 3 distinct questions
    assert main(["data", "synth", config]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["alignlab data: synth_categories.one: the templates and pools give only 3 distinct questions, "
                   "but 5 are asked for: add templates or pool values, or ask for fewer (`count`, `synth_count`)."]
    assert not (tmp_path / "data").exists()
    assert main(["data", "synth", str(EXAMPLE), f"dataset_dir={tmp_path / 'big'}", "synth_count=100000"]) == 1
    assert "give at most 800 distinct questions, but 49965 are asked for" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()


@pytest.mark.parametrize("override, message", [
    ("synth_categories={\"a\": {\"templates\": [\"{nope}\"]}}", "uses `{nope}`, which no pool defines"),
    ("synth_test_size=150", "`synth_test_size: 150.0` leaves no training or no test questions out of 150"),
    ("synth_count=10", "`synth_count: 10` does not fit the category counts (70 fixed, 2 categories"),
    ("register_as=null", "needs `register_as`"),
])
def test_bad_configs_name_the_key_and_write_nothing(tmp_path, override, message):
    from alignlab.config import ConfigError

    with pytest.raises(ConfigError) as error:
        synth(f"dataset_dir={tmp_path}", override)
    assert message in str(error.value)
    assert not list(tmp_path.iterdir())


def test_a_name_registered_for_another_file_is_refused(tmp_path):
    from alignlab.config import ConfigError

    (tmp_path / "dataset_info.json").write_text(json.dumps({"kids_questions": {"file_name": "mine.jsonl"}}))
    with pytest.raises(ConfigError, match="already has 'kids_questions' for file 'mine.jsonl'"):
        synth(f"dataset_dir={tmp_path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json"]
