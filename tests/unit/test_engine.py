"""The dynamic-batching engine against sequential decoding and HF generate; output post-processing:
reasoning split, held-back stop text, tool-call extraction, OpenAI message conversion."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from alignlab.data import get_template
from alignlab.data.tools import extract_function_calls, format_function_calls
from alignlab.infer.engine import HFEngine, SamplingParams, held_back, split_reasoning
from tests.conftest import tiny_model

QUERIES = ["孩子身高 95 cm，买童装选多大码？", "Which size fits a child of 104 cm?", "hi",
           "My kid is 120 cm tall and likes loose clothes. Which clothing size should I buy for winter?",
           "宝宝 78 cm", "Recommend a size for a 150 cm tall child, please."]


@pytest.fixture
def engine(tokenizer):
    template = get_template("qwen3_nothink", tokenizer)
    eng = HFEngine(tiny_model(seed=3, init_range=0.3).eval(), tokenizer, template, max_batch=4)
    yield eng
    eng.close()


def prompts_of(engine):
    return [engine.template.encode_prompt(engine.tokenizer, [{"role": "user", "content": q}]) for q in QUERIES]


def test_batched_greedy_equals_sequential_and_hf_generate(engine):
    prompts = prompts_of(engine)
    params = SamplingParams(max_new_tokens=12, do_sample=False)
    sequential = [engine.generate([p], params)[0] for p in prompts]
    batched = engine.generate(prompts, params)  # 6 prompts, 4 slots: two wait and join as slots free up
    assert [r["text"] for r in batched] == [r["text"] for r in sequential]
    assert all(r["finish_reason"] == "length" and r["completion_tokens"] == 12 for r in batched)
    with torch.no_grad():
        ids = torch.tensor([prompts[0]])
        reference = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                          do_sample=False, eos_token_id=engine.template.stop_token_ids(engine.tokenizer),
                                          pad_token_id=engine.tokenizer.pad_token_id)
    assert engine.tokenizer.decode(reference[0, ids.shape[1]:], skip_special_tokens=True) == sequential[0]["text"]
    assert engine.stats["active"] == 0 and engine.stats["queued"] == 0


def test_requests_joining_mid_decode_get_the_sequential_answer(engine):
    prompts = prompts_of(engine)
    long, short = SamplingParams(max_new_tokens=40, do_sample=False), SamplingParams(max_new_tokens=10, do_sample=False)
    alone = [engine.generate([prompts[0]], long)[0]["text"]] + [engine.generate([p], short)[0]["text"] for p in prompts[1:4]]
    texts, done = ["", "", "", ""], [threading.Event() for _ in range(4)]

    def collect(i):
        def on_event(event):
            texts[i] += event.delta
            if event.finished:
                done[i].set()
        return on_event

    engine.submit(prompts[0], long, collect(0))
    steps = engine.stats["decode_steps"]
    for i in range(1, 4):  # each joins while the first is still decoding
        while engine.stats["decode_steps"] < steps + 5 * i:
            time.sleep(0.001)
        engine.submit(prompts[i], short, collect(i))
    assert all(d.wait(30) for d in done)
    assert texts == alone


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(engine):
    prompts = prompts_of(engine)
    params = SamplingParams(max_new_tokens=10, do_sample=True, temperature=1.0, top_p=0.9, top_k=50, seed=11)
    alone = engine.generate([prompts[1]], params)[0]["text"]
    batched = engine.generate(prompts[:3], params)
    assert batched[1]["text"] == alone
    assert engine.generate([prompts[1]], SamplingParams(max_new_tokens=10, seed=12))[0]["text"] != alone


def test_stop_strings_cut_the_answer_and_finish_with_stop(engine):
    prompt = prompts_of(engine)[0]
    full = engine.generate([prompt], SamplingParams(max_new_tokens=20, do_sample=False))[0]["text"]
    stop = next(full[k:k + 2] for k in range(len(full) // 2, len(full) - 2) if full.find(full[k:k + 2]) == k)
    cut = engine.generate([prompt], SamplingParams(max_new_tokens=20, do_sample=False, stop=(stop,)))[0]
    assert cut["finish_reason"] == "stop" and cut["text"] == full[:full.index(stop)]
    pieces = [e.delta for e in engine.stream(prompt, SamplingParams(max_new_tokens=20, do_sample=False, stop=(stop,)))]
    assert "".join(pieces) == cut["text"] and len(pieces) > 1


def test_cancel_frees_the_slot(engine):
    prompt = prompts_of(engine)[0]
    events = engine.stream(prompt, SamplingParams(max_new_tokens=500, do_sample=False))
    next(events)
    events.close()  # the consumer goes away: the sequence is cancelled
    deadline = time.time() + 120  # a wait, not a timing assertion: generous for a loaded machine
    while (engine.stats["active"] or engine.stats["cancelled"] < 1) and time.time() < deadline:
        time.sleep(0.01)
    assert engine.stats["cancelled"] == 1 and engine.stats["active"] == 0


def test_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(ValueError, match="context is 1024"):
        engine.submit([5] * 1024, SamplingParams(), lambda e: None)


def test_repetition_penalty_and_temperature_zero(engine):
    prompt = prompts_of(engine)[3]
    plain = engine.generate([prompt], SamplingParams(max_new_tokens=30, do_sample=False))[0]["text"]
    penalised = engine.generate([prompt], SamplingParams(max_new_tokens=30, do_sample=False,
                                                         repetition_penalty=5.0))[0]["text"]
    assert plain != penalised

    class Gen:
        max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty = 64, True, 0.95, 0.7, 50, 1.0

    greedy = SamplingParams.from_generating_args(Gen, temperature=0, stop=["x"])
    assert greedy.do_sample is False and greedy.stop == ("x",) and greedy.max_new_tokens == 64


def test_held_back_keeps_possible_stop_prefixes():
    assert held_back("answer </thi", ["</think>"]) == 5
    assert held_back("size 110 c", ["cm", "码"]) == 1
    assert held_back("size 110", ["cm"]) == 0


def test_split_reasoning_final_and_streaming(tokenizer):
    qwen3 = get_template("qwen3", tokenizer)
    assert split_reasoning(qwen3, "<think>\nheight 95\n</think>\n\n选 100 码", final=True) == ("height 95", "选 100 码")
    assert split_reasoning(qwen3, "<think>\nheight 95\n</th", final=False) == ("height 95", "")
    assert split_reasoning(qwen3, "<thi", final=False) == ("", "")
    assert split_reasoning(qwen3, "选 100 码", final=True) == ("", "选 100 码")
    nothink = get_template("qwen3", tokenizer, enable_thinking=False)
    assert split_reasoning(nothink, "<think>x</think>y", final=True) == (None, "<think>x</think>y")
    stream = "<think>\nheight 95, so 100\n</think>\n\n选 100 码"
    sent_r = sent_a = ""
    for k in range(1, len(stream) + 1):  # every partial output extends what was already sent
        r, a = split_reasoning(qwen3, stream[:k], final=k == len(stream))
        assert r.startswith(sent_r) and a.startswith(sent_a)
        sent_r, sent_a = r, a
    assert (sent_r, sent_a) == ("height 95, so 100", "选 100 码")


@pytest.mark.parametrize("fmt", ["default", "qwen", "llama3", "glm4", "mistral"])
def test_tool_calls_written_in_a_format_are_extracted_back(fmt):
    calls = [("get_size", '{"height": 95}')]
    text = format_function_calls(fmt, calls)
    assert extract_function_calls(fmt, text) == calls
    assert extract_function_calls(fmt, "建议选 100 码。") is None


def test_parallel_qwen_tool_calls():
    calls = [("a", '{"x": 1}'), ("b", '{"y": "二"}')]
    assert extract_function_calls("qwen", format_function_calls("qwen", calls)) == calls
    assert extract_function_calls("qwen", "<tool_call>\nnot json\n</tool_call>") is None


@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=10, do_sample=False, logprobs=3),
                                    SamplingParams(max_new_tokens=10, temperature=2.0, seed=5, logprobs=2)])
def test_logprobs_are_the_models_own_log_probabilities(engine, params):
    prompt, other = prompts_of(engine)[:2]
    engine.submit(other, SamplingParams(max_new_tokens=10, do_sample=False), lambda e: None)  # shares the batch
    events = list(engine.stream(prompt, params))
    entries = [e for event in events for e in event.logprobs]
    ids = [e.token_id for e in entries]
    assert len(ids) == events[-1].completion_tokens == 10
    assert engine.tokenizer.decode(ids, skip_special_tokens=True) == "".join(e.delta for e in events)
    with torch.no_grad():  # one forward over prompt + answer: the distribution each token was drawn from
        logits = engine.model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1].float()
    expected = logits.log_softmax(-1)  # before temperature: the model's probabilities, as OpenAI reports them
    for k, entry in enumerate(entries):
        assert entry.logprob == pytest.approx(expected[k, entry.token_id].item(), abs=1e-4)
        top = expected[k].topk(params.logprobs)
        assert [t for t, _ in entry.top] == top.indices.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(top.values.tolist(), abs=1e-4)
    if not params.do_sample:
        assert all(e.token_id == e.top[0][0] for e in entries)
    assert all(event.logprobs is None for event in engine.stream(prompt, SamplingParams(max_new_tokens=3)))
