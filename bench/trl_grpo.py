"""Run the GRPO row of bench/peers.py with TRL's GRPOTrainer, from the same YAML alignlab reads.

Run by the TRL venv's python (scripts/peer_venvs.py trl): `python bench/trl_grpo.py run.yaml`. The YAML's
alignlab keys map to GRPOConfig: per_device_train_batch_size prompts x grpo_group_size completions per
step (TRL counts completions), max_new_tokens, max_steps, learning_rate, grpo_beta (beta),
ppo_cliprange (epsilon), temperature/top_p/top_k, the per-completion token mean then the mean over
completions (loss_type grpo, as alignlab's), group-std scaling, LoRA rank/alpha on all linear layers, fp32
on the CPU. The prompts are the dataset's `instruction` column as one user message each, rendered by
the model's chat template. Writes all_results.json with train_runtime, episodes and the mean reward.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main(path: str) -> int:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from grpo_reward import ascii_share

    keys = yaml.safe_load(Path(path).read_text())
    info = json.loads((Path(keys["dataset_dir"]) / "dataset_info.json").read_text())[keys["dataset"]]
    rows = json.loads((Path(keys["dataset_dir"]) / info["file_name"]).read_text())[: keys.get("max_samples")]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["instruction"]}]} for r in rows])
    group = keys["grpo_group_size"]
    config = GRPOConfig(
        output_dir=keys["output_dir"], per_device_train_batch_size=keys["per_device_train_batch_size"] * group,
        num_generations=group, max_completion_length=keys["max_new_tokens"], max_steps=keys["max_steps"],
        learning_rate=keys["learning_rate"], beta=keys["grpo_beta"], epsilon=keys["ppo_cliprange"],
        temperature=keys["temperature"], top_p=keys["top_p"], top_k=keys["top_k"], loss_type="grpo",
        scale_rewards="group", num_iterations=keys["ppo_epochs"], logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, seed=keys["seed"], lr_scheduler_type=keys["lr_scheduler_type"],
        gradient_checkpointing=False, dataloader_num_workers=0)
    lora = LoraConfig(r=keys["lora_rank"], lora_alpha=keys.get("lora_alpha", 2 * keys["lora_rank"]),
                      lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(keys["model_name_or_path"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(keys["model_name_or_path"])
    trainer = GRPOTrainer(model=model, reward_funcs=ascii_share, args=config, train_dataset=data,
                          processing_class=tokenizer, peft_config=lora)
    metrics = trainer.train().metrics
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    results = {"train_runtime": metrics["train_runtime"], "train_steps": trainer.state.global_step,
               "episodes": trainer.state.global_step * config.per_device_train_batch_size,
               "mean_reward": sum(rewards) / len(rewards), "final_reward": rewards[-1]}
    (Path(keys["output_dir"]) / "all_results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
