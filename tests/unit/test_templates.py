"""Golden rendered strings and label masks for every built-in template.

Expected strings are written out by hand from each model family's chat format (LLaMA-Factory's
slot definitions), then compared with what our one-function encoding produces, turn by turn.
"""

from __future__ import annotations

import json

import pytest

from alignlab.data.convert import Example
from alignlab.data.encode import IGNORE_INDEX, EncodeOptions, encode_supervised
from alignlab.data.templates import TEMPLATES, TemplateError, get_template

CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How tall?"},
    {"role": "assistant", "content": "110 cm."},
]
SYSTEM = "Be brief."


def turns(template, tokenizer, messages=CHAT, system=SYSTEM, tools=None):
    pairs = template.encode_multiturn(tokenizer, messages, system, tools)
    return [(tokenizer.decode(p), tokenizer.decode(r)) for p, r in pairs]


def trained_text(tokenizer, enc):
    return tokenizer.decode([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX])


def sft(template, tokenizer, messages=CHAT, system=SYSTEM, **opt):
    ex = Example(prompt=messages[:-1], response=messages[-1:], system=system)
    return encode_supervised(template, tokenizer, ex, EncodeOptions(cutoff_len=1024, **opt))


@pytest.fixture
def bos_tokenizer(tokenizer):
    """The tiny tokenizer with a BOS and a distinct EOS, as llama/mistral/gemma-family models have."""
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    return tokenizer


def test_qwen3_nothink_multiturn_with_system(tokenizer):
    t = get_template("qwen3_nothink", tokenizer)
    assert turns(t, tokenizer) == [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
         "Hello!<|im_end|>\n"),
        ("<|im_start|>user\nHow tall?<|im_end|>\n<|im_start|>assistant\n", "110 cm.<|im_end|>\n"),
    ]
    enc = sft(t, tokenizer)
    assert trained_text(tokenizer, enc) == "Hello!<|im_end|>\n110 cm.<|im_end|>\n"
    assert tokenizer.eos_token == "<|im_end|>"


def test_label_mask_options(tokenizer):
    t = get_template("qwen3_nothink", tokenizer)
    full = "".join(p + r for p, r in turns(t, tokenizer))
    assert trained_text(tokenizer, sft(t, tokenizer, train_on_prompt=True)) == full
    assert trained_text(tokenizer, sft(t, tokenizer, mask_history=True)) == "110 cm.<|im_end|>\n"
    enc = sft(t, tokenizer)
    assert tokenizer.decode(enc["input_ids"]) == full
    # the mask is exactly the response spans: count tokens by hand
    pairs = t.encode_multiturn(tokenizer, CHAT, SYSTEM)
    expected = []
    for p, r in pairs:
        expected += [IGNORE_INDEX] * len(p) + r
    assert enc["labels"] == expected


def test_qwen_default_system(tokenizer):
    t = get_template("qwen", tokenizer)
    assert turns(t, tokenizer, CHAT[:2], system=None)[0][0] == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    t = get_template("qwen", tokenizer, default_system="Shop assistant.")
    assert turns(t, tokenizer, CHAT[:2], system=None)[0][0].startswith("<|im_start|>system\nShop assistant.<|im_end|>")


def test_qwen3_thinking_goes_into_response_when_enabled(tokenizer):
    t = get_template("qwen3", tokenizer, enable_thinking=True)
    assert turns(t, tokenizer, system=None) == [
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<think>\n\n</think>\n\nHello!<|im_end|>\n"),
        ("<|im_start|>user\nHow tall?<|im_end|>\n<|im_start|>assistant\n",
         "<think>\n\n</think>\n\n110 cm.<|im_end|>\n"),
    ]
    assert trained_text(tokenizer, sft(t, tokenizer, CHAT[:2], system=None)) == \
        "<think>\n\n</think>\n\nHello!<|im_end|>\n"


def test_qwen3_thinking_goes_into_prompt_when_disabled(tokenizer):
    t = get_template("qwen3", tokenizer, enable_thinking=False)
    assert turns(t, tokenizer, CHAT[:2], system=None) == [
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", "Hello!<|im_end|>\n"),
    ]
    assert trained_text(tokenizer, sft(t, tokenizer, CHAT[:2], system=None)) == "Hello!<|im_end|>\n"


