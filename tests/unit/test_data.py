"""Registry, file types, conversion, errors that name dataset/file/row, mixing, splits, encoding, cache."""

from __future__ import annotations

import csv
import json

import pytest

from alignlab.config import load_config
from alignlab.data import DataError, SkipReport, get_dataset, get_template, load_examples
from alignlab.data.convert import Example
from alignlab.data.encode import (
    IGNORE_INDEX,
    EncodeOptions,
    chunk_pretrain,
    encode_supervised,
    greedy_knapsack,
    infer_seqlen,
)
from alignlab.data.loader import kl_partners, mix

ROWS = [{"instruction": f"q{i}", "input": "ctx" if i == 0 else "", "output": f"a{i}"} for i in range(4)]


def make_dir(tmp_path, info: dict, files: dict):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, str)):
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        else:
            path.write_text(json.dumps(content, ensure_ascii=False))
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return str(tmp_path)


def data_args(dataset_dir, **kw):
    args = [f"dataset_dir={dataset_dir}"] + [f"{k}={v}" for k, v in kw.items()]
    return load_config(args).data


def examples(dataset_dir, names, **kw):
    return load_examples(data_args(dataset_dir, **kw), names, seed=0, report=SkipReport())


def test_alpaca_json_jsonl_csv_txt_parquet_arrow_and_folders(tmp_path):
    import datasets

    jsonl = "\n".join(json.dumps(r) for r in ROWS)
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "rows.parquet"))
    arrow_dir = tmp_path / "arrowsrc"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(arrow_dir))
    arrow_file = next(arrow_dir.glob("*.arrow"))
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(ROWS)
    info = {
        "j": {"file_name": "rows.json"}, "jl": {"file_name": "rows.jsonl"}, "c": {"file_name": "rows.csv"},
        "p": {"file_name": "rows.parquet"}, "a": {"file_name": str(arrow_file.relative_to(tmp_path))},
        "disk": {"file_name": "saved"}, "dir": {"file_name": "parts"},
        "t": {"file_name": "lines.txt", "columns": {"prompt": "text"}},
    }
    d = make_dir(tmp_path, info, {"rows.json": ROWS, "rows.jsonl": jsonl, "parts/a.json": ROWS[:2],
                                  "parts/b.json": ROWS[2:], "lines.txt": "first line\n\nsecond line\n"})
    for name in ("j", "jl", "c", "p", "a", "disk", "dir"):
        exs = examples(d, name)
        assert [e.prompt[0]["content"] for e in exs] == ["q0\nctx", "q1", "q2", "q3"], name
        assert [e.response[0]["content"] for e in exs] == ["a0", "a1", "a2", "a3"], name
    assert [e.prompt[0]["content"] for e in examples(d, "t")] == ["first line", "second line"]


def test_sharegpt_system_tools_and_broken_alternation_are_counted(tmp_path):
    rows = [
        {"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "q"},
                           {"from": "gpt", "value": "a"}], "tools": "[]"},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "again"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"},
                           {"from": "observation", "value": "o"}, {"from": "gpt", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "only a question"}]},
    ]
    d = make_dir(tmp_path, {"s": {"file_name": "s.json", "formatting": "sharegpt",
                                  "columns": {"messages": "conversations", "tools": "tools"}}}, {"s.json": rows})
    report = SkipReport()
    exs = load_examples(data_args(d), "s", 0, report)
    assert len(exs) == 2 and exs[0].system == "sys" and exs[0].prompt == [{"role": "user", "content": "q"}]
    assert [m["role"] for m in exs[1].prompt] == ["user", "function", "observation"]
    assert report.summary() == (  # the one drop report of validate and training (issue 14)
        "dropped 2 of 4 rows of `s`: 1 broken role alternation (message 1 is 'user', expected assistant or "
        "function) (row 1), 1 conversation must be non-empty and end with an assistant turn (row 3)")


