"""Online RL throughput: episodes (completions) per second and where a step's time goes
(generation, scoring, old/reference log-probs, learning), for ppo and grpo.

Usage:
  python bench/rl.py                                   # tiny random model, rule reward, CPU
  python bench/rl.py --model saves/demo/sft --reward-model saves/demo/rm --append
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
PHASES = ("generate", "score", "logps", "learn")


def run_case(stage: str, model: str | None, reward_model: str | None, steps: int, batch: int,
             max_new_tokens: int) -> dict:
    import torch

    from alignlab.config import load_config
    from alignlab.train import run_train

    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            from train import model_dir  # bench/train.py
            from transformers import AutoConfig, AutoModelForCausalLM

            path = model_dir("tiny", Path(tmp))
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).save_pretrained(path)
            model = str(path)
        reward = ([f"reward_model={reward_model}", "reward_model_type=lora"] if reward_model
                  else ["reward_funcs=exact_label,length_penalty=0.1"])
        args = [f"model_name_or_path={model}", f"stage={stage}", "dataset=demo_rl", "template=qwen3_nothink",
                "cutoff_len=256", "finetuning_type=lora", "lora_target=all", f"output_dir={tmp}/run",
                f"per_device_train_batch_size={batch}", f"max_steps={steps}", "learning_rate=1e-4",
                "report_to=none", "logging_steps=1", "save_strategy=no", "disable_gradient_checkpointing=true",
                f"max_new_tokens={max_new_tokens}", "temperature=1.0", "top_p=1.0", "top_k=0", "ppo_epochs=2",
                "do_train=true", *reward]
        start = time.perf_counter()
        run_train(load_config(args, with_training=True))
        total = time.perf_counter() - start
        log = [json.loads(line) for line in Path(tmp, "run", "trainer_log.jsonl").read_text().splitlines()]
    timed = log[1:]  # the first step includes warm-up
    phase = {p: sum(e[f"time/{p}"] for e in timed) for p in PHASES}
    step_time = sum(phase.values())
    episodes = batch * (4 if stage == "grpo" else 1) * len(timed)
    return {"stage": stage, "episodes_per_s": episodes / step_time, "step_s": step_time / len(timed),
            "tokens": sum(e["response_length"] for e in timed) / len(timed),
            **{f"{p}_share": phase[p] / step_time for p in PHASES}, "total_s": total}


def table(rows: list[dict]) -> str:
    lines = ["| stage | episodes/s | step s | mean completion tokens | generation | scoring | old+ref log-probs | "
             "learning |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['episodes_per_s']:.1f} | {r['step_s']:.2f} | {r['tokens']:.0f} | "
                     + " | ".join(f"{100 * r[f'{p}_share']:.0f}%" for p in PHASES) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="policy to start from (default: the tiny model, random weights)")
    parser.add_argument("--reward-model", help="a LoRA reward adapter (stage rm) instead of rule rewards")
    parser.add_argument("--stages", default="grpo,ppo")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    rows = [run_case(stage, args.model, args.reward_model, args.steps, args.batch, args.max_new_tokens)
            for stage in args.stages.split(",")]
    text = table(rows)
    print(text)
    if args.append:
        command = "python " + " ".join(shlex.quote(a) for a in ["bench/rl.py", *sys.argv[1:]])
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(f"\n`{command}` ({time.strftime('%Y-%m-%d')}, cpu)\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