THOUGHT_CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "<think>\ngreet back\n</think>\n\nHello!"},
    {"role": "user", "content": "How tall?"},
    {"role": "assistant", "content": "<think>\nrule: height + 3\n</think>\n\n110 cm."},
]
PLAIN_CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "How tall?"}, {"role": "assistant", "content": "110 cm."}]
USER1 = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
USER2 = "<|im_start|>user\nHow tall?<|im_end|>\n<|im_start|>assistant\n"
EMPTY = "<think>\n\n</think>\n\n"


def test_qwen3_sft_keeps_history_thoughts_as_llamafactory(tokenizer):
    """Multi-turn SFT trains every turn as LLaMA-Factory 0.9.5 does: each answer with its thought
    (an empty block where it has none); `enable_thinking: false` removes all thoughts."""
    t = get_template("qwen3", tokenizer, enable_thinking=True)
    assert [r for _, r in turns(t, tokenizer, THOUGHT_CHAT, system=None)] == [
        "<think>\ngreet back\n</think>\n\nHello!<|im_end|>\n",
        "<think>\nrule: height + 3\n</think>\n\n110 cm.<|im_end|>\n",
    ]
    enc = sft(t, tokenizer, THOUGHT_CHAT, system=None)
    assert trained_text(tokenizer, enc) == ("<think>\ngreet back\n</think>\n\nHello!<|im_end|>\n"
                                            "<think>\nrule: height + 3\n</think>\n\n110 cm.<|im_end|>\n")
    t = get_template("qwen3", tokenizer, enable_thinking=False)  # all thoughts removed
    assert [r for _, r in turns(t, tokenizer, THOUGHT_CHAT, system=None)] == ["Hello!<|im_end|>\n",
                                                                              "110 cm.<|im_end|>\n"]


def test_qwen3_mask_history_puts_no_empty_thought_into_history(tokenizer):
    """With `mask_history` the history answers lose their thoughts and get no empty block; only the
    trained last answer gets one (LLaMA-Factory; Qwen3's own template renders history the same)."""
    t = get_template("qwen3", tokenizer)
    for chat in (PLAIN_CHAT, THOUGHT_CHAT):
        enc = sft(t, tokenizer, chat, system=None, mask_history=True)
        last = chat[3]["content"] if chat is THOUGHT_CHAT else EMPTY + "110 cm."
        assert tokenizer.decode(enc["input_ids"]) == USER1 + "Hello!<|im_end|>\n" + USER2 + last + "<|im_end|>\n"
        assert trained_text(tokenizer, enc) == last + "<|im_end|>\n"
        theirs = tokenizer.apply_chat_template(chat[:3], tokenize=False, add_generation_prompt=True)
        assert tokenizer.decode(enc["input_ids"]).startswith(theirs)


def test_qwen3_preserve_thinking_keeps_history_thoughts(tokenizer):
    t = get_template("qwen3", tokenizer, preserve_thinking=True)
    enc = sft(t, tokenizer, THOUGHT_CHAT, system=None, mask_history=True)
    assert tokenizer.decode(enc["input_ids"]) == (USER1 + THOUGHT_CHAT[1]["content"] + "<|im_end|>\n" + USER2
                                                  + THOUGHT_CHAT[3]["content"] + "<|im_end|>\n")
    prompt, _ = t.encode_oneturn(tokenizer, THOUGHT_CHAT, None)
    assert tokenizer.decode(prompt) == USER1 + THOUGHT_CHAT[1]["content"] + "<|im_end|>\n" + USER2
    from alignlab.config import load_config

    assert load_config(["preserve_thinking=true"]).data.preserve_thinking is True  # a known key now


