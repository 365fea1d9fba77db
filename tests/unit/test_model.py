"""Model loading options and fine-tuning methods: which parameters train, with what settings."""

from __future__ import annotations

import logging

import pytest
import torch

from alignlab.config import load_config
from alignlab.model.adapter import all_linear_modules, init_adapter
from alignlab.model.loader import ModelError, count_parameters, load_model
from tests.conftest import TINY


def build(tokenizer, *args, trainable=True):
    cfg = load_config([f"model_name_or_path={TINY}", "train_from_scratch=true", "finetuning_type=full", *args],
                      with_training=True)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, cfg.training, is_trainable=trainable,
                       cutoff_len=cfg.data.cutoff_len)
    return cfg, model


def lora(tokenizer, base_dir, *args):
    cfg = load_config([f"model_name_or_path={base_dir}", "finetuning_type=lora", *args], with_training=True)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, cfg.training, is_trainable=True)
    return init_adapter(model, cfg.model, cfg.finetuning, is_trainable=True)


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_last_and_first_layers_with_modules(tokenizer):
    cfg, model = build(tokenizer, "freeze_trainable_layers=1")
    cfg.finetuning.finetuning_type = "freeze"
    init_adapter(model, cfg.model, cfg.finetuning, is_trainable=True)
    names = trainable_names(model)
    assert names and all(".layers.3." in n for n in names)
    assert len(names) == len([n for n, _ in model.named_parameters() if ".layers.3." in n])

    cfg, model = build(tokenizer, "freeze_trainable_layers=-2", "freeze_trainable_modules=mlp",
                       "freeze_extra_modules=model.embed_tokens")
    cfg.finetuning.finetuning_type = "freeze"
    init_adapter(model, cfg.model, cfg.finetuning, is_trainable=True)
    names = trainable_names(model)
    assert "model.embed_tokens.weight" in names
    layer_names = names - {"model.embed_tokens.weight"}
    assert layer_names == {n for n, _ in model.named_parameters()
                           if (".layers.0." in n or ".layers.1." in n) and ".mlp." in n}


def test_lora_all_targets_every_linear_but_the_head(tokenizer, base_model_dir):
    from transformers import AutoModelForCausalLM

    assert all_linear_modules(AutoModelForCausalLM.from_pretrained(base_model_dir)) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                          "up_proj", "v_proj"]
    model = lora(tokenizer, base_model_dir, "lora_rank=4")
    names = trainable_names(model)
    assert names and all("lora_" in n for n in names)
    assert not any("lm_head" in n or "embed" in n for n in names)
    config = model.peft_config["default"]
    assert config.r == 4 and config.lora_alpha == 8  # alpha defaults to 2 x rank
    trainable, total = count_parameters(model)
    assert 0 < trainable < total


@pytest.mark.parametrize("option, check", [
    ("use_dora=true", lambda c, m: c.use_dora and any("lora_magnitude_vector" in n for n in trainable_names(m))),
    ("use_rslora=true", lambda c, m: c.use_rslora),
    ("pissa_init=true", lambda c, m: str(c.init_lora_weights).startswith("pissa")),
    ("additional_target=embed_tokens", lambda c, m: any("modules_to_save" in n for n in trainable_names(m))),
])
def test_lora_variants(tokenizer, base_model_dir, option, check):
    model = lora(tokenizer, base_model_dir, "lora_rank=4", "lora_target=q_proj,v_proj", option)
    assert check(model.peft_config["default"], model)
    out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_stacked_adapters_merge_all_but_the_last(tokenizer, base_model_dir, tmp_path):
    first = lora(tokenizer, base_model_dir, "lora_rank=2", "lora_target=q_proj")
    with torch.no_grad():
        for n, p in first.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    first.save_pretrained(tmp_path / "a")
    second = lora(tokenizer, base_model_dir, "lora_rank=2", "lora_target=v_proj")
    second.save_pretrained(tmp_path / "b")
    stacked = lora(tokenizer, base_model_dir, f"adapter_name_or_path={tmp_path / 'a'},{tmp_path / 'b'}")
    targets = {n.split(".")[-4] for n in trainable_names(stacked)}
    assert targets == {"v_proj"}  # the last adapter keeps training; the first is merged into the base
    fresh = lora(tokenizer, base_model_dir, f"adapter_name_or_path={tmp_path / 'a'}", "create_new_adapter=true",
                 "lora_target=k_proj")
    assert {n.split(".")[-4] for n in trainable_names(fresh)} == {"k_proj"}


