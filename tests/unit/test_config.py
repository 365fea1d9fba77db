"""Config parsing: files, key=value and --key overrides, types, unknown keys, cross-checks."""

from __future__ import annotations

import json

import pytest

from alignlab.config import ConfigError, help_text, load_config


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_yaml_with_overrides_and_flags_is_typed(tmp_path):
    path = write(tmp_path, "model_name_or_path: m\nstage: sft\nlearning_rate: 1.0e-4\nlora_rank: 8\n"
                           "output_dir: out\nreport_to: none\n")
    cfg = load_config([path, "learning_rate=1e-5", "--lora_rank", "16", "--packing"], with_training=True)
    assert cfg.training.learning_rate == 1e-5  # YAML reads "1e-5" as text; it must become a float
    assert cfg.finetuning.lora_rank == 16 and cfg.finetuning.lora_alpha == 32  # alpha defaults to 2 x rank
    assert cfg.data.packing is True
    assert cfg.model.model_name_or_path == "m"
    assert cfg.resolved["lora_rank"] == 16


def test_json_config(tmp_path):
    path = write(tmp_path, json.dumps({"stage": "pt", "dataset": "demo_pt"}), "cfg.json")
    cfg = load_config([path])
    assert cfg.finetuning.stage == "pt" and cfg.data.packing is True  # pt packs by default


def test_unknown_key_names_closest_valid_keys(tmp_path):
    path = write(tmp_path, "lora_rnak: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config([path])
    assert "Unknown config key `lora_rnak`" in str(err.value) and "lora_rank" in str(err.value)
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(["learnig_rate=1e-4"], with_training=True)


@pytest.mark.parametrize("args, message", [
    (["quantization_bit=4", "finetuning_type=full"], "needs `finetuning_type: lora`"),
    (["quantization_bit=3"], "must be 4 or 8"),
    (["mask_history=true", "train_on_prompt=true"], "contradict"),
    (["val_size=0.1", "eval_dataset=a"], "either `val_size`"),
    (["stage=dpo", "packing=true"], "`packing` works for stages pt and sft"),
    (["stage=foo"], "not one of"),
    (["lora_rank=eight"], "expected an integer"),
    (["packing=maybe"], "expected true or false"),
    (["finetuning_type=full", "use_dora=true"], "need `finetuning_type: lora`"),
])
def test_cross_argument_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        load_config(args)


def test_neat_packing_turns_packing_on():
    cfg = load_config(["neat_packing=true"])
    assert cfg.data.packing is True


def test_training_arguments_pass_through(tmp_path):
    cfg = load_config(["output_dir=" + str(tmp_path), "per_device_train_batch_size=4",
                       "lr_scheduler_type=cosine", "ddp_timeout=180000000", "report_to=none"],
                      with_training=True)
    assert cfg.training.per_device_train_batch_size == 4
    assert str(cfg.training.lr_scheduler_type.value) == "cosine"
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        load_config(["lr_scheduler_type=wobbly"], with_training=True)


def test_missing_config_file_and_bad_argument():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["nope.yaml"])
    with pytest.raises(ConfigError, match="Cannot read argument"):
        load_config(["positional"])


def test_help_lists_keys_with_help():
    text = help_text()
    assert "lora_rank (default 8): LoRA rank." in text
    assert "learning_rate" in text and "[Seq2SeqTrainingArguments]" in text


def test_llamafactory_keys_renamed_by_transformers5_still_work():
    cfg = load_config(["warmup_ratio=0.1", "evaluation_strategy=steps", "overwrite_output_dir=true"],
                      with_training=True)
    assert cfg.training.warmup_steps == 0.1 and cfg.training.eval_strategy.value == "steps"
    assert cfg.finetuning.overwrite_output_dir is True
    cfg = load_config(["save_strategy=no", "eval_strategy=no"], with_training=True)  # YAML reads `no` as false
    assert cfg.training.save_strategy.value == "no"
    with pytest.raises(ConfigError, match="warmup_ratio"):
        load_config(["warmup_ratio=2"])


def test_mixed_precision_falls_back_to_float32_without_a_gpu():
    import torch

    cfg = load_config(["bf16=true"], with_training=True)
    if not torch.cuda.is_available():
        assert cfg.training.bf16 is False and cfg.training.use_cpu is True


def test_config_doc_is_current_and_covers_every_llamafactory_key():
    import subprocess
    import sys

    from alignlab.config.llamafactory import LF_KEYS
    from tests.conftest import ROOT

    printed = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_table.py")], capture_output=True,
                             text=True, check=True).stdout
    assert printed == (ROOT / "docs" / "config.md").read_text(), "run scripts/config_table.py > docs/config.md"
    for key in " ".join(LF_KEYS.values()).split():
        assert f"| `{key}` | supported |" in printed or f"| `{key}` | warns |" in printed \
            or f"| `{key}` | rejected |" in printed, key


@pytest.mark.parametrize(("key", "reason"), [("use_galore", "optimiser is not available"),
                                             ("image_max_pixels", "multimodal training is not supported"),
                                             ("hf_hub_token", "runs offline")])
def test_unsupported_llamafactory_keys_say_why(key, reason):
    with pytest.raises(ConfigError, match=f"`{key}` .*LLaMA-Factory key alignlab does not accept: .*{reason}"):
        load_config(["model_name_or_path=m", f"{key}=1"])


def test_llamafactory_renamed_add_special_tokens():
    assert load_config(["model_name_or_path=m", "add_special_tokens=<a>,<b>"]).model.new_special_tokens == "<a>,<b>"
