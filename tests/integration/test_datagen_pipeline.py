"""End to end: synth 100 questions -> answers from a real `alignlab api` serving a tiny random model ->
judge (improve) -> validate -> `alignlab train` stage dpo on the pairs."""

from __future__ import annotations

import json

from alignlab.config import load_config
from alignlab.data.inspect import validate
from alignlab.datagen.generate import run_generate
from alignlab.datagen.judge import run_judge
from alignlab.datagen.synth import run_synth
from tests.conftest import ROOT, read_jsonl
from tests.integration.test_api import KEY, start_server
from tests.integration.test_datagen_generate import FakeOpenAI, Scripted, answer
from tests.integration.test_train_sft import cli

EXAMPLE = ROOT / "examples" / "data" / "kids_clothing"


def scripted_judge(body: dict, n: int) -> Scripted:
    """A random tiny model cannot write JSON, so the judge is the loopback fake with scripted rubric verdicts:
    every third answer is bad and gets an improved answer, the others are good."""
    question = body["messages"][1]["content"].split("[Question]\n")[1].split("\n\n[Answer]")[0]
    if len(question) % 3:
        return answer(json.dumps({"is_good": True, "reason": "meets the rubric", "improved_answer": ""}))
    return answer("```json\n" + json.dumps({"is_good": False, "reason": "no size given", "improved_answer":
                                            "建议选 90 码：按身高选码，介于两码之间选大一码。"}, ensure_ascii=False) + "\n```")


def test_synth_generate_judge_validate_then_dpo_trains(base_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("ALIGNLAB_TEST_API_KEY", KEY)
    # one torch thread in the server and trainer processes: on shared, loaded cores the default threads spin
    # against each other (seen here: 25x slower decoding of the tiny model)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_synth(load_config([str(EXAMPLE / "synth.yaml"), f"dataset_dir={data}", "synth_count=100",
                           "synth_test_size=0"]))
    assert len(read_jsonl(data / "kids_questions.jsonl")) == 100

    proc, url = start_server(base_model_dir, "template=qwen3_nothink", "infer_max_batch=16", name="tiny")
    try:
        endpoint = [f"api_base={url}/v1", "api_key_env=ALIGNLAB_TEST_API_KEY", "max_concurrency=8",
                    "request_timeout=60", "max_new_tokens=12", "temperature=1.0", "top_p=1.0"]
        generated = run_generate(load_config([str(EXAMPLE / "generate.yaml"), f"dataset_dir={data}",
                                              f"output_dir={tmp_path / 'answers'}", "api_model=tiny", *endpoint]))
        answers = read_jsonl(tmp_path / "answers" / "generated.jsonl")
        failures = read_jsonl(tmp_path / "answers" / "failures.jsonl")
        assert len(answers) + len(failures) == 100 and len(answers) >= 90
        assert generated["completion_tokens"] == sum(r["usage"]["completion_tokens"] for r in answers)

        with FakeOpenAI(scripted_judge) as judge:
            judged = run_judge(load_config([
                str(EXAMPLE / "judge.yaml"), f"dataset_dir={data}", f"output_dir={tmp_path / 'pairs'}",
                f"api_base={judge.url}", "api_model=judge", f"rejected_api_base={url}/v1", "rejected_model=tiny",
                f"judge_rubric={EXAMPLE / 'rubric_zh.md'}", "api_prices=null", *endpoint[1:]]))
    finally:
        proc.terminate()
        proc.wait(10)
    pairs = read_jsonl(tmp_path / "pairs" / "pairs.jsonl")
    assert len(pairs) + judged["failed"] == len(answers) and len(pairs) >= 0.9 * len(answers)
    assert {p["outcome"] for p in pairs} == {"good", "improved"}
    assert all(p["chosen"] != p["rejected"] for p in pairs)

    report, ok = validate(load_config([f"dataset_dir={data}"]).data, ["kids_pairs"], "dpo")
    assert ok, report

    out = tmp_path / "dpo"
    cli(str(EXAMPLE / "dpo.yaml"), f"model_name_or_path={base_model_dir}", f"dataset_dir={data}", f"output_dir={out}",
        "max_steps=2", "per_device_train_batch_size=4", "cutoff_len=96", "logging_steps=1", "report_to=none",
        "plot_loss=false", "preprocessing_num_workers=1")
    assert (out / "adapter_model.safetensors").is_file()
    log = [e for e in read_jsonl(out / "trainer_log.jsonl") if "loss" in e]
    assert log[-1]["current_steps"] == 2 and all(e["loss"] == e["loss"] for e in log)