def test_loraplus_gives_b_matrices_a_larger_learning_rate(tokenizer, base_model_dir, tmp_path):
    from alignlab.train.trainer import AlignTrainer

    cfg = load_config([f"model_name_or_path={base_model_dir}", "loraplus_lr_ratio=16", "learning_rate=1e-4",
                       f"output_dir={tmp_path}", "report_to=none"], with_training=True)
    model = lora(tokenizer, base_model_dir, "lora_rank=2")
    trainer = AlignTrainer(model=model, args=cfg.training, finetuning_args=cfg.finetuning)
    optimizer = trainer.create_optimizer()
    lrs = {}
    by_id = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lrs[by_id[id(p)]] = group["lr"]
    assert {lr for n, lr in lrs.items() if "lora_B" in n} == {1.6e-3}
    assert {lr for n, lr in lrs.items() if "lora_A" in n} == {1e-4}


def test_clear_errors_for_unavailable_options(tokenizer, base_model_dir, caplog):
    cfg = load_config([f"model_name_or_path={base_model_dir}", "quantization_bit=4"], with_training=True)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="needs a CUDA GPU"):
            load_model(tokenizer, cfg.model, cfg.finetuning, cfg.training, is_trainable=True)
    cfg = load_config([f"model_name_or_path={base_model_dir}", "flash_attn=fa2"])
    with pytest.raises(ModelError, match="flash-attn"):
        load_model(tokenizer, cfg.model)
    cfg = load_config([f"model_name_or_path={TINY}"])
    with pytest.raises(ModelError, match="train_from_scratch: true"):
        load_model(tokenizer, cfg.model)
    tokenizer.add_special_tokens({"additional_special_tokens": [f"<extra_{i}>" for i in range(200)]})
    cfg = load_config([f"model_name_or_path={base_model_dir}"])
    with pytest.raises(ModelError, match="resize_vocab: true"):
        load_model(tokenizer, cfg.model)
    cfg = load_config([f"model_name_or_path={base_model_dir}", "resize_vocab=true"])
    assert load_model(tokenizer, cfg.model).get_input_embeddings().weight.shape[0] % 64 == 0
    cfg = load_config([f"model_name_or_path={base_model_dir}", "enable_liger_kernel=true", "resize_vocab=true"])
    with caplog.at_level(logging.WARNING):
        load_model(tokenizer, cfg.model)
    assert "liger-kernel is not installed" in caplog.text


def test_dtype_attention_rope_and_checkpointing(tokenizer):
    _, model = build(tokenizer, "flash_attn=disabled", "rope_scaling=linear", "cutoff_len=4096")
    assert model.config._attn_implementation == "eager"
    assert model.config.rope_parameters["rope_type"] == "linear" and model.config.rope_parameters["factor"] == 4.0
    assert model.is_activation_checkpointing and next(model.parameters()).dtype == torch.float32
    _, model = build(tokenizer, "disable_gradient_checkpointing=true")
    assert not model.is_activation_checkpointing


@pytest.mark.parametrize(("kind", "cutoff", "expected"), [
    ("linear", 4096, {"rope_type": "linear", "factor": 4.0}),
    ("linear", 512, None),  # LLaMA-Factory: the cutoff fits the model's positions, so no scaling
    ("yarn", 3000, {"rope_type": "yarn", "factor": 3.0, "original_max_position_embeddings": 1024}),
    ("llama3", 2048, {"rope_type": "llama3", "factor": 2.0, "original_max_position_embeddings": 1024,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
    ("dynamic", None, {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 1024}),
])
def test_rope_scaling_follows_llamafactory(tokenizer, kind, cutoff, expected):
    from transformers import AutoConfig

    from alignlab.model.loader import _rope_scaling

    config = AutoConfig.from_pretrained(TINY)
    assert config.max_position_embeddings == 1024
    before = dict(config.rope_parameters or {})
    cfg = load_config([f"model_name_or_path={TINY}", f"rope_scaling={kind}"])
    _rope_scaling(config, cfg.model, cutoff)
    if expected is None:
        assert dict(config.rope_parameters or {}) == before and config.max_position_embeddings == 1024
    else:
        assert expected.items() <= dict(config.rope_parameters).items()
        assert config.max_position_embeddings == 1024 * expected["factor"]
    _, model = build(tokenizer, "pure_bf16=true", "bf16=true")
    assert next(model.parameters()).dtype == torch.bfloat16
    _, model = build(tokenizer, trainable=False)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_upcast_layernorm_and_lmhead_output(tokenizer):
    _, model = build(tokenizer, "pure_bf16=true", "bf16=true", "upcast_layernorm=true", "upcast_lmhead_output=true")
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "norm" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "proj" in n} == {torch.bfloat16}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.float32
    _, plain = build(tokenizer, "pure_bf16=true", "bf16=true")
    assert {p.dtype for p in plain.parameters()} == {torch.bfloat16}
    assert plain(torch.tensor([[1, 2, 3]])).logits.dtype == torch.bfloat16