@pytest.mark.parametrize("thinking", [True, False])
def test_qwen3_pairwise_and_generation_prompts_equal_qwen3_jinja(tokenizer, thinking):
    """rm/dpo/kto/ppo prompts: history answers without thoughts and without an empty block, exactly
    as Qwen3's published chat template renders them (and LLaMA-Factory's encode_oneturn)."""
    from alignlab.data.encode import encode_pairwise

    t = get_template("qwen3", tokenizer, enable_thinking=thinking)
    for chat in (PLAIN_CHAT, THOUGHT_CHAT):
        theirs = tokenizer.apply_chat_template(chat[:3], tokenize=False, add_generation_prompt=True,
                                               enable_thinking=thinking)
        assert theirs == USER1 + "Hello!<|im_end|>\n" + USER2 + ("" if thinking else EMPTY)
        assert tokenizer.decode(t.encode_prompt(tokenizer, chat[:3])) == theirs
        pair = encode_pairwise(t, tokenizer, Example(prompt=chat[:3], chosen={"role": "assistant", "content": "a"},
                                                     rejected={"role": "assistant", "content": "b"}),
                               EncodeOptions(cutoff_len=1024))
        n = pair["chosen_labels"].count(IGNORE_INDEX)
        assert tokenizer.decode(pair["chosen_input_ids"][:n]) == theirs
        assert trained_text(tokenizer, {"input_ids": pair["chosen_input_ids"], "labels": pair["chosen_labels"]}) \
            == (EMPTY if thinking else "") + "a<|im_end|>\n"


def test_qwen3_prompt_matches_the_real_qwen3_jinja(tokenizer):
    """Our qwen3 generation prompt equals Qwen3's own chat template, thinking on and off."""
    for thinking in (True, False):
        t = get_template("qwen3", tokenizer, enable_thinking=thinking)
        ours = t.encode_prompt(tokenizer, CHAT[:1], system=SYSTEM)
        theirs = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, CHAT[0]], tokenize=False,
            add_generation_prompt=True, enable_thinking=thinking)
        assert tokenizer.decode(ours) == theirs


TOOLS = [{"name": "get_size", "description": "Size for a height",
          "parameters": {"type": "object", "properties": {"height": {"type": "number"}},
                         "required": ["height"]}}]
TOOL_CHAT = [
    {"role": "user", "content": "Size for 105 cm?"},
    {"role": "function", "content": json.dumps({"name": "get_size", "arguments": {"height": 105}})},
    {"role": "observation", "content": '{"size": 110}'},
    {"role": "assistant", "content": "Size 110."},
]


def test_qwen_tools_function_and_observation(tokenizer):
    t = get_template("qwen3_nothink", tokenizer)
    got = turns(t, tokenizer, TOOL_CHAT, system="", tools=json.dumps(TOOLS))
    tool_json = ('{"type": "function", "function": {"name": "get_size", "description": "Size for a height", '
                 '"parameters": {"type": "object", "properties": {"height": {"type": "number"}}, '
                 '"required": ["height"]}}}')
    assert got == [
        ("<|im_start|>system\n\n\n# Tools\n\nYou may call one or more functions to assist with the user query."
         "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
         + tool_json + "\n</tools>\n\nFor each function call, return a json object with function name and "
         "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
         '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
         "<|im_start|>user\nSize for 105 cm?<|im_end|>\n<|im_start|>assistant\n",
         '<tool_call>\n{"name": "get_size", "arguments": {"height": 105}}\n</tool_call><|im_end|>\n'),
        ('<|im_start|>user\n<tool_response>\n{"size": 110}\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
         "Size 110.<|im_end|>\n"),
    ]


def test_default_tool_format(tokenizer):
    t = get_template("default", tokenizer)
    (p1, r1), (p2, _) = turns(t, tokenizer, TOOL_CHAT, system="", tools=json.dumps(TOOLS))
    assert p1.startswith("System: You have access to the following tools:\n> Tool Name: get_size\n"
                         "Tool Description: Size for a height\nTool Args:\n  - height (number, required): \n\n")
    assert r1 == 'Action: get_size\nAction Input: {"height": 105}<|im_end|>\n'
    assert p2 == 'Human: {"size": 110}<|im_end|>\nAssistant:'


