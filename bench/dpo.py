"""DPO throughput with and without precomputed reference log-probs: training pairs/s, end-to-end
seconds (precompute pass included) and peak memory, each case in its own process.

Usage:
  python bench/dpo.py                      # tiny model, LoRA and full, precompute on/off
  python bench/dpo.py --model 23m --steps 20 --append
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def run_case(shape: str, method: str, precompute: bool, steps: int, batch: int, epochs: int) -> dict:
    import torch
    from train import model_dir  # bench/train.py
    from transformers import AutoConfig, AutoModelForCausalLM

    from alignlab.config import load_config
    from alignlab.train import run_train

    with tempfile.TemporaryDirectory() as tmp:
        path = model_dir(shape, Path(tmp))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).save_pretrained(path)
        pairs = steps * batch // epochs
        args = [f"model_name_or_path={path}", "stage=dpo", "dataset=demo_pref", "template=qwen3_nothink",
                "cutoff_len=256", f"finetuning_type={method}", "lora_target=all", f"max_samples={pairs}",
                f"precompute_ref_logps={str(precompute).lower()}", f"output_dir={tmp}/run",
                f"per_device_train_batch_size={batch}", f"per_device_eval_batch_size={2 * batch}",
                f"num_train_epochs={epochs}", "learning_rate=1e-5", "report_to=none", "logging_steps=1000",
                "save_strategy=no", "disable_gradient_checkpointing=true", "dataloader_pin_memory=false",
                "do_train=true"]
        cfg = load_config(args, with_training=True)
        from alignlab.data import get_dataset, get_template
        from alignlab.model import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
        get_dataset(cfg.data, "dpo", tokenizer, get_template("qwen3_nothink", tokenizer))  # warm the data cache
        start = time.perf_counter()
        metrics = run_train(cfg).metrics
        total = time.perf_counter() - start
    return {"model": shape, "method": method, "precompute": precompute, "pairs": pairs * epochs,
            "train_pairs_per_s": metrics["train_samples_per_second"], "train_s": metrics["train_runtime"],
            "end_to_end_s": total, "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table(rows: list[dict]) -> str:
    lines = ["| model | method | precompute ref | pairs | training pairs/s | training s | end-to-end s | "
             "peak RSS MB |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {'on' if r['precompute'] else 'off'} | {r['pairs']} | "
                     f"{r['train_pairs_per_s']:.1f} | {r['train_s']:.1f} | {r['end_to_end_s']:.1f} | "
                     f"{r['peak_rss_MB']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # child process: one case, JSON on the last line
        method, precompute = args.case.split(",")
        print(json.dumps(run_case(args.model, method, precompute == "on", args.steps, args.batch, args.epochs)))
        return 0
    rows = []
    for method in args.methods.split(","):
        for precompute in ("off", "on"):
            child = subprocess.run([sys.executable, __file__, "--case", f"{method},{precompute}", "--model",
                                    args.model, "--steps", str(args.steps), "--batch", str(args.batch),
                                    "--epochs", str(args.epochs)], capture_output=True, text=True, check=True)
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.append:
        command = "python " + " ".join(shlex.quote(a) for a in ["bench/dpo.py", *sys.argv[1:]])
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(f"\n`{command}` ({time.strftime('%Y-%m-%d')}, cpu)\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
