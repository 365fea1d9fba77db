"""`make demo`: the whole CPU pipeline on the bundled tiny model, stage by stage through the CLI.

Each stage of examples/demo/ (sft, rm, dpo, ppo, grpo) is trained with `alignlab train` into
saves/demo/<stage>/ (a finished stage is reused unless DEMO_FRESH=1). The reward model reports its
held-out pair accuracy; each policy answers the held-out demo_prompts and the script prints the size
accuracy of sampled answers (temperature 1, several per prompt), the greedy size accuracy, and a few
prompts with their answers; then `alignlab compare examples/compare/demo.yaml` writes the side-by-side
report saves/demo/report.html (answers of every stage, size classification metrics, reward scores).

`DEMO_SEEDS=42,43,44 make demo` trains the whole pipeline once per seed (the first into saves/demo/,
the others into saves/demo-seed<N>/) and prints mean ± sd over the seeds. Every run prints its numbers
beside the published ones in examples/demo/published.json (the README's table).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["sft", "rm", "dpo", "ppo", "grpo"]  # grows as stages land: each has examples/demo/<stage>.yaml
REWARD_STAGES = {"rm"}  # judged by held-out pair accuracy, not by answering prompts
SAMPLES_PER_PROMPT = 4
SHOWN = 3
DEFAULT_SEED = 42  # the seed of examples/demo/*.yaml
PUBLISHED = ROOT / "examples" / "demo" / "published.json"


def run_root(seed: int) -> Path:
    return ROOT / "saves" / ("demo" if seed == DEFAULT_SEED else f"demo-seed{seed}")


def train(stage: str, fresh: bool, seed: int) -> Path:
    import yaml

    root = run_root(seed)
    out = root / stage
    if (out / "all_results.json").is_file() and not fresh:
        print(f"== {stage}: reusing {out.relative_to(ROOT)} (DEMO_FRESH=1 retrains)", flush=True)
        return out
    print(f"== {stage}: alignlab train examples/demo/{stage}.yaml (seed {seed})", flush=True)
    config = yaml.safe_load((ROOT / "examples" / "demo" / f"{stage}.yaml").read_text())
    moved = [f"{k}={root / v.removeprefix('saves/demo/')}" for k, v in config.items()
             if isinstance(v, str) and v.startswith("saves/demo/") and k != "output_dir"]
    command = [str(Path(sys.executable).parent / "alignlab"), "train", f"examples/demo/{stage}.yaml",
               f"output_dir={out}", f"seed={seed}", *moved] + (["overwrite_output_dir=true"] if fresh else [])
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    print(f"== {stage}: trained in {time.time() - start:.0f}s", flush=True)
    return out


def evaluate(stage: str, out: Path) -> dict:
    from alignlab.eval.generate import generate_batched, load_for_inference
    from alignlab.eval.size_accuracy import extract_size, size_accuracy, size_metrics

    adapter = str(out) if (out / "adapter_config.json").is_file() else None
    model, tokenizer, template = load_for_inference(str(out), adapter=adapter)
    rows = json.loads((ROOT / "data" / "demo_prompts.json").read_text(encoding="utf-8"))
    prompts = [template.encode_prompt(tokenizer, [{"role": "user", "content": r["instruction"]}]) for r in rows]
    labels = [r["label"] for r in rows]
    sampled = generate_batched(model, tokenizer, template, prompts, num_samples=SAMPLES_PER_PROMPT,
                               batch_size=60, desc=f"{stage}: sampling", do_sample=True, temperature=1.0,
                               top_p=1.0, top_k=0, max_new_tokens=96)
    greedy = generate_batched(model, tokenizer, template, prompts, batch_size=60, desc=f"{stage}: greedy",
                              do_sample=False, max_new_tokens=96)
    classes = size_metrics([a for group in sampled for a in group],
                           [label for label in labels for _ in range(SAMPLES_PER_PROMPT)])
    result = {"stage": stage, "prompts": len(rows), "samples_per_prompt": SAMPLES_PER_PROMPT,
              "sampled_size_accuracy": size_accuracy(sampled, labels),
              "sampled_size_classification": classes,
              "greedy_size_accuracy": size_accuracy(greedy, labels),
              "examples": [{"prompt": rows[i]["instruction"], "label": labels[i], "greedy": greedy[i][0],
                            "recommended": extract_size(greedy[i][0])} for i in range(SHOWN)]}
    (out / "demo_eval.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


def pipeline(seed: int, fresh: bool) -> tuple[list[dict], dict]:
    """Train and evaluate every stage with one seed; return the policy results and the RM results."""
    import torch

    results, reward = [], {}
    for stage in STAGES:
        out = train(stage, fresh, seed)
        torch.manual_seed(seed)  # the evaluation's sampling
        if stage in REWARD_STAGES:
            reward = json.loads((out / "all_results.json").read_text())
            print(f"== {stage}: held-out pair accuracy {reward['eval_accuracy']:.3f} "
                  f"({'ready' if reward['rm_ready'] else 'NOT ready'}: rm_min_accuracy 0.85)", flush=True)
        else:
            results.append(evaluate(stage, out))
            log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if line]
            rewarded = [e for e in log if e.get("reward") is not None]
            if rewarded:
                print(f"== {stage}: reward {rewarded[0]['reward']:.3f} -> {rewarded[-1]['reward']:.3f}, "
                      f"KL at the end {rewarded[-1]['kl']:.3f}", flush=True)
    return results, reward


def metrics_of(results: list[dict], reward: dict) -> dict[str, float]:
    """The published numbers of one run: per stage sampled/greedy accuracy and macro F1, RM accuracy."""
    out = {"rm_accuracy": reward.get("eval_accuracy", float("nan"))}
    for r in results:
        out[f"{r['stage']}_sampled"] = r["sampled_size_accuracy"]
        out[f"{r['stage']}_f1"] = r["sampled_size_classification"]["size_f1_macro"]
        out[f"{r['stage']}_greedy"] = r["greedy_size_accuracy"]
    return out


def print_against_published(runs: list[dict[str, float]]) -> dict:
    """This run's numbers (or their mean ± sd over seeds) beside the published mean ± sd."""
    published = json.loads(PUBLISHED.read_text())["metrics"] if PUBLISHED.is_file() else {}
    summary = {}
    print(f"\n{'number':<16} {'this run' if len(runs) == 1 else f'{len(runs)} seeds':>15} {'README':>15}")
    for key in runs[0]:
        values = [r[key] for r in runs]
        mean, sd = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        summary[key] = [round(mean, 3), round(sd, 3)]
        mine = f"{mean:.3f}" + (f" ± {sd:.3f}" if len(values) > 1 else "")
        theirs = f"{published[key][0]:.3f} ± {published[key][1]:.3f}" if key in published else "-"
        print(f"{key:<16} {mine:>15} {theirs:>15}")
    return summary


