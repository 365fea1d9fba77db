"""Every bad value is one clear line before anything loads: exit status 1, the key, the value and what
is allowed, no traceback, and the output folder byte-identical before and after."""

from __future__ import annotations

import pytest

from alignlab.cli import main
from tests.integration.test_train_sft import common


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


CASES = [  # (overrides, words the message must hold)
    ({"per_device_train_batch_size": 0}, ["`per_device_train_batch_size: 0`", "integer >= 1"]),
    ({"gradient_accumulation_steps": 0}, ["`gradient_accumulation_steps: 0`", "integer >= 1"]),
    ({"learning_rate": -1e-4}, ["`learning_rate: -0.0001`", ">= 0"]),
    ({"finetuning_type": "lora", "lora_rank": 0}, ["`lora_rank: 0`", "integer >= 1"]),
    ({"finetuning_type": "lora", "lora_dropout": 1.0}, ["`lora_dropout: 1.0`", "[0, 1)"]),
    ({"finetuning_type": "lora", "lora_dropout": -0.1}, ["`lora_dropout: -0.1`", "[0, 1)"]),
    ({"stage": "rm", "rm_min_accuracy": 85}, ["`rm_min_accuracy: 85", "0.85 is 85%"]),
    ({"stage": "dpo", "dataset": "demo_pref", "pref_beta": 0}, ["`pref_beta: 0.0`", "> 0"]),
    ({"max_samples": 0}, ["`max_samples: 0`", "positive number of rows"]),
    ({"max_samples": -5}, ["`max_samples: -5`", "positive"]),
    ({"num_train_epochs": 0, "max_steps": -1}, ["`num_train_epochs: 0.0`", "set `max_steps`"]),
    ({"stage": "grpo", "dataset": "demo_rl", "grpo_group_size": 1}, ["`grpo_group_size: 1`", ">= 2"]),
    ({"finetuning_type": "lora", "adapter_name_or_path": "saves/no-such-adapter"},
     ["`adapter_name_or_path` saves/no-such-adapter does not exist"]),
    ({"model_name_or_path": "Qwen/Qwen3-0.6B-not-downloaded"},
     ["`model_name_or_path` Qwen/Qwen3-0.6B-not-downloaded is not a local folder nor in the Hugging Face cache",
      "hf download Qwen/Qwen3-0.6B-not-downloaded"]),
    ({"pref_loss": "nope", "stage": "dpo"}, ["`pref_loss`: 'nope' is not one of"]),
    ({"stage": "grpo", "dataset": "demo_rl", "reward_funcs": "length_penalty", "infer_backend": "vllm"},
     ["`infer_backend: vllm` does not drive stage grpo's rollouts yet"]),
    ({"stage": "ppo", "dataset": "demo_rl", "reward_funcs": "length_penalty", "fsdp": "full_shard"},
     ["`fsdp` is not supported by stage ppo yet", "FORCE_TORCHRUN=1"]),
]


@pytest.mark.parametrize(("overrides", "words"), CASES, ids=[",".join(c[0]) for c in CASES])
def test_bad_value_is_one_clear_line(base_model_dir, tmp_path, capsys, monkeypatch, overrides, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("a previous run's files stay as they were")
    args = {"max_steps": 2, **overrides}
    before = snapshot(out)
    assert main(["train", *common(base_model_dir, out, **args)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert snapshot(out) == before


def test_output_dir_that_is_a_file(base_model_dir, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep")
    assert main(["train", *common(base_model_dir, target, max_steps=1)]) == 1
    assert "`output_dir`" in capsys.readouterr().err and target.read_text() == "keep"
    assert main(["train", *common(base_model_dir, target / "inside", max_steps=1)]) == 1
    assert "is a file" in capsys.readouterr().err


def test_adapter_folder_as_model_loads_its_base_and_the_adapter(base_model_dir, tmp_path):
    import torch

    from alignlab.config import load_config
    from alignlab.model.run_loader import load_inference_model
    from tests.integration.test_export import make_adapter

    adapter = tmp_path / "adapter"
    make_adapter(base_model_dir, adapter)
    direct = load_inference_model(load_config([f"model_name_or_path={adapter}"]))
    explicit = load_inference_model(load_config([f"model_name_or_path={base_model_dir}",
                                                 f"adapter_name_or_path={adapter}"]))
    ids = torch.tensor([[1, 872, 198, 100, 200]])
    with torch.no_grad():
        assert torch.equal(direct.model(ids).logits, explicit.model(ids).logits)


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(base_model_dir, tmp_path):
    """A 40 MB tmpfs holds one full checkpoint of the tiny model (27 MB) but not two."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        from tests.integration.test_train_sft import cli

        out = disk / "run"
        run = cli(*common(base_model_dir, out, finetuning_type="full", max_steps=4, save_steps=1), check=False)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
        assert "Could not save checkpoint-2" in run.stderr and "last complete checkpoint is checkpoint-1" in run.stderr
        assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
        assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    finally:
        subprocess.run(["umount", str(disk)])
