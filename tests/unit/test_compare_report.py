"""Compare report pieces without a browser: each answer marked right/wrong by the accuracy its metric gives
the answer alone, each model's settings table, and sampled answers that do not depend on the batching."""

from __future__ import annotations

import pytest

from alignlab.config import load_config
from alignlab.eval.compare import answer_marks, generation_settings, render_markdown
from alignlab.eval.size_accuracy import extract_size


def test_marks_follow_the_accuracy_metric_per_answer():
    answers = ["建议选 110 码。", "Size 120 fits.", "I do not know.", "建议选 90 码"]
    references = ["建议选 110 码。身高 102 cm", "110", "120", ""]
    key, marks = answer_marks(answers, references, "alignlab.eval.size_accuracy:size_metrics")
    assert key == "size_accuracy"
    assert marks == [True, False, False, None]  # no label, no mark
    assert marks[:3] == [extract_size(a) == (r if r.isdigit() else extract_size(r))
                         for a, r in zip(answers[:3], references[:3])]
    key, marks = answer_marks([" positive", "negative", "neutral"], ["positive", "positive", "neutral"],
                              "classification")
    assert (key, marks) == ("accuracy", [True, False, True])
    assert answer_marks(answers, references, None) is None  # BLEU/ROUGE alone judge no single answer
    assert answer_marks(answers, ["", "", "", ""], "classification") is None


@pytest.mark.parametrize(("keys", "expected"), [
    (["do_sample=false"], {"decoding": "greedy", "max_new_tokens": 32, "num_beams": 1, "repetition_penalty": 1.0}),
    (["do_sample=true", "temperature=0.7", "top_p=0.9", "seed=7"],
     {"decoding": "sampling", "max_new_tokens": 32, "num_beams": 1, "repetition_penalty": 1.0,
      "temperature": 0.7, "top_p": 0.9, "top_k": 50, "seed": 7}),
    (["do_sample=true", "temperature=0"], {"decoding": "greedy", "max_new_tokens": 32, "num_beams": 1,
                                           "repetition_penalty": 1.0}),
    (["do_sample=false", "num_beams=3"], {"decoding": "beam search, 3 beams", "max_new_tokens": 32, "num_beams": 3,
                                          "repetition_penalty": 1.0, "length_penalty": 1.0}),
])
def test_settings_say_how_answers_were_decoded(keys, expected):
    cfg = load_config(["max_new_tokens=32", *keys])
    assert generation_settings(cfg) == expected


def test_markdown_has_settings_and_marks():
    report = {"models": [{"name": "base", "model": "m/base", "adapters": [], "template": "qwen3_nothink",
                          "generation": {"decoding": "greedy", "max_new_tokens": 8}},
                         {"name": "tuned", "model": "m/base", "adapters": ["a|b"], "template": "qwen3_nothink",
                          "generation": {"decoding": "greedy", "max_new_tokens": 8}}],
              "metrics": {"base": {"size_accuracy": 0.0}, "tuned": {"size_accuracy": 1.0}}, "marked_by": "size_accuracy",
              "rows": [{"prompt": "p", "reference": "110", "answers": {"base": "90 码", "tuned": "110 码"},
                        "marks": {"base": False, "tuned": True}}]}
    text = render_markdown(report)
    assert "| setting | base | tuned |" in text and "| adapters | none | a\\|b |" in text
    assert "| template | qwen3_nothink | qwen3_nothink |" in text and "| max_new_tokens | 8 | 8 |" in text
    assert "- **base** ✗: 90 码" in text and "- **tuned** ✓: 110 码" in text
    assert "scores `size_accuracy`" in text


def test_engine_answers_do_not_depend_on_the_batching(tokenizer):
    """Each prompt samples from its own seed (compare gives prompt i `seed + i`): one engine with batches of 1 and one with all prompts together
    give the same texts, and each equals that prompt sampled alone with its seed."""
    from dataclasses import replace

    from alignlab.data import get_template
    from alignlab.eval.compare import engine_answers
    from alignlab.infer.engine import HFEngine, SamplingParams
    from tests.conftest import tiny_model

    model = tiny_model(seed=1, init_range=0.3).eval()
    template = get_template("qwen3_nothink", tokenizer)
    prompts = [template.encode_prompt(tokenizer, [{"role": "user", "content": q}])
               for q in ("身高 100 cm 穿几码？", "Size for 120 cm?", "hi", "宝宝 80 cm")]
    params = SamplingParams(max_new_tokens=6, do_sample=True, temperature=1.0)
    texts = []
    for max_batch in (1, 4):
        engine = HFEngine(model, tokenizer, template, max_batch=max_batch, seed=max_batch)
        try:
            texts.append(engine_answers(engine, prompts, [replace(params, seed=11 + i) for i in range(len(prompts))]))
        finally:
            engine.close()
    assert texts[0] == texts[1]
    engine = HFEngine(model, tokenizer, template, max_batch=1)
    try:
        alone = [engine.generate([p], replace(params, seed=11 + i))[0]["text"] for i, p in enumerate(prompts)]
    finally:
        engine.close()
    assert [t for t, _ in texts[0]] == alone
    assert len({t for t, _ in texts[0]}) > 1