def main() -> int:
    fresh = os.environ.get("DEMO_FRESH", "0") == "1"
    seeds = [int(s) for s in os.environ.get("DEMO_SEEDS", str(DEFAULT_SEED)).split(",") if s.strip()]
    start = time.time()
    runs = []
    for seed in seeds:
        results, reward = pipeline(seed, fresh)
        runs.append(metrics_of(results, reward))
        if seed == seeds[0]:
            shown, shown_reward = results, reward
    results, reward = shown, shown_reward
    for r in results:
        print(f"\n== {r['stage']}: answers to {r['prompts']} held-out prompts")
        for ex in r["examples"]:
            print(f"  Q: {ex['prompt']}\n  A: {ex['greedy']}\n     (recommends {ex['recommended']}, "
                  f"correct {ex['label']})")
    print(f"\nsampled answers: T=1, {SAMPLES_PER_PROMPT} per prompt; sizes as classes (macro P/R/F1, "
          "an answer naming no size counts as wrong)")
    print(f"{'stage':<6} {'sampled acc':>11} {'precision':>10} {'recall':>7} {'F1':>6} {'greedy acc':>11}")
    for r in results:
        c = r["sampled_size_classification"]
        print(f"{r['stage']:<6} {r['sampled_size_accuracy']:>11.3f} {c['size_precision_macro']:>10.3f} "
              f"{c['size_recall_macro']:>7.3f} {c['size_f1_macro']:>6.3f} {r['greedy_size_accuracy']:>11.3f}")
    if reward:
        print(f"reward model held-out pair accuracy: {reward['eval_accuracy']:.3f}")
    summary = print_against_published(runs)
    (ROOT / "saves" / "demo").mkdir(parents=True, exist_ok=True)
    (ROOT / "saves" / "demo" / "summary.json").write_text(json.dumps(
        {"seeds": seeds, "metrics": summary, "runs": runs}, indent=2) + "\n")
    if DEFAULT_SEED in seeds:
        print("\n== compare: alignlab compare examples/compare/demo.yaml", flush=True)
        subprocess.run([str(Path(sys.executable).parent / "alignlab"), "compare", "examples/compare/demo.yaml",
                        f"compare_dir={ROOT / 'saves' / 'demo'}"], cwd=ROOT, check=True)
        print(f"side-by-side report: {ROOT / 'saves' / 'demo' / 'report.html'}")
    print(f"\ndemo finished in {time.time() - start:.0f}s; runs under saves/; numbers in saves/demo/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
