"""`alignlab export`: merged weights equal base + adapter, the exported chat template renders the
training template's ids, shards, dtype, value head, Modelfile; a quantised base is refused."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.data import get_template
from tests.conftest import ROOT, TINY, tiny_model
from tests.integration.test_train_sft import ALIGNLAB

CONVERSATION = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "孩子身高 95 cm，选多大码？"},
                {"role": "assistant", "content": "<think>\nheight 95\n</think>\n\n建议选 100 码。"},
                {"role": "user", "content": "And for 120 cm?"}, {"role": "assistant", "content": "I recommend size 130."}]


def export(*args):
    run = subprocess.run([ALIGNLAB, "export", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    return run


def make_adapter(base_dir, path, template="qwen3_nothink", seed=5):
    """A LoRA adapter with non-zero weights on every linear layer, saved like a training run."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    model.save_pretrained(path)
    (path / "run_config.yaml").write_text(yaml.safe_dump({"template": template, "stage": "sft",
                                                          "model_name_or_path": str(base_dir)}))
    return model


@pytest.mark.parametrize("template", ["qwen3_nothink", "qwen3"])
def test_merged_export_matches_base_plus_adapter_and_carries_the_template(base_model_dir, tmp_path, template):
    adapter = tmp_path / "adapter"
    peft_model = make_adapter(base_model_dir, adapter, template)
    out = tmp_path / "export"
    run = export(f"model_name_or_path={base_model_dir}", f"adapter_name_or_path={adapter}", f"export_dir={out}",
                 "export_size=0.004")
    assert run.returncode == 0, run.stderr[-3000:]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2  # 8.6 MB of weights in shards of at most 4 MB
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[5, 100, 200, 300, 400, 2, 17]])
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(base_model_dir).eval()(input_ids=ids).logits
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the logits
    assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)
    # the exported tokenizer renders exactly the training template, multi-turn, prompt and full
    exported = AutoTokenizer.from_pretrained(out)
    ours_tokenizer = AutoTokenizer.from_pretrained(TINY)
    ours = get_template(template, ours_tokenizer)
    messages, system = CONVERSATION[1:], CONVERSATION[0]["content"]
    full = [t for p, r in ours.encode_multiturn(ours_tokenizer, messages, system) for t in p + r]
    assert list(exported.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)) == full
    prompt = ours.encode_prompt(ours_tokenizer, messages[:3], system)
    assert list(exported.apply_chat_template(CONVERSATION[:4], tokenize=True, add_generation_prompt=True,
                                             return_dict=False)) == prompt
    assert (out / "chat_template.jinja").read_text() == exported.chat_template
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM .\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n" in modelfile
    assert yaml.safe_load((out / "run_config.yaml").read_text())["template"] == template


def test_exported_template_matches_every_builtin_template(tokenizer):
    for name in ["qwen3_nothink", "qwen", "llama3", "llama2", "mistral", "gemma", "chatml", "default", "alpaca",
                 "phi4", "deepseek3", "empty", "glm4"]:
        for thinking in (True, False):
            tok = AutoTokenizer.from_pretrained(TINY)
            template = get_template(name, tok, enable_thinking=thinking)
            tok.chat_template = template.to_jinja(tok)
            messages, system = CONVERSATION[1:], CONVERSATION[0]["content"]
            full = [t for p, r in template.encode_multiturn(tok, messages, system) for t in p + r]
            if template.efficient_eos:  # training appends EOS after the last answer (glm4)
                full.append(tok.eos_token_id)
            rendered = tok.apply_chat_template(CONVERSATION, tokenize=True, enable_thinking=thinking, return_dict=False)
            assert list(rendered) == full, (name, thinking)
            prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=True, add_generation_prompt=True,
                                             enable_thinking=thinking, return_dict=False)
            assert list(prompt) == template.encode_prompt(tok, messages[:1], system), (name, thinking)


def test_qwen3_thinking_switch_in_the_exported_template(tokenizer):
    template = get_template("qwen3", tokenizer)
    tokenizer.chat_template = template.to_jinja(tokenizer)
    question = [{"role": "user", "content": "hi"}]
    off = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    on = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    assert on == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n\n</think>\n\n"


def test_reward_model_export_copies_the_value_head_and_casts(tmp_path):
    from alignlab.model.value_head import HEAD_FILE, ValueHeadModel

    source = tmp_path / "rm"
    reward = ValueHeadModel(tiny_model(seed=4))
    reward.backbone.save_pretrained(source)
    reward.save_head(str(source))
    AutoTokenizer.from_pretrained(TINY).save_pretrained(source)
    (source / "run_config.yaml").write_text("template: qwen3_nothink\nstage: rm\n")
    out = tmp_path / "export"
    run = export(f"model_name_or_path={source}", f"export_dir={out}", "infer_dtype=bfloat16")
    assert run.returncode == 0, run.stderr[-3000:]
    assert load_file(out / HEAD_FILE).keys() == load_file(source / HEAD_FILE).keys()
    assert all(torch.equal(a, b) for a, b in zip(load_file(out / HEAD_FILE).values(), load_file(source / HEAD_FILE).values()))
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    assert yaml.safe_load((out / "run_config.yaml").read_text())["stage"] == "rm"

    # a later export into the same folder replaces the previous export wholly: no stale value head
    plain = tmp_path / "sft"
    tiny_model(seed=6).save_pretrained(plain)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(plain)
    run = export(f"model_name_or_path={plain}", f"export_dir={out}", "template=qwen3_nothink")
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (out / HEAD_FILE).exists() and "stage" not in yaml.safe_load((out / "run_config.yaml").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "rm", "sft"]  # no temporary folders left


def test_export_refuses_folders_it_would_mix_with(base_model_dir, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_config.yaml").write_text("stage: sft\n")
    cases = [(tmp_path / "notes", "is not empty and holds no previous alignlab export"),
             (base_model_dir, "is the model or adapter folder"), (base_model_dir / "merged", "is the model or adapter"),
             (run_dir / "export", "is inside the training run folder")]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for target, message in cases:
        run = export(f"model_name_or_path={base_model_dir}", f"export_dir={target}", "template=qwen3_nothink")
        assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (base_model_dir / "merged").exists() and not (run_dir / "export").exists()


def test_export_refuses_a_quantised_base_and_a_missing_export_dir(base_model_dir, tmp_path):
    run = export(f"model_name_or_path={base_model_dir}", f"export_dir={tmp_path / 'x'}", "quantization_bit=4")
    assert run.returncode == 1 and "Cannot merge adapters into a quantised base" in run.stderr
    run = export(f"model_name_or_path={base_model_dir}")
    assert run.returncode == 1 and "needs `export_dir`" in run.stderr


def test_serving_keeps_the_runs_preserve_thinking(base_model_dir, tmp_path):
    from alignlab.config import load_config
    from alignlab.model.run_loader import load_inference_model

    adapter = tmp_path / "adapter"
    make_adapter(base_model_dir, adapter, template="qwen3")
    settings = yaml.safe_load((adapter / "run_config.yaml").read_text())
    (adapter / "run_config.yaml").write_text(yaml.safe_dump({**settings, "preserve_thinking": True}))
    loaded = load_inference_model(load_config([f"model_name_or_path={base_model_dir}", f"adapter_name_or_path={adapter}"]))
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\nkept\n</think>\n\nb"},
               {"role": "user", "content": "c"}]
    prompt = loaded.tokenizer.decode(loaded.template.encode_prompt(loaded.tokenizer, history))
    assert "kept" in prompt
