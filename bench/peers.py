"""The same training work with alignlab and with a peer (LLaMA-Factory 0.9.5; TRL 1.16 for GRPO), side by
side, alternated.

Each row is one workload (one YAML both tools read unchanged: the same random-init tiny Qwen3 model,
the demo data, LoRA or full, 1 epoch). The tools run it alternately (A/B/A/B, `--pairs` pairs), each
run a fresh process with its own output folder, and for each tool the row reports the median and the
spread (min-max) of: the whole-process wall time, CPU time (user + sys of the process and the children
it waited for: dataloader workers, tokeniser processes), the tool's own `train_runtime`, samples/s,
peak RSS, and the final `train_loss`. Equal final losses (relative difference <= 1e-4) show the work
was the same; a row whose losses disagree says so and its ratios are not counted. Ratios are
peer / alignlab: above 1 means alignlab is faster.

The GRPO row runs TRL's GRPOTrainer (bench/trl_grpo.py, in the TRL venv) on the same YAML: 8 prompts x 4
completions per step, 16 new tokens, 20 steps, the same reward (bench/grpo_reward.py), LoRA, fp32. Sampling
differs between the tools, so the losses cannot agree: the row compares the mean reward over the run
instead (agreeing within 0.05 counts as the same work) and reports episodes (completions) per second.

The peers live in their own virtual environments (scripts/peer_venvs.py builds them under the user
cache folder, never in the repo); nothing here runs in `make test`.

    python bench/peers.py --quick                 # one pair per row, 800 rows: a smoke run
    python bench/peers.py --pairs 3 --append      # the table in bench/RESULTS.md

The `startup` row is the whole process of a 1-step SFT LoRA run with warm data caches: imports, config, cached
data, model and adapter, one step and saving, i.e. the fixed cost each tool adds to every run. Serving is
bench/serve_peers.py.

Packing: `sft_packing` runs both tools with `packing` + `neat_packing` (the packed batches differ slightly
between the tools, so the row counts when the final losses agree within 1%); `sft_packed` is our recommended
setting against LLaMA-Factory's default: alignlab packs (`neat_packing`), LLaMA-Factory does not, on the same
rows and epochs. Its losses differ by design (fewer, fuller steps), so it is counted without a loss check and
says so.

`--growth` is the growth table: SFT LoRA at 1k, 4k and 16k rows (demo_sft repeated) on the tiny model and at
1k rows on 0.2M, 2M and 24M-parameter Qwen3 shapes (bench/train.py's SHAPES), both tools alternated. Per tool
it fits wall = fixed + per-row x rows over the row sizes (least squares): `fixed` is the cost a run pays
whatever its size, and each size's wall per 1k rows shows where the fixed cost stops mattering.

    python bench/peers.py --growth --pairs 1 --append
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

LOSS_RTOL = 1e-4
REWARD_ATOL = 0.05  # GRPO: mean rewards over the run this close are the same learning
PACKED_RTOL = 1e-2  # both tools packed: their packed batches differ slightly
METRICS = ("wall_s", "cpu_s", "train_runtime", "samples_per_s", "peak_rss_mb", "train_loss")
COMMON = {"do_train": True, "template": "qwen3_nothink", "cutoff_len": 256, "logging_steps": 10,
          "per_device_train_batch_size": 8, "num_train_epochs": 1, "lr_scheduler_type": "cosine",
          "report_to": "none", "overwrite_output_dir": True, "save_strategy": "no", "seed": 42,
          "preprocessing_num_workers": 2, "disable_gradient_checkpointing": True}
LORA = {"finetuning_type": "lora", "lora_target": "all", "lora_rank": 16}
WORKLOADS = {  # name -> (keys, rows of data in the full run)
    "sft_lora": ({"stage": "sft", "dataset": "demo_sft", "learning_rate": 1e-3, **LORA}, 4000),
    # start-up: the whole process of a 1-step SFT LoRA run after sft_lora warmed the data caches (imports,
    # config, cached data, model and adapter, one step, saving): the fixed cost each tool adds to every run
    "startup": ({"stage": "sft", "dataset": "demo_sft", "learning_rate": 1e-3, "max_steps": 1, "logging_steps": 1,
                 **LORA}, 4000),
    "sft_packing": ({"stage": "sft", "dataset": "demo_sft", "learning_rate": 1e-3, "packing": True,
                     "neat_packing": True, **LORA}, 4000),
    "sft_packed": ({"stage": "sft", "dataset": "demo_sft", "learning_rate": 1e-3, **LORA}, 4000),
    "sft_full": ({"stage": "sft", "dataset": "demo_sft", "learning_rate": 1e-3, "finetuning_type": "full"}, 4000),
    "dpo": ({"stage": "dpo", "dataset": "demo_pref", "learning_rate": 5e-4, "pref_beta": 0.1,
             "pref_loss": "sigmoid", **LORA}, 1200),
    "rm": ({"stage": "rm", "dataset": "demo_pref", "learning_rate": 1e-3, **LORA}, 1200),
    "kto": ({"stage": "kto", "dataset": "demo_kto", "learning_rate": 5e-4, "pref_beta": 0.1, **LORA}, 1200),
    "grpo": ({"stage": "grpo", "dataset": "demo_prompts", "learning_rate": 1e-3, "grpo_group_size": 4,
              "max_new_tokens": 16, "max_steps": 20, "grpo_beta": 0.04, "ppo_cliprange": 0.2, "ppo_epochs": 1,
              "ppo_buffer_size": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "logging_steps": 1,
              "reward_funcs": "grpo_reward:ascii_share", "lora_alpha": 32, **LORA}, 160),
}
PEER = {"grpo": "trl"}  # workload -> peer tool (default llamafactory)
OURS_ONLY = {"sft_packed": {"packing": True, "neat_packing": True}}  # keys only alignlab's run gets
# workload -> how its two final losses must agree to count: ("rtol", x) relative, ("atol", x) absolute (GRPO's
# mean rewards), None: counted without (different work by design, said in the table); default ("rtol", LOSS_RTOL)
GATES = {"grpo": ("atol", REWARD_ATOL), "sft_packing": ("rtol", PACKED_RTOL), "sft_packed": None}
GROWTH_ROWS = (1000, 4000, 16000)
GROWTH_SHAPES = {"0.2m": "0.2M", "tiny": "2M", "23m": "24M"}  # bench/train.py shape -> parameters


# Arithmetic (unit-tested in tests/unit/test_bench_peers.py).

def summary(values: list[float]) -> dict:
    """Median and spread (min, max) of one metric over a tool's runs."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratio(peer: float, ours: float) -> float:
    """peer / alignlab: above 1, alignlab took less (time) or did more per second when inverted by the caller."""
    return peer / ours


