"""`alignlab eval loadtest`: HTTP load on an OpenAI-compatible chat endpoint, like `ab` for chat completions.

For each concurrency level, that many clients send streamed chat completions back to back until
`--requests` have finished. Reports requests/s, output tokens/s (from the usage chunk), and the
p50/p90/p99 of time to first token and of total latency; optionally as JSON or Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

DEFAULT_PROMPTS = [
    "孩子身高 95 cm，买童装选多大码？",
    "My kid is 120 cm tall. Which clothing size should I buy?",
    "身高 132 cm 的孩子穿什么尺码？",
    "Which size fits a child of 104 cm?",
    "宝宝 78 cm，衣服买几码合适？",
    "Recommend a size for a 150 cm tall child.",
    "女儿身高 110 cm，裙子选哪个码？",
    "Son is 88 cm, what size of trousers?",
]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def load_prompts(path: str | None) -> list[str]:
    """Prompts from a JSON list / JSONL file (strings, or rows with instruction, prompt or messages)."""
    if not path:
        return DEFAULT_PROMPTS
    text = Path(path).read_text(encoding="utf-8")
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    prompts = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            prompts.append(row)
        elif isinstance(row, dict) and (row.get("instruction") or row.get("prompt")):
            prompts.append(row.get("instruction") or row.get("prompt"))
        elif isinstance(row, dict) and row.get("messages"):
            prompts.append(row["messages"][0]["content"])
        else:
            raise ValueError(f"{path}, row {i}: expected a string or an object with instruction, prompt or messages")
    return prompts


async def _one(client, url: str, body: dict, headers: dict) -> dict:
    start = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")[:200]
            return {"error": f"HTTP {response.status_code}: {detail}"}
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return {"error": chunk["error"].get("message", "error")}
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                if first is None and (delta.get("content") or delta.get("reasoning_content")):
                    first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    total = time.perf_counter() - start
    return {"ttft": total if first is None else first, "latency": total, "tokens": tokens}


async def run_level(base_url: str, concurrency: int, requests: int, prompts: list[str], *, model: str,
                    max_tokens: int, temperature: float, api_key: str | None, timeout: float) -> dict:
    """`requests` streamed chat completions from `concurrency` clients; the level's summary."""
    import httpx

    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    results: list[dict] = []
    issued = 0

    async def client_loop(client):
        nonlocal issued
        while issued < requests:
            k = issued
            issued += 1
            body = {"model": model, "messages": [{"role": "user", "content": prompts[k % len(prompts)]}],
                    "max_tokens": max_tokens, "temperature": temperature, "stream": True,
                    "stream_options": {"include_usage": True}}
            try:
                results.append(await _one(client, url, body, headers))
            except httpx.HTTPError as e:
                results.append({"error": f"{type(e).__name__}: {e}"})

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    summary = {"concurrency": concurrency, "requests": len(results), "errors": len(errors), "seconds": elapsed,
               "requests_per_s": len(ok) / elapsed, "output_tokens_per_s": sum(r["tokens"] for r in ok) / elapsed,
               "mean_output_tokens": statistics.fmean(r["tokens"] for r in ok) if ok else 0.0}
    for key in ("ttft", "latency"):
        for q in (50, 90, 99):
            summary[f"{key}_p{q}_ms"] = 1000 * percentile([r[key] for r in ok], q)
    if errors:
        summary["first_error"] = errors[0]
    return summary


def format_table(rows: list[dict]) -> str:
    header = ("| concurrency | requests | errors | req/s | out tok/s | TTFT p50/p90/p99 ms | "
              "latency p50/p90/p99 ms |\n|---|---|---|---|---|---|---|")
    lines = [header]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.2f} | "
                     f"{r['output_tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} / {r['ttft_p90_ms']:.0f} / "
                     f"{r['ttft_p99_ms']:.0f} | {r['latency_p50_ms']:.0f} / {r['latency_p90_ms']:.0f} / "
                     f"{r['latency_p99_ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="alignlab eval loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1", help="base URL of the API (ends in /v1)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--prompts", help="JSON/JSONL file of prompts (default: built-in demo prompts)")
    parser.add_argument("--model", default="", help="model name sent in the requests")
    parser.add_argument("--api-key", default=None, help="Bearer key (default: env API_KEY)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--warmup", type=int, default=2, help="requests sent before measuring")
    parser.add_argument("--report", help="write the results to this .json or .md file")
    args = parser.parse_args(argv)
    import os

    api_key = args.api_key or os.environ.get("API_KEY")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    prompts = load_prompts(args.prompts)
    common = dict(model=args.model, max_tokens=args.max_tokens, temperature=args.temperature, api_key=api_key,
                  timeout=args.timeout)
    if args.warmup:
        asyncio.run(run_level(args.url, 1, args.warmup, prompts, **common))
    rows = []
    for level in levels:
        row = asyncio.run(run_level(args.url, level, args.requests, prompts, **common))
        rows.append(row)
        print(f"concurrency {level}: {row['requests_per_s']:.2f} req/s, {row['output_tokens_per_s']:.1f} tok/s, "
              f"latency p50 {row['latency_p50_ms']:.0f} ms, errors {row['errors']}", file=sys.stderr, flush=True)
    table = format_table(rows)
    print(table)
    if args.report:
        path = Path(args.report)
        text = table + "\n" if path.suffix == ".md" else json.dumps(rows, indent=2) + "\n"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return 1 if any(r["errors"] for r in rows) else 0
