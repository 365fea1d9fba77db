"""Training throughput: non-padding tokens/s, step time, MFU against the matmul peak measured in the
same run, and peak memory, for full and LoRA training with and without packing.

FLOPs per token = 6 x (parameters used in matmuls, the LM head included) + 12 x layers x hidden x
sequence length (attention scores and values). The same 6N convention is used for LoRA (model FLOPs
utilisation, not hardware FLOPs).

Usage:
  python bench/train.py --model tiny --steps 30
  python bench/train.py --model 23m --methods full --packing on --steps 20 --append
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "models" / "tiny-qwen3"
SHAPES = {  # Qwen3-shaped configs on the bundled tokenizer
    "0.2m": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "head_dim": 32},
    "tiny": {},
    "23m": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8,
            "num_key_value_heads": 4, "head_dim": 64},
    "0.6b": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True,
             "max_position_embeddings": 40960},
}


def matmul_peak(device: str, dtype: torch.dtype, size: int, seconds: float = 2.0) -> float:
    """Best FLOP/s of a square matmul over ~`seconds` (the machine's training ceiling)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best, end = 0.0, time.time() + seconds
    while time.time() < end:
        sync(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t))
    return best


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def model_dir(shape: str, tmp: Path) -> Path:
    out = tmp / shape
    shutil.copytree(TINY, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    config.update(SHAPES[shape])
    (out / "config.json").write_text(json.dumps(config))
    return out


def matmul_params(model) -> int:
    """Parameters that take part in matmuls: every Linear plus the LM head (tied or not)."""
    n = sum(m.weight.numel() for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and "lora_" not in name and "lm_head" not in name)
    head = model.get_output_embeddings()
    return n + head.weight.numel()


def run_case(shape: str, method: str, packing: bool, steps: int, batch: int, cutoff: int, peak: float,
             device: str, tmp: Path, extra: list[str], profile: bool = False) -> dict:
    from alignlab.config import load_config
    from alignlab.data import SupervisedCollator, get_dataset, get_template
    from alignlab.model import load_tokenizer
    from alignlab.train.sft import build_model
    from alignlab.train.trainer import AlignTrainer

    path = model_dir(shape, tmp / f"{method}-{packing}")
    args = [f"model_name_or_path={path}", "stage=sft", "dataset=demo_sft", "template=qwen3_nothink",
            f"cutoff_len={cutoff}", f"packing={str(packing).lower()}", f"neat_packing={str(packing).lower()}",
            "finetuning_type=full" if method == "full" else "finetuning_type=lora", "lora_target=all",
            "train_from_scratch=" + ("true" if method == "full" else "false"), f"output_dir={tmp / method / 'run'}",
            f"per_device_train_batch_size={batch}", f"max_steps={steps}", "learning_rate=1e-4", "report_to=none",
            "logging_steps=1000", "save_strategy=no", "disable_gradient_checkpointing=true",
            "dataloader_pin_memory=false", "max_samples=4000", "overwrite_output_dir=true", *extra]
    if device == "cuda":
        args.append("bf16=true")
    if method == "lora":  # LoRA needs saved base weights: save a random-init model first
        from transformers import AutoConfig, AutoModelForCausalLM

        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).save_pretrained(path)
    cfg = load_config(args, with_training=True)
    tokenizer = load_tokenizer(cfg.model)
    template = get_template("qwen3_nothink", tokenizer)
    data = get_dataset(cfg.data, "sft", tokenizer, template)
    model = build_model(cfg, tokenizer)
    counted: list[int] = []
    collate = SupervisedCollator(tokenizer.pad_token_id, neat_packing=packing)

    def counting_collator(features):
        batch_ = collate(features)
        counted.append(sum(len(f["input_ids"]) for f in features))
        return batch_

    times: list[float] = []

    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync(device)
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync(device)
            times.append(time.perf_counter() - self.t)

    cfg.training.remove_unused_columns = False
    trainer = AlignTrainer(model=model, args=cfg.training, data_collator=counting_collator, train_dataset=data.train,
                           callbacks=[Timer()], finetuning_args=cfg.finetuning)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            trainer.train()
        sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=15))
    else:
        trainer.train()
    warm = min(3, steps // 3)
    step_time = sum(times[warm:]) / len(times[warm:])
    # the dataloader prefetches; tokens of the timed steps are the batches those steps consumed
    tokens = sum(counted[warm:steps]) / len(counted[warm:steps])
    n = matmul_params(model.get_base_model() if hasattr(model, "get_base_model") else model)
    cfg_m = model.config
    seq = cutoff if packing else sum(len(r) for r in data.train["input_ids"]) / len(data.train)
    flops_per_token = 6 * n + 12 * cfg_m.num_hidden_layers * cfg_m.hidden_size * seq
    tps = tokens / step_time
    return {
        "model": shape, "params": sum(p.numel() for p in model.parameters()), "method": method,
        "packing": packing, "batch": f"{batch}x{cutoff}", "tokens/s": tps, "step_s": step_time,
        "MFU": tps * flops_per_token / peak,
        "peak_mem_MB": (torch.cuda.max_memory_allocated() / 2**20) if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def table(rows: list[dict], peak: float, device: str) -> str:
    head = "| model | params | method | packing | batch | tokens/s | step s | MFU | peak mem MB |"
    lines = [f"matmul peak ({device}): {peak / 1e9:.1f} GFLOP/s", "", head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['method']} | {'on' if r['packing'] else 'off'} | "
                     f"{r['batch']} | {r['tokens/s']:.0f} | {r['step_s']:.3f} | {100 * r['MFU']:.1f}% | "
                     f"{r['peak_mem_MB']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--packing", choices=["on", "off", "both"], default="both")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="print where the time goes (torch profiler)")
    parser.add_argument("extra", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak = matmul_peak(device, dtype, 4096 if device == "cuda" else 2048)
    packings = {"on": [True], "off": [False], "both": [False, True]}[args.packing]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for packing in packings:
                rows.append(run_case(args.model, method, packing, args.steps, args.batch, args.cutoff, peak,
                                     device, Path(tmp), args.extra, args.profile))
                print(table(rows[-1:], peak, device).splitlines()[-1], flush=True)
    text = table(rows, peak, device)
    print(text)
    if args.append:
        command = "python " + " ".join(shlex.quote(a) for a in ["bench/train.py", *sys.argv[1:]])
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(f"\n`{command}` ({time.strftime('%Y-%m-%d')}, {device})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
