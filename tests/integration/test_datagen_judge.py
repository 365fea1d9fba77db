"""`alignlab data judge` against the loopback fake server: improve mode (good -> rejected from a named model,
bad -> the improved answer; strict, fenced and embedded JSON; re-asks; failures), pairwise mode (both orders,
position bias dropped and counted; a failed judgement never becomes a label)."""

from __future__ import annotations

import json

from alignlab.config import load_config
from alignlab.datagen.judge import IMPROVE_FORMAT, PAIRWISE_FORMAT, REASKS, run_judge
from tests.conftest import ROOT, read_jsonl
from tests.integration.test_datagen_generate import FakeOpenAI, Scripted, answer, row_key

RUBRIC = ROOT / "examples" / "data" / "kids_clothing" / "rubric_en.md"


def write_answers(folder, n: int) -> None:
    """An SFT dataset (id, instruction, output) of n rows, registered as `answers`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"q{i}", "system": "你是童装导购。", "instruction": f"[q{i}] 宝宝{70 + i}cm 穿什么码？", "input": "",
             "output": f"original answer {i}"} for i in range(n)]
    (folder / "answers.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (folder / "dataset_info.json").write_text(json.dumps({"answers": {"file_name": "answers.jsonl",
                                                                      "columns": {"prompt": "instruction",
                                                                                  "query": "input",
                                                                                  "response": "output",
                                                                                  "system": "system"}}}))


def is_judge(body: dict) -> bool:
    return IMPROVE_FORMAT.splitlines()[0] in body["messages"][0]["content"]


def improve_script(body: dict, n: int) -> Scripted:
    """The judge by row q{i}, i % 6: 0 good (strict JSON); 1 bad, improved answer in a ```json fence;
    2 bad, the object inside prose; 3 garbage once, then good; 4 garbage always; 5 HTTP 500 always.
    Requests for model `base` are the rejected-answer writer."""
    key = row_key(body)
    i = int(key[1:])
    if body["model"] == "base":
        assert not is_judge(body) and body["temperature"] == 1.3
        return answer(f"base answer {i}", 5, 9)
    assert is_judge(body) and "original answer" in body["messages"][1]["content"]
    good = json.dumps({"is_good": True, "reason": "fine", "improved_answer": ""})
    bad = json.dumps({"is_good": False, "reason": "no size", "improved_answer": f"improved answer {i}: 选 80 码"},
                     ensure_ascii=False)
    kind = i % 6
    if kind == 5:
        return Scripted(500, {"error": {"message": "judge down"}})
    text = {0: good, 1: f"```json\n{bad}\n```", 2: f"My verdict {{as asked}}: {bad} -- hope it helps",
            3: good if n else "I think it is good.", 4: "no JSON here, sorry {not json}"}[kind]
    return answer(text, 20 + i, 4)


def test_improve_mode_pairs_reasks_failures_and_usage(tmp_path):
    data, out = tmp_path / "data", tmp_path / "pairs"
    write_answers(data, 18)
    with FakeOpenAI(improve_script) as fake:
        cfg = load_config([f"dataset_dir={data}", "dataset=answers", f"output_dir={out}", f"api_base={fake.url}",
                           "api_model=judge", f"judge_rubric={RUBRIC}", "rejected_model=base",
                           "rejected_temperature=1.3", "temperature=0", "max_concurrency=4", "max_retries=1",
                           "retry_backoff=0.01", "register_as=kids_pairs"])
        summary = run_judge(cfg)
        pairs = {r["id"]: r for r in read_jsonl(out / "pairs.jsonl")}
        failures = {r["id"]: r["reason"] for r in read_jsonl(out / "failures.jsonl")}
        assert fake.max_in_flight <= 4
        assert set(pairs) | set(failures) == {f"q{i}" for i in range(18)} and not set(pairs) & set(failures)
        for row_id, pair in pairs.items():
            i = int(row_id[1:])
            if i % 6 in (0, 3):  # good: the original is chosen, the named model's answer rejected
                assert (pair["chosen"], pair["rejected"], pair["outcome"]) == (
                    f"original answer {i}", f"base answer {i}", "good")
                assert pair["rejected_model"] == "base"
            else:  # bad: the judge's improvement is chosen over the original
                assert (pair["chosen"], pair["rejected"], pair["outcome"]) == (
                    f"improved answer {i}: 选 80 码", f"original answer {i}", "improved")
            assert pair["instruction"].startswith(f"[{row_id}]") and pair["system"] == "你是童装导购。"
        assert {int(i[1:]) % 6 for i in failures} == {4, 5}
        for row_id, reason in failures.items():
            if int(row_id[1:]) % 6 == 4:
                assert reason.startswith(f"judge reply unusable after {REASKS + 1} tries: the reply holds no JSON")
                assert len(fake.requests_for(row_id)) == REASKS + 1
                last = [b for k, _, b in fake.log if k == row_id][-1]["messages"]
                assert last[-1]["role"] == "user" and "could not be used" in last[-1]["content"]
            else:
                assert "HTTP 500: judge down" in reason
        assert len(fake.requests_for("q3")) == 3  # one re-ask, then the rejected answer
        assert summary["prompt_tokens"] == fake.usage["prompt_tokens"]
        assert summary["completion_tokens"] == fake.usage["completion_tokens"]
        assert summary["outcomes"] == {"good": 6, "improved": 6}
    info = json.loads((data / "dataset_info.json").read_text())["kids_pairs"]
    assert info["ranking"] is True and info["columns"]["chosen"] == "chosen"


def write_candidates(folder, name: str, n: int, texts) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"q{i}", "system": "", "instruction": f"[q{i}] 几码？", "input": "", "history": [],
             "output": texts(i), "model": name} for i in range(n)]
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def pairwise_args(tmp_path, url, n=10):
    a = write_candidates(tmp_path / "cand", "a", n, lambda i: f"good answer {i}")
    b = write_candidates(tmp_path / "cand", "b", n, lambda i: f"weak answer {i}" if i != 0 else "good answer 0")
    return [f"judge_candidates={a},{b}", "judge_mode=pairwise", f"judge_rubric={RUBRIC}", f"api_base={url}",
            "api_model=judge", "max_concurrency=3", "max_retries=0", "retry_backoff=0.01", f"dataset_dir={tmp_path}"]


def answers_of(body: dict) -> tuple[str, str]:
    assert PAIRWISE_FORMAT.splitlines()[0] in body["messages"][0]["content"]
    text = body["messages"][1]["content"]
    return text.split("[Answer A]\n")[1].split("\n\n[Answer B]")[0], text.split("[Answer B]\n")[1]


def verdict(winner: str) -> Scripted:
    return answer(json.dumps({"winner": winner, "reason": "r"}))


def test_pairwise_first_position_judge_yields_no_pairs(tmp_path):
    with FakeOpenAI(lambda body, n: verdict("A")) as fake:
        summary = run_judge(load_config([*pairwise_args(tmp_path, fake.url), f"output_dir={tmp_path / 'out'}"]))
        assert len(fake.log) == 2 * 9  # both orders of the 9 rows whose candidates differ
    assert not (tmp_path / "out" / "pairs.jsonl").read_text()
    dropped = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert summary["outcomes"] == {"position_bias": 9, "identical_candidates": 1} and len(dropped) == 10


def consistent_judge(body: dict, n: int) -> Scripted:
    """Prefers the `good` answer in either position; fails (500) both orders of q3 and the second of q4."""
    a, _b = answers_of(body)
    key = row_key(body)
    if key == "q3" or (key == "q4" and n == 1):
        return Scripted(500, {"error": {"message": "judge down"}})
    return verdict("tie" if key == "q5" else "A" if a.startswith("good") else "B")


def test_pairwise_consistent_judge_and_failures_are_never_labels(tmp_path):
    out = tmp_path / "out"
    with FakeOpenAI(consistent_judge) as fake:
        summary = run_judge(load_config([*pairwise_args(tmp_path, fake.url), f"output_dir={out}"]))
        assert summary["prompt_tokens"] == fake.usage["prompt_tokens"]
    pairs = {r["id"]: r for r in read_jsonl(out / "pairs.jsonl")}
    failures = {r["id"] for r in read_jsonl(out / "failures.jsonl")}
    dropped = {r["id"]: r["outcome"] for r in read_jsonl(out / "dropped.jsonl")}
    assert failures == {"q3", "q4"} and dropped == {"q0": "identical_candidates", "q5": "tie"}
    assert set(pairs) == {f"q{i}" for i in (1, 2, 6, 7, 8, 9)}
    for row_id, pair in pairs.items():
        assert pair["chosen"] == f"good answer {row_id[1:]}" and pair["rejected"] == f"weak answer {row_id[1:]}"
        assert pair["chosen_model"] == "a" and len(pair["judge_reasons"]) == 2