def test_default_alpaca_empty(tokenizer):
    assert turns(get_template("default", tokenizer), tokenizer, CHAT[:2]) == [
        ("System: Be brief.<|im_end|>\nHuman: Hi<|im_end|>\nAssistant:", "Hello!<|im_end|>\n")]
    assert turns(get_template("alpaca", tokenizer), tokenizer, CHAT[:2], system=None) == [
        ("Below is an instruction that describes a task. Write a response that appropriately completes "
         "the request.\n\n### Instruction:\nHi\n\n### Response:\n", "Hello!<|im_end|>\n\n")]
    assert turns(get_template("empty", tokenizer), tokenizer) == [("Be brief.Hi", "Hello!"), ("How tall?", "110 cm.")]


def test_chatml_observation_and_stop_words(tokenizer):
    t = get_template("chatml", tokenizer)
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
            {"role": "observation", "content": "obs"}, {"role": "assistant", "content": "b"}]
    assert turns(t, tokenizer, chat, system=None)[1][0] == "<|im_start|>tool\nobs<|im_end|>\n<|im_start|>assistant\n"
    ids = t.stop_token_ids(tokenizer)
    assert sorted(ids) == sorted(tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"]))


def test_llama3(bos_tokenizer):
    tok = bos_tokenizer
    t = get_template("llama3", tok)
    assert tok.eos_token == "<|eot_id|>"  # replace_eos
    assert turns(t, tok) == [
        ("<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
         "Hello!<|eot_id|>"),
        ("<|start_header_id|>user<|end_header_id|>\n\nHow tall?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n", "110 cm.<|eot_id|>"),
    ]
    assert tok.convert_tokens_to_ids("<|eom_id|>") in t.stop_token_ids(tok)


def test_llama2_fuses_system_into_first_user_turn(bos_tokenizer):
    tok = bos_tokenizer
    assert turns(get_template("llama2", tok), tok) == [
        ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]", "Hello!</s>"),
        ("<s>[INST] How tall? [/INST]", "110 cm.</s>"),
    ]


def test_mistral(bos_tokenizer):
    tok = bos_tokenizer
    assert turns(get_template("mistral", tok), tok) == [
        ("<s>[INST] Be brief.\n\nHi[/INST]", " Hello!</s>"),
        ("[INST] How tall?[/INST]", " 110 cm.</s>"),
    ]


def test_gemma(bos_tokenizer):
    tok = bos_tokenizer
    t = get_template("gemma", tok)
    assert turns(t, tok) == [
        ("<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n", "Hello!<end_of_turn>\n"),
        ("<start_of_turn>user\nHow tall?<end_of_turn>\n<start_of_turn>model\n", "110 cm.<end_of_turn>\n"),
    ]
    assert tok.eos_token == "<end_of_turn>"


def test_deepseek3(bos_tokenizer):
    tok = bos_tokenizer
    assert turns(get_template("deepseek3", tok), tok) == [
        ("<s>Be brief.<｜User｜>Hi<｜Assistant｜>", "Hello!</s>"),
        ("<｜User｜>How tall?<｜Assistant｜>", "110 cm.</s>"),
    ]


def test_phi4(tokenizer):
    assert turns(get_template("phi4", tokenizer), tokenizer, CHAT[:2]) == [
        ("<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>"
         "<|im_start|>assistant<|im_sep|>", "Hello!<|im_end|>")]


def test_glm4_efficient_eos_labels(bos_tokenizer):
    tok = bos_tokenizer
    t = get_template("glm4", tok)
    assert turns(t, tok) == [
        ("[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi<|assistant|>", "\nHello!"),
        ("<|user|>\nHow tall?<|assistant|>", "\n110 cm."),
    ]
    enc = sft(t, tok)
    eos = tok.eos_token_id
    assert enc["input_ids"][-1] == eos and enc["labels"][-1] == eos
    # the stop word that opens the next turn is learned as EOS (LLaMA-Factory's efficient-EOS rule)
    user_id = tok.convert_tokens_to_ids("<|user|>")
    second_user = [i for i, t_ in enumerate(enc["input_ids"]) if t_ == user_id][1]
    assert enc["labels"][second_user] == eos
    assert trained_text(tok, {"input_ids": enc["input_ids"], "labels": enc["labels"]}).count("Hello!") == 1