def losses_agree(peer: float, ours: float, gate: tuple[str, float] | None = ("rtol", LOSS_RTOL)) -> bool:
    """Whether two final losses (GRPO: mean rewards) show the same work under `gate` (see GATES)."""
    if gate is None:
        return True
    kind, tolerance = gate
    return abs(peer - ours) <= (tolerance if kind == "atol" else tolerance * max(abs(peer), abs(ours)))


def row_ratios(ours: dict, peer: dict, gate: tuple[str, float] | None = ("rtol", LOSS_RTOL)) -> dict | None:
    """The row's ratios from the two tools' summaries (times: peer/ours; throughput: ours/peer, so that
    above 1 always means alignlab is faster); None when the final losses disagree under `gate` (not the
    same work; a GRPO row's `train_loss` holds the mean reward and its gate is absolute)."""
    if not losses_agree(peer["train_loss"]["median"], ours["train_loss"]["median"], gate):
        return None
    times = {k: ratio(peer[k]["median"], ours[k]["median"]) for k in ("wall_s", "cpu_s", "train_runtime")}
    return {**times, "samples_per_s": ratio(ours["samples_per_s"]["median"], peer["samples_per_s"]["median"])}


# Running.

def measure(command: list[str], cwd: Path, env: dict) -> dict:
    """Wall time, CPU time and peak RSS of one process and the children it waited for."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n" + "\n".join(tail))
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def tool_commands(peer: str, peer_python: Path) -> dict[str, list[str]]:
    ours = [str(ROOT / ".venv" / "bin" / "alignlab"), "train"]
    if peer == "trl":
        return {"alignlab": ours, "trl": [str(peer_python), str(ROOT / "bench" / "trl_grpo.py")]}
    return {"alignlab": ours, "llamafactory": [str(peer_python.parent / "llamafactory-cli"), "train"]}


def results_of(out: Path, keys: dict) -> dict:
    """train_runtime, samples/s and final loss; for GRPO episodes/s and the mean logged reward."""
    results = json.loads((out / "all_results.json").read_text())
    if keys["stage"] != "grpo":  # data rows per second (a packed run's own count is of packed sequences)
        speed = (results["train_samples_per_second"] if "max_steps" in keys
                 else keys["max_samples"] * keys["num_train_epochs"] / results["train_runtime"])
        return {"train_runtime": results["train_runtime"], "samples_per_s": speed, "train_loss": results["train_loss"]}
    episodes = results["train_steps"] * keys["per_device_train_batch_size"] * keys["grpo_group_size"]
    if "mean_reward" in results:  # bench/trl_grpo.py
        reward = results["mean_reward"]
    else:
        log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
        reward = statistics.fmean(e["reward"] for e in log if "reward" in e)
    return {"train_runtime": results["train_runtime"], "samples_per_s": episodes / results["train_runtime"],
            "train_loss": reward}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys = intercept + slope * xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def make_model(folder: Path, shape: str = "tiny") -> Path:
    """The bundled tiny Qwen3 config (reshaped by bench/train.py's SHAPES) with random weights (seed 0), saved
    once: both tools load the same weights. `summary_dropout_prob: 0` turns off the dropout in the value head
    LLaMA-Factory's RM uses (TRL's ValueHead reads it from the config; ours has none), so RM losses can agree."""
    import torch
    from train import SHAPES
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tiny = ROOT / "examples" / "models" / "tiny-qwen3"
    config = AutoConfig.from_pretrained(tiny, **SHAPES[shape])
    config.summary_dropout_prob = 0.0
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder)
    return folder


def growth_data(folder: Path) -> Path:
    """A dataset folder with demo_sft and demo_sft repeated to GROWTH_ROWS[-1] rows (demo_sft_big)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = json.loads((ROOT / "data" / "demo_sft.json").read_text())
    big = (rows * (GROWTH_ROWS[-1] // len(rows) + 1))[:GROWTH_ROWS[-1]]
    (folder / "demo_sft.json").write_text(json.dumps(rows, ensure_ascii=False))
    (folder / "demo_sft_big.json").write_text(json.dumps(big, ensure_ascii=False))
    (folder / "dataset_info.json").write_text(json.dumps({"demo_sft": {"file_name": "demo_sft.json"},
                                                          "demo_sft_big": {"file_name": "demo_sft_big.json"}}))
    return folder


def run_once(tool: str, command: list[str], keys: dict, work: Path, n: int) -> dict:
    out = work / f"{tool}-{n}"
    config = work / f"{tool}-{n}.yaml"
    import yaml

    config.write_text(yaml.safe_dump({**keys, "output_dir": str(out)}, sort_keys=False))
    env = {**os.environ, "ALIGNLAB_CACHE": str(work / "alignlab-cache"), "HF_DATASETS_CACHE": str(work / "hf-cache"),
           "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true",
           "PYTHONPATH": str(ROOT / "bench")}  # grpo_reward for the GRPO row
    measured = measure([*command, str(config)], work, env)
    results = results_of(out, keys)
    shutil.rmtree(out, ignore_errors=True)
    return {**measured, **results}


def run_row(name: str, pairs: int, rows: int | None, commands: dict, model: Path, work: Path,
            dataset_dir: Path = ROOT / "data", label: str | None = None, **extra) -> dict:
    """One workload, the two tools alternated; `commands`: alignlab's and the peer's; `extra` keys for both."""
    keys, full_rows = WORKLOADS[name]
    keys = {**COMMON, **keys, "model_name_or_path": str(model), "dataset_dir": str(dataset_dir),
            "max_samples": rows or full_rows, **extra}
    runs: dict[str, list[dict]] = {tool: [] for tool in commands}
    keys_of = {tool: {**keys, **OURS_ONLY.get(name, {})} if tool == "alignlab" else keys for tool in commands}
    if name == "startup":  # one unmeasured run per tool first: every measured run finds its caches warm
        for tool in commands:
            run_once(tool, commands[tool], keys_of[tool], work, -1)
    for n in range(pairs):  # alternated, and the order flips every pair: A B, B A, ...
        order = list(commands) if n % 2 == 0 else list(commands)[::-1]
        for tool in order:
            runs[tool].append(run_once(tool, commands[tool], keys_of[tool], work, n))
            print(f"peers: {label or name} {tool} run {n + 1}/{pairs}: wall {runs[tool][-1]['wall_s']:.1f}s, "
                  f"train_runtime {runs[tool][-1]['train_runtime']:.1f}s, loss {runs[tool][-1]['train_loss']:.6f}",
                  file=sys.stderr, flush=True)
    summaries = {tool: {m: summary([r[m] for r in done]) for m in METRICS} for tool, done in runs.items()}
    peer = next(tool for tool in commands if tool != "alignlab")
    return {"workload": label or name, "rows": keys["max_samples"], "pairs": pairs, "tools": summaries, "peer": peer,
            "gate": GATES.get(name, ("rtol", LOSS_RTOL)),
            "ratios": row_ratios(summaries["alignlab"], summaries[peer], GATES.get(name, ("rtol", LOSS_RTOL)))}


def _cell(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def table(results: list[dict]) -> str:
    lines = ["| workload | rows | tool | wall s | CPU s | train_runtime s | samples/s (GRPO: episodes/s) | peak RSS MB "
             "| final loss (GRPO: mean reward) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for tool, s in r["tools"].items():
            lines.append(f"| {r['workload']} | {r['rows']} | {tool} | {_cell(s['wall_s'])} | {_cell(s['cpu_s'])} | "
                         f"{_cell(s['train_runtime'])} | {_cell(s['samples_per_s'], 1)} | "
                         f"{s['peak_rss_mb']['median']:.0f} | {s['train_loss']['median']:.6f} |")
    lines += ["", "| peer / alignlab (> 1: alignlab faster) | peer | wall | CPU | train_runtime | samples/s |",
              "|---|---|---|---|---|---|"]
    for r in results:
        q = r["ratios"]
        cells = (" | ".join(f"{q[k]:.2f}×" for k in ("wall_s", "cpu_s", "train_runtime", "samples_per_s"))
                 if q else "losses disagree: not counted | | |")
        note = " (different work by design: no loss check)" if q and r.get("gate", ()) is None else ""
        lines.append(f"| {r['workload']}{note} | {r.get('peer', 'llamafactory')} | {cells} |")
    return "\n".join(lines)


def growth_table(results: list[dict]) -> str:
    """Wall and CPU time per run and per 1k rows, and each tool's fitted fixed cost over the row sizes."""
    lines = ["| SFT LoRA | rows | tool | wall s | CPU s | wall s per 1k rows | train_runtime s | final loss |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for tool, s in r["tools"].items():
            lines.append(f"| {r['workload']} | {r['rows']} | {tool} | {_cell(s['wall_s'])} | {_cell(s['cpu_s'])} | "
                         f"{s['wall_s']['median'] / r['rows'] * 1000:.2f} | {_cell(s['train_runtime'])} | "
                         f"{s['train_loss']['median']:.6f} |")
    by_rows = [r for r in results if r["workload"].startswith("2M")]
    if len(by_rows) >= 2:
        lines += ["", "| tool | fixed cost s (wall = fixed + per-row x rows) | wall s per 1k rows | CPU fixed s | "
                      "CPU s per 1k rows |", "|---|---|---|---|---|"]
        for tool in by_rows[0]["tools"]:
            xs = [r["rows"] for r in by_rows]
            wall = fit_line(xs, [r["tools"][tool]["wall_s"]["median"] for r in by_rows])
            cpu = fit_line(xs, [r["tools"][tool]["cpu_s"]["median"] for r in by_rows])
            lines.append(f"| {tool} | {wall[0]:.2f} | {wall[1] * 1000:.2f} | {cpu[0]:.2f} | {cpu[1] * 1000:.2f} |")
    return "\n".join(lines)


def growth(pairs: int, commands: dict, work: Path) -> list[dict]:
    """SFT LoRA over GROWTH_ROWS on the 2M model, then 1k rows on each GROWTH_SHAPES model."""
    data = growth_data(work / "growth-data")
    models = {shape: make_model(work / f"model-{shape}", shape) for shape in GROWTH_SHAPES}
    results = [run_row("sft_lora", pairs, rows, commands, models["tiny"], work, data, f"2M, {rows} rows",
                       dataset="demo_sft_big") for rows in GROWTH_ROWS]
    results += [run_row("sft_lora", pairs, GROWTH_ROWS[0], commands, models[shape], work, data,
                        f"{params}, {GROWTH_ROWS[0]} rows") for shape, params in GROWTH_SHAPES.items() if shape != "tiny"]
    return results


def versions(peers: dict[str, Path]) -> str:
    def of(python, packages: tuple[str, ...]) -> str:
        code = f"import importlib.metadata as m; print(' '.join(p + ' ' + m.version(p) for p in {packages!r}))"
        return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()

    parts = [f"alignlab venv: {of(sys.executable, ('alignlab', 'torch', 'transformers', 'peft'))}"]
    parts += [f"{name} venv: {of(python, (name, 'torch', 'transformers', 'peft'))}" for name, python in peers.items()]
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one pair per row, 800 rows")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=None, help="rows per workload (default: 4,000 SFT, 1,200 pairs)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    parser.add_argument("--growth", action="store_true", help="the growth table (rows and parameters) instead")
    args = parser.parse_args(argv)
    import peer_venvs

    names = ["sft_lora"] if args.growth else args.workloads.split(",")
    peers = {peer: peer_venvs.build(peer) for peer in sorted({PEER.get(name, "llamafactory") for name in names})}
    pairs, rows = (1, args.rows or 800) if args.quick else (args.pairs, args.rows)
    results = []
    with tempfile.TemporaryDirectory(prefix="alignlab-peers-") as tmp:
        work = Path(tmp)
        if args.growth:
            text = growth_table(growth(pairs, tool_commands("llamafactory", peers["llamafactory"]), work))
        else:
            model = make_model(work / "model")
            for name in names:
                peer = PEER.get(name, "llamafactory")
                rows_of = min(rows, WORKLOADS[name][1]) if rows else None  # GRPO needs 160 prompts, not more
                results.append(run_row(name, pairs, rows_of, tool_commands(peer, peers[peer]), model, work))
            text = table(results)
    print(text)
    if args.append:
        command = "python bench/peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n`{command}` ({time.strftime('%Y-%m-%d')}, cpu; {versions(peers)})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
