"""Serving side by side: `alignlab api` and `llamafactory-cli api` (LLaMA-Factory 0.9.5, its own venv) on the
same model, loaded by the same client, the tools alternated.

For each pair (A/B, then B/A, ...) each tool's server is started on a free port with the same random-init tiny
Qwen3 (or `--model`), the same template (qwen3_nothink) and greedy decoding; `alignlab eval loadtest` (the
OpenAI-compatible client, a separate process) sends `--requests` chat requests at each concurrency level with
`max_tokens` new tokens, whole answers (not streamed: LLaMA-Factory's streamer holds back text without spaces,
which a random model's answers are, so its time to first token would be its latency), and the server is stopped.
A random model never stops early, so both tools generate `max_tokens` tokens per answer (the servers' own usage
counts, shown in the table, prove it). Each tool
runs with its defaults (LLaMA-Factory's HF engine serves MAX_CONCURRENT=1 request at a time unless told
otherwise; alignlab batches dynamically up to infer_max_batch). Reported per tool and level: the median (min-max)
of requests/s and the median p50 latency; ratios alignlab / LLaMA-Factory (> 1: alignlab faster).

    python bench/serve_peers.py --pairs 3 --append
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tool: str, model: Path, work: Path, peer_python: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "API_PORT": str(port), "API_HOST": "127.0.0.1", "DISABLE_VERSION_CHECK": "1"}
    if tool == "alignlab":
        command = [str(ROOT / ".venv" / "bin" / "alignlab"), "api", f"model_name_or_path={model}",
                   "template=qwen3_nothink", "do_sample=false"]
    else:
        config = work / "lf_api.yaml"
        config.write_text(f"model_name_or_path: {model}\ntemplate: qwen3_nothink\ninfer_backend: huggingface\n"
                          "do_sample: false\ntrust_remote_code: true\n")
        command = [str(peer_python.parent / "llamafactory-cli"), "api", str(config)]
    return subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(port: int, server: subprocess.Popen) -> None:
    import httpx

    while server.poll() is None:  # both tools answer /v1/models once the model is loaded
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the server exited with {server.returncode} before it was ready")


def load(port: int, model: Path, levels: str, requests: int, max_tokens: int, report: Path) -> list[dict]:
    subprocess.run([str(ROOT / ".venv" / "bin" / "alignlab"), "eval", "loadtest", "--url",
                    f"http://127.0.0.1:{port}/v1", "--concurrency", levels, "--requests", str(requests),
                    "--max-tokens", str(max_tokens), "--no-stream", "--report", str(report)],
                   check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def summarise(runs: dict[str, list[list[dict]]]) -> list[dict]:
    """Per concurrency level: each tool's median (min, max) req/s, p50 latency and output tokens per answer;
    the ratio of the req/s medians, ours / peer."""
    rows = []
    for i, level in enumerate(r["concurrency"] for r in runs["alignlab"][0]):
        row = {"concurrency": level}
        for tool, done in runs.items():
            rps = [run[i]["requests_per_s"] for run in done]
            row[tool] = {"rps": statistics.median(rps), "min": min(rps), "max": max(rps),
                         "latency_ms": statistics.median(run[i]["latency_p50_ms"] for run in done),
                         "tokens": statistics.median(run[i]["output_tokens_per_s"] / run[i]["requests_per_s"]
                                                     for run in done),
                         "errors": sum(run[i]["errors"] for run in done)}
        row["ratio"] = row["alignlab"]["rps"] / row["llamafactory"]["rps"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| concurrency | alignlab req/s | LLaMA-Factory req/s | alignlab / LF | latency p50 ms (alignlab / LF) "
             "| tokens per answer (alignlab / LF) |", "|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["alignlab"], r["llamafactory"]
        lines.append(f"| {r['concurrency']} | {a['rps']:.2f} ({a['min']:.2f}–{a['max']:.2f}) | {b['rps']:.2f} "
                     f"({b['min']:.2f}–{b['max']:.2f}) | {r['ratio']:.2f}× | {a['latency_ms']:.0f} / {b['latency_ms']:.0f} | "
                     f"{a['tokens']:.1f} / {b['tokens']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", help="model folder (default: the random tiny model)")
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args(argv)
    import peer_venvs
    import peers

    peer_python = peer_venvs.build("llamafactory")
    runs: dict[str, list[list[dict]]] = {"alignlab": [], "llamafactory": []}
    with tempfile.TemporaryDirectory(prefix="alignlab-serve-peers-") as tmp:
        work = Path(tmp)
        model = Path(args.model) if args.model else peers.make_model(work / "model")
        for n in range(args.pairs):
            for tool in (["alignlab", "llamafactory"] if n % 2 == 0 else ["llamafactory", "alignlab"]):
                port = free_port()
                server = start(tool, model, work, peer_python, port)
                try:
                    wait_ready(port, server)
                    runs[tool].append(load(port, model, args.concurrency, args.requests, args.max_tokens,
                                           work / f"{tool}-{n}.json"))
                finally:
                    server.terminate()
                    server.wait(60)
                print(f"serve_peers: {tool} pair {n + 1}/{args.pairs}: "
                      + ", ".join(f"{r['requests_per_s']:.2f} req/s at {r['concurrency']}" for r in runs[tool][-1]),
                      file=sys.stderr, flush=True)
    rows = summarise(runs)
    text = table(rows)
    print(text)
    if args.append:
        command = "python bench/serve_peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n`{command}` ({time.strftime('%Y-%m-%d')}, cpu; {peers.versions({'llamafactory': peer_python})};"
                    f" random tiny model, greedy, max_tokens {args.max_tokens}, {args.requests} requests per level, "
                    f"whole answers)\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