def test_every_listed_template_is_registered():
    required = {"empty", "default", "alpaca", "chatml", "qwen", "qwen3", "qwen3_nothink", "llama3",
                "llama2", "mistral", "gemma", "deepseek3", "glm4", "phi4"}
    assert required <= set(TEMPLATES)


def test_unknown_template_names_close_matches(tokenizer):
    with pytest.raises(TemplateError, match="qwen3"):
        get_template("qwen33", tokenizer)


def test_jinja_template_single_turn_and_clear_failure_on_history_rewrite(tokenizer):
    t = get_template(None, tokenizer)
    assert turns(t, tokenizer, CHAT[:2], system=None) == [
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<think>\n\n</think>\n\nHello!<|im_end|>\n")]
    with pytest.raises(TemplateError, match="does not keep earlier turns"):
        t.encode_multiturn(tokenizer, CHAT, None)


def test_jinja_template_multiturn_equals_builtin_when_prefixes_hold(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    jinja = get_template(None, tokenizer)
    builtin = get_template("qwen3_nothink", tokenizer)
    assert jinja.encode_multiturn(tokenizer, CHAT, SYSTEM) == builtin.encode_multiturn(tokenizer, CHAT, SYSTEM)


def test_template_unset_refuses_tool_data_its_jinja_does_not_render(tokenizer):
    """A tokenizer template that ignores tool calls would train empty tool-call turns: refuse, naming the template."""
    qwen3_jinja = get_template(None, tokenizer)
    prompt, response = qwen3_jinja.encode_oneturn(tokenizer, TOOL_CHAT[:2], None, json.dumps(TOOLS))
    assert '<tool_call>\n{"name": "get_size", "arguments": {"height": 105}}\n</tool_call>' in tokenizer.decode(response)
    assert '"name": "get_size"' in tokenizer.decode(prompt)  # Qwen3's own Jinja renders tools: accepted
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    plain = get_template(None, tokenizer)
    assert plain.encode_multiturn(tokenizer, CHAT[:2]) == get_template("qwen3_nothink", tokenizer).encode_multiturn(
        tokenizer, CHAT[:2])  # plain chat still works
    with pytest.raises(TemplateError, match=r"does not render tool calls: tool-call turns would be trained empty. "
                                            r"Set `template: qwen`"):
        plain.encode_multiturn(tokenizer, TOOL_CHAT)
    with pytest.raises(TemplateError, match="does not render tool definitions"):
        plain.encode_prompt(tokenizer, CHAT[:1], tools=json.dumps(TOOLS))


def test_empty_tool_list_renders_no_system_turn_as_qwen3_jinja(tokenizer):
    """A documented difference: LLaMA-Factory 0.9.5 renders an empty system turn for `tools: "[]"`;
    Qwen3's published template (and alignlab) render none."""
    t = get_template("qwen3", tokenizer)
    ours = tokenizer.decode(t.encode_prompt(tokenizer, CHAT[:1], tools="[]"))
    assert ours == tokenizer.apply_chat_template(CHAT[:1], tools=[], tokenize=False, add_generation_prompt=True)
    assert ours == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("preserve", [True, False])
def test_qwen3_exported_jinja_renders_what_training_sees(tokenizer, thinking, preserve):
    """The saved chat_template.jinja: a whole conversation as multi-turn SFT encodes it, a generation
    prompt as encode_prompt (history thoughts per `preserve_thinking`)."""
    t = get_template("qwen3", tokenizer, enable_thinking=thinking, preserve_thinking=preserve)
    tokenizer.chat_template = t.to_jinja(tokenizer)
    full = tokenizer.apply_chat_template(THOUGHT_CHAT, tokenize=False, enable_thinking=thinking)
    assert full == t.render(tokenizer, THOUGHT_CHAT)
    prompt = tokenizer.apply_chat_template(THOUGHT_CHAT[:3], tokenize=False, add_generation_prompt=True,
                                           enable_thinking=thinking)
    assert prompt == tokenizer.decode(t.encode_prompt(tokenizer, THOUGHT_CHAT[:3]))
    assert ("greet back" in prompt) == preserve