def test_openai_format_with_tool_calls_and_partial_tag_mapping(tmp_path):
    rows = [{"messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "content": "r"}, {"role": "assistant", "content": "done"}]}]
    d = make_dir(tmp_path, {"o": {"file_name": "o.json", "formatting": "openai"}}, {"o.json": rows})
    (ex,) = examples(d, "o")
    assert ex.system == "s" and [m["role"] for m in ex.prompt] == ["user", "function", "observation"]
    assert json.loads(ex.prompt[1]["content"]) == [{"name": "f", "arguments": "{\"x\": 1}"}]
    assert ex.response == [{"role": "assistant", "content": "done"}]


def test_ranking_and_kto_conversion(tmp_path):
    pref = [{"instruction": "q", "input": "", "chosen": "good", "rejected": "bad"}]
    kto = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": True}]
    d = make_dir(tmp_path, {
        "p": {"file_name": "p.json", "ranking": True,  # `columns` names every column used (LLaMA-Factory)
              "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
        "k": {"file_name": "k.json", "formatting": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"},
              "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
    }, {"p.json": pref, "k.json": kto})
    (p,) = examples(d, "p")
    assert p.chosen["content"] == "good" and p.rejected["content"] == "bad"
    (k,) = examples(d, "k")
    assert k.kto_tag is True and k.response[0]["content"] == "a"


def test_errors_name_dataset_file_and_row(tmp_path):
    d = make_dir(tmp_path, {
        "bad_line": {"file_name": "bad.jsonl"},
        "missing": {"file_name": "nowhere.json"},
        "wrong_cols": {"file_name": "rows.json", "columns": {"prompt": "question"}},
        "hub": {"hf_hub_url": "org/data"},
        "bad_type": {"file_name": "typed.json"},
        "optional_col": {"file_name": "rows.json", "columns": {"system": "sys"}},
    }, {"bad.jsonl": json.dumps(ROWS[0]) + "\n{\"instruction\": oops}\n", "rows.json": ROWS,
        "typed.json": [ROWS[0], {"instruction": ["not", "text"], "output": "x"}]})
    with pytest.raises(DataError, match=r"'bad_line'.*bad.jsonl line 2 \(row 1\) is not valid JSON"):
        examples(d, "bad_line")
    with pytest.raises(DataError, match=r"'missing'.*nowhere.json does not exist"):
        examples(d, "missing")
    with pytest.raises(DataError) as err:
        examples(d, "wrong_cols")
    assert "column 'question' (mapped from `prompt`) is missing" in str(err.value)
    assert "rows.json, row 0" in str(err.value) and "'instruction'" in str(err.value)
    with pytest.raises(DataError, match=r"'sys' \(mapped from `system`\) appears in no row"):
        examples(d, "optional_col")
    with pytest.raises(DataError, match="points only at a hub.*local `file_name`"):
        examples(d, "hub")
    with pytest.raises(DataError, match=r"typed.json, row 1: column 'instruction' must be text"):
        examples(d, "bad_type")
    with pytest.raises(DataError, match="Did you mean: bad_line"):
        examples(d, "bad_lin")


def test_max_samples_num_samples_and_mixing(tmp_path):
    a = [{"instruction": f"a{i}", "output": "x"} for i in range(3)]
    b = [{"instruction": f"b{i}", "output": "x"} for i in range(5)]
    d = make_dir(tmp_path, {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"},
                            "up": {"file_name": "a.json", "num_samples": 7}}, {"a.json": a, "b.json": b})
    names = lambda exs: [e.prompt[0]["content"] for e in exs]  # noqa: E731
    assert names(examples(d, "a,b")) == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4"]
    assert names(examples(d, "a,b", max_samples=2)) == ["a0", "a1", "b0", "b1"]
    up = names(examples(d, "up"))
    assert len(up) == 7 and set(up) == {"a0", "a1", "a2"}
    assert names(examples(d, "a,b", mix_strategy="interleave_under")) == ["a0", "b0", "a1", "b1", "a2", "b2"]
    over = names(examples(d, "a,b", mix_strategy="interleave_over"))
    assert over == ["a0", "b0", "a1", "b1", "a2", "b2", "a0", "b3", "a1", "b4"]
    probs = names(examples(d, "a,b", mix_strategy="interleave_under", interleave_probs="0.0,1.0"))
    assert probs == ["b0", "b1", "b2", "b3", "b4"]  # "a" is never drawn; "b" runs out first


def test_mix_round_robin_stops_at_first_exhausted():
    e = lambda s: Example(prompt=[{"role": "user", "content": s}])  # noqa: E731
    out = mix([[e("x")], [e("y"), e("z")]], "interleave_under", None, 0)
    assert [x.prompt[0]["content"] for x in out] == ["x", "y"]


@pytest.mark.parametrize("source, target, cutoff, expected", [
    (10, 20, 100, (10, 20)),   # 2*20 < 100: the response may use everything
    (30, 60, 100, (30, 60)),   # 2*30 < 100: the response gets 100 - 30 = 70 >= 60
    (10, 200, 100, (10, 90)),  # response capped at 100 - 10
    (80, 60, 100, (58, 42)),   # both long: 100 * 60 / 140 = 42.86 -> 42, prompt gets 58
    (300, 10, 100, (90, 10)),
])
def test_truncation_rule_by_hand(source, target, cutoff, expected):
    assert infer_seqlen(source, target, cutoff) == expected


def test_multiturn_budget_shrinks_turn_by_turn(tokenizer):
    t = get_template("qwen3_nothink", tokenizer)
    chat = [{"role": "user", "content": "q" * 5}, {"role": "assistant", "content": "a" * 5},
            {"role": "user", "content": "q" * 5}, {"role": "assistant", "content": "b " * 40}]
    pairs = t.encode_multiturn(tokenizer, chat)
    cutoff = len(pairs[0][0]) + len(pairs[0][1]) + 20
    enc = encode_supervised(t, tokenizer, Example(prompt=chat[:3], response=chat[3:]), EncodeOptions(cutoff))
    assert len(enc["input_ids"]) == cutoff
    p2, r2 = infer_seqlen(len(pairs[1][0]), len(pairs[1][1]), 20)
    first = len(pairs[0][0]) + len(pairs[0][1])
    assert enc["input_ids"][first:] == pairs[1][0][:p2] + pairs[1][1][:r2]
    assert enc["labels"][first:first + p2] == [IGNORE_INDEX] * p2


def test_pretrain_chunking_and_knapsack():
    blocks = chunk_pretrain([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4)
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    bins = greedy_knapsack([5, 1, 4, 3, 2, 6], 6)
    assert sorted(sorted(b) for b in bins) == [[0, 1], [2, 4], [3], [5]]
    assert all(sum([5, 1, 4, 3, 2, 6][i] for i in b) <= 6 for b in bins)


def test_stage_encodings_on_demo_data(tokenizer):
    t = get_template("qwen3_nothink", tokenizer)
    cfg = load_config(["dataset=demo_pref", "max_samples=4", "cutoff_len=64"])
    pair = get_dataset(cfg.data, "dpo", tokenizer, t).train[0]
    n_prompt = pair["chosen_labels"].count(IGNORE_INDEX)
    assert pair["chosen_input_ids"][:n_prompt] == pair["rejected_input_ids"][:n_prompt]
    assert pair["rejected_labels"].count(IGNORE_INDEX) == n_prompt
    assert len(pair["chosen_input_ids"]) <= 64

    cfg = load_config(["dataset=demo_kto", "max_samples=3"])
    kto = get_dataset(cfg.data, "kto", tokenizer, t).train
    assert kto[0]["kto_tags"] is True and kto[1]["kto_tags"] is False
    # the KL example pairs prompt 1 with the answer of example 0, prompt 0 with the last answer (LLaMA-Factory/TRL)
    answer = [[x for x, lab in zip(r["input_ids"], r["labels"]) if lab != IGNORE_INDEX] for r in kto]
    kl = [[x for x, lab in zip(r["kl_input_ids"], r["kl_labels"]) if lab != IGNORE_INDEX] for r in kto]
    assert kl == [answer[2], answer[0], answer[1]]
    assert kl_partners(5, 2) == [1, 0, 3, 2, 4]  # shifted within each preprocessing batch

    cfg = load_config(["dataset=demo_prompts", "max_samples=2"])
    prompts = get_dataset(cfg.data, "ppo", tokenizer, t).train
    assert tokenizer.decode(prompts[0]["input_ids"]).endswith("<|im_start|>assistant\n")
    assert json.loads(prompts[0]["extra"])["label"] in {"80", "90", "100", "110", "120", "130"}


def test_cache_is_reused_and_rebuilt_on_change(tokenizer, tmp_path):
    t = get_template("qwen3_nothink", tokenizer)
    args = ["dataset=demo_sft", "max_samples=20", "cutoff_len=128"]
    first = get_dataset(load_config(args).data, "sft", tokenizer, t)
    again = get_dataset(load_config(args).data, "sft", tokenizer, t)
    assert not first.from_cache and again.from_cache and again.cache_dir == first.cache_dir
    assert again.train["input_ids"] == first.train["input_ids"]
    changed = get_dataset(load_config(args[:2] + ["cutoff_len=64"]).data, "sft", tokenizer, t)
    assert not changed.from_cache and changed.cache_dir != first.cache_dir
    forced = get_dataset(load_config(args + ["overwrite_cache=true"]).data, "sft", tokenizer, t)
    assert not forced.from_cache
    path = tmp_path / "tok"
    saved = get_dataset(load_config(args + [f"tokenized_path={path}"]).data, "sft", tokenizer, t)
    loaded = get_dataset(load_config([f"tokenized_path={path}"]).data, "sft", tokenizer, t)
    assert loaded.from_cache and loaded.train["input_ids"] == saved.train["input_ids"]


def test_val_size_split_and_parallel_workers_match(tokenizer):
    t = get_template("qwen3_nothink", tokenizer)
    cfg = load_config(["dataset=demo_sft", "max_samples=600", "val_size=0.1"])
    serial = get_dataset(cfg.data, "sft", tokenizer, t)
    assert len(serial.train) == 540 and len(serial.eval) == 60
    cfg = load_config(["dataset=demo_sft", "max_samples=600", "val_size=0.1", "preprocessing_num_workers=2",
                       "overwrite_cache=true"])
    parallel = get_dataset(cfg.data, "sft", tokenizer, t)
    assert parallel.train["input_ids"] == serial.train["input_ids"]


@pytest.mark.parametrize("stage, dataset, message", [
    ("sft", "demo_pref", "'demo_pref' is a ranking \\(chosen/rejected\\) dataset: stage sft"),
    ("dpo", "demo_sft", "'demo_sft' is not a preference dataset: stages rm and dpo"),
    ("rm", "demo_kto", "'demo_kto' is not a preference dataset"),
    ("kto", "demo_sft", "'demo_sft' has no `kto_tag` column"),
])
def test_dataset_that_cannot_serve_the_stage_is_named(tokenizer, stage, dataset, message):
    t = get_template("qwen3_nothink", tokenizer)
    with pytest.raises(DataError, match=message):
        get_dataset(load_config([f"dataset={dataset}", "max_samples=4"]).data, stage, tokenizer, t)


# ---- issue 14: conversion as LLaMA-Factory 0.9.5, one drop report for validate and training ----------


def encoded(d, name, stage, tokenizer, template="qwen3_nothink", **kw):
    return get_dataset(data_args(d, dataset=name, **kw), stage, tokenizer, get_template(template, tokenizer))


def test_partial_columns_mean_unmapped_columns_are_absent(tmp_path):
    rows = [{"instruction": "q", "input": "ctx", "output": "a", "system": "s"}]
    d = make_dir(tmp_path, {"partial": {"file_name": "r.json", "columns": {"prompt": "instruction", "response": "output"}},
                            "defaults": {"file_name": "r.json"}}, {"r.json": rows})
    (ex,) = examples(d, "partial")
    assert ex.prompt == [{"role": "user", "content": "q"}] and ex.system == ""  # `input` is not mapped: absent
    (ex,) = examples(d, "defaults")
    assert ex.prompt == [{"role": "user", "content": "q\nctx"}]


def test_empty_instruction_with_input_adds_no_newline(tmp_path):
    d = make_dir(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": [{"instruction": "", "input": "ctx", "output": "x"}]})
    (ex,) = examples(d, "a")
    assert ex.prompt == [{"role": "user", "content": "ctx"}]


def test_tags_without_system_tag_leave_a_system_message_unmapped(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    d = make_dir(tmp_path, {"k": {"file_name": "k.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                                  "tags": tags}}, {"k.json": rows})
    report = SkipReport()
    (ex,) = load_examples(data_args(d), "k", 0, report, kind="sft")
    assert ex.system == "" and ex.row == 1
    assert report.summary() == ("dropped 1 of 2 rows of `k`: 1 broken role alternation (message 0 is 'system', "
                                "expected user or observation) (row 0)")


def test_openai_parallel_tool_results_are_one_observation_turn(tmp_path, tokenizer):
    rows = [{"messages": [
        {"role": "user", "content": "Sizes for 95 and 120 cm?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "size", "arguments": {"height": 95}}},
            {"type": "function", "function": {"name": "size", "arguments": {"height": 120}}}]},
        {"role": "tool", "content": "100"}, {"role": "tool", "content": "130"},
        {"role": "assistant", "content": "100 and 130."}]}]
    d = make_dir(tmp_path, {"o": {"file_name": "o.json", "formatting": "openai"}}, {"o.json": rows})
    (ex,) = examples(d, "o")
    assert [m["role"] for m in ex.prompt] == ["user", "function", "observation"]
    t = get_template("qwen3_nothink", tokenizer)
    (_, calls), (results, answer) = t.encode_multiturn(tokenizer, ex.prompt + ex.response)
    assert tokenizer.decode(calls) == ('<tool_call>\n{"name": "size", "arguments": {"height": 95}}\n</tool_call>\n'
                                       '<tool_call>\n{"name": "size", "arguments": {"height": 120}}\n</tool_call>'
                                       '<|im_end|>\n')
    assert tokenizer.decode(results) == ("<|im_start|>user\n<tool_response>\n100\n</tool_response>\n<tool_response>\n"
                                         "130\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_packing_cuts_each_example_to_cutoff_len_minus_one(tmp_path, tokenizer):
    rows = [{"instruction": "q" * 5, "output": "long " * 40}, {"instruction": "q", "output": "short"}]
    d = make_dir(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": rows})
    packed = encoded(d, "a", "sft", tokenizer, cutoff_len=32, packing="true").train
    alone = encoded(d, "a", "sft", tokenizer, cutoff_len=31).train
    assert max(len(r["input_ids"]) for r in packed) == 31  # LLaMA-Factory: cutoff_len - 1, padded to cutoff_len
    assert sorted(map(tuple, packed["input_ids"])) == sorted(map(tuple, alone["input_ids"]))


def test_max_samples_counts_rows_not_usable_rows(tmp_path, tokenizer):
    rows = [{"instruction": "q0"}, {"instruction": "q1", "output": "a1"}, {"instruction": "q2"},
            {"instruction": "q3", "output": "a3"}, {"instruction": "q4", "output": "a4"}]
    d = make_dir(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": rows})
    data = encoded(d, "a", "sft", tokenizer, max_samples=3)
    assert len(data.train) == 1
    assert data.report.summary() == "dropped 2 of 3 rows of `a`: 2 missing `output` (rows 0, 2)"


def test_ppo_prompt_budget_counts_the_template_encoded_answer(tmp_path, tokenizer):
    question, reference = "How tall? " * 30, "110 cm."
    d = make_dir(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": [{"instruction": question, "output": reference}]})
    t = get_template("qwen3", tokenizer)
    full = t.encode_prompt(tokenizer, [{"role": "user", "content": question}])
    answer = tokenizer.encode("<think>\n\n</think>\n\n" + reference + "<|im_end|>\n", add_special_tokens=False)
    row = encoded(d, "a", "ppo", tokenizer, template="qwen3", cutoff_len=64).train[0]
    assert len(row["input_ids"]) == 64 - len(answer) < 64 - len(tokenizer.encode(reference))
    assert row["input_ids"] == full[-len(row["input_ids"]):]  # the end is kept: the assistant header
    assert tokenizer.decode(row["input_ids"]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(row["labels"]) == reference


def test_llama3_pretraining_documents_end_with_end_of_text(tmp_path, tokenizer):
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                                  "additional_special_tokens": ["<|eot_id|>", "<|eom_id|>"]})
    d = make_dir(tmp_path, {"t": {"file_name": "t.txt", "columns": {"prompt": "text"}}}, {"t.txt": "one\ntwo\n"})
    rows = encoded(d, "t", "pt", tokenizer, template="llama3", packing="false").train
    assert tokenizer.eos_token == "<|eot_id|>"  # the template's turn end became EOS ...
    assert [tokenizer.decode(r["input_ids"]) for r in rows] == ["one<|end_of_text|>", "two<|end_of_text|>"]  # ... not the document end
    rows = encoded(d, "t", "pt", tokenizer, template="qwen3_nothink", packing="false").train
    assert [tokenizer.decode(r["input_ids"]) for r in rows] == ["one<|im_end|>", "two<|im_end|>"]


def test_validate_and_training_drop_the_same_rows_with_one_report(tmp_path, tokenizer):
    from alignlab.data.inspect import validate

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(120)]
    del rows[7]["output"], rows[19]["output"]
    rows[44]["instruction"] = None
    rows[50]["input"] = None  # a null optional column is harmless
    d = make_dir(tmp_path, {"name": {"file_name": "rows.json"}}, {"rows.json": rows})
    line = "dropped 3 of 120 rows of `name`: 2 missing `output` (rows 7, 19), 1 null `instruction` (row 44)"
    report, ok = validate(data_args(d), ["name"], None)
    assert ok and report.splitlines() == ["name: ok: 117 rows ok, 3 dropped, 0 with errors (as sft data)", "  " + line]
    report, ok = validate(data_args(d), ["name"], "sft")
    assert line in report
    data = encoded(d, "name", "sft", tokenizer)
    assert len(data.train) == 117 and data.report.summary() == line
    again = encoded(d, "name", "sft", tokenizer)
    assert again.from_cache and again.report.summary() == line  # a cached run shows the same report


@pytest.mark.parametrize("name, content", [
    ("rows.json", '[{"instruction": "q", "output": "a"},\n {"instruction": "caf\xe9", "output": "b"}]'),
    ("rows.jsonl", '{"instruction": "q", "output": "a"}\n{"instruction": "caf\xe9", "output": "b"}\n'),
    ("rows.csv", "instruction,output\nq,a\ncaf\xe9,b\n"),
    ("rows.txt", "first line\ncaf\xe9\n"),
])
def test_a_file_that_is_not_utf8_names_the_file_and_line(tmp_path, tokenizer, name, content):
    from alignlab.data.inspect import validate

    entry = {"file_name": name, **({"columns": {"prompt": "text"}} if name.endswith(".txt") else {})}
    d = make_dir(tmp_path, {"latin": entry}, {name: content.encode("latin-1")})
    line = 3 if name == "rows.csv" else 2
    message = rf"'latin': .*{name} is not UTF-8 text: line {line}, column \d+ has byte 0xe9"
    with pytest.raises(DataError, match=message):
        encoded(d, "latin", "sft" if not name.endswith(".txt") else "pt", tokenizer)
    report, ok = validate(data_args(d), ["latin"], None)
    assert not ok and f"is not UTF-8 text: line {line}" in report


@pytest.mark.parametrize("name, content", [("e.json", "[]"), ("e.jsonl", ""), ("e.csv", "instruction,output\n")])
def test_an_empty_dataset_is_an_error_for_training_and_validate(tmp_path, tokenizer, name, content):
    from alignlab.data.inspect import validate

    d = make_dir(tmp_path, {"empty": {"file_name": name}}, {name: content})
    with pytest.raises(DataError, match=rf"Dataset 'empty' has no rows: .*{name} holds none"):
        encoded(d, "empty", "sft", tokenizer)
    report, ok = validate(data_args(d), ["empty"], None)
    assert not ok and "empty: ERRORS: 0 rows ok" in report and "has no rows" in report


def test_multimodal_columns_are_an_error_not_a_silent_drop(tmp_path):
    rows = [{"instruction": "q", "output": "a", "images": []},
            {"instruction": "Describe <image>", "output": "a cat", "images": ["cat.png"]}]
    d = make_dir(tmp_path, {"mapped": {"file_name": "r.json", "columns": {"prompt": "instruction", "videos": "clips"}},
                            "unmapped": {"file_name": "r.json"}}, {"r.json": rows})
    with pytest.raises(DataError, match="maps `videos` in `columns`: multimodal data is not supported"):
        examples(d, "mapped")
    with pytest.raises(DataError, match=r"r.json, row 1: column 'images' holds images: multimodal data is not supported"):
        examples(d, "unmapped")


@pytest.mark.parametrize("tool_format", [None, "qwen"])
def test_openai_tool_conversation_renders_as_qwen3_jinja(tmp_path, tokenizer, tool_format):
    """Documented differences from LLaMA-Factory 0.9.5, checked against Qwen3's published template: an
    openai-format row gets no "detailed thinking off" system text, tool-call arguments given as a JSON
    string are not encoded twice, and a `tool_format` override keeps the template's tool-call slot."""
    messages = [
        {"role": "user", "content": "Sizes for 95 and 120 cm?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "size", "arguments": '{"height": 95}'}},
            {"type": "function", "function": {"name": "size", "arguments": '{"height": 120}'}}]},
        {"role": "tool", "content": "100"}, {"role": "tool", "content": "130"},
        {"role": "assistant", "content": "100 and 130."}]
    d = make_dir(tmp_path, {"o": {"file_name": "o.json", "formatting": "openai"}}, {"o.json": [{"messages": messages}]})
    (ex,) = examples(d, "o")
    t = get_template("qwen3", tokenizer, tool_format=tool_format)
    ours = tokenizer.decode(t.encode_prompt(tokenizer, ex.prompt, ex.system, ex.tools))
    theirs = tokenizer.apply_chat_template(messages[:4], tokenize=False, add_generation_prompt=True)
    assert ex.system == "" and ours == theirs


def test_pretraining_with_add_bos_token_starts_documents_and_blocks_with_bos(tmp_path, tokenizer):
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    tokenizer.add_bos_token = True
    d = make_dir(tmp_path, {"t": {"file_name": "t.txt", "columns": {"prompt": "text"}}}, {"t.txt": "one\ntwo\n"})
    rows = encoded(d, "t", "pt", tokenizer, packing="false").train
    assert [tokenizer.decode(r["input_ids"]) for r in rows] == ["<s>one<|im_end|>", "<s>two<|im_end|>"]
    blocks = encoded(d, "t", "pt", tokenizer, cutoff_len=3, packing="true").train["input_ids"]
    flat = tokenizer.encode("one<|im_end|>two<|im_end|>", add_special_tokens=False)
    expected = [[tokenizer.bos_token_id, *flat[i + 1:i + 3]] for i in range(0, len(flat) // 3 * 3, 3)]
    assert len(blocks) >= 1 and blocks == expected  # packed: BOS replaces each block's first token
