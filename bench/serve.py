"""Serving benchmark: start `alignlab api` on a model, load it with `alignlab eval loadtest` from a
separate process, print requests/s, output tokens/s and latency percentiles per concurrency level.

  python bench/serve.py --model saves/demo/sft --concurrency 1,4,16,64 --requests 128 --append

Without --model the bundled tiny model is served with random weights (answers run to max_tokens).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "alignlab"


def random_tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tiny = ROOT / "examples" / "models" / "tiny-qwen3"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder)
    (folder / "run_config.yaml").write_text("template: qwen3_nothink\n")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model or run folder (default: random tiny model)")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32, help="infer_max_batch of the server")
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else random_tiny_model(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "API_PORT": str(port)}
        server = subprocess.Popen([str(BIN), "api", f"model_name_or_path={model}", "do_sample=false",
                                   f"infer_max_batch={args.max_batch}"], cwd=ROOT, env=env)
        try:
            import httpx

            for _ in range(600):
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            report = Path(tmp) / "load.json"
            subprocess.run([str(BIN), "eval", "loadtest", "--url", f"http://127.0.0.1:{port}/v1", "--concurrency",
                            args.concurrency, "--requests", str(args.requests), "--max-tokens", str(args.max_tokens),
                            "--report", str(report)], check=True)
            rows = json.loads(report.read_text())
            health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        finally:
            server.terminate()
            server.wait(30)
    from alignlab.eval.loadtest import format_table

    base = rows[0]["requests_per_s"]
    speedups = ", ".join(f"x{r['requests_per_s'] / base:.1f} at {r['concurrency']}" for r in rows[1:])
    summary = (f"throughput vs concurrency {rows[0]['concurrency']}: {speedups}; "
               f"after the run: {health['active']} active, {health['queued']} queued")
    print(summary)
    if args.append:
        import torch

        command = "python bench/serve.py " + " ".join(sys.argv[1:])
        device = "cuda" if torch.cuda.is_available() else "cpu"
        block = (f"\n`{command}` ({datetime.date.today()}, {device})\n\nmodel: {model if args.model else 'random tiny'}, "
                 f"greedy, max_tokens {args.max_tokens}, infer_max_batch {args.max_batch}\n\n"
                 f"{format_table(rows)}\n\n{summary}\n")
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
