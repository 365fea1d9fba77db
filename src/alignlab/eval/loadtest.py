"""`alignlab eval loadtest`: HTTP load on an OpenAI-compatible chat endpoint, like `ab` for chat completions.

For each concurrency level, that many clients send chat completions (streamed, or whole with
`--no-stream`) back to back until `--requests` have finished. Reports requests/s, output tokens/s,
and the p50/p90/p99 of time to first token (streamed only) and of total latency; optionally as JSON
or Markdown. Output tokens come from the server's usage (asked for with
`stream_options.include_usage`); a server that sends none has them counted here: with
`--tokenizer`, by tokenising the answer, else by counting the streamed content chunks (one token
each on OpenAI-style servers). The key is `--api-key`, else $OPENAI_API_KEY, else $API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from ..data.registry import DataError
from ..files import write_atomic

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
            raise DataError(f"{path}, row {i}: expected a string or an object with instruction, prompt or messages")
    return prompts


def _counted(usage: dict | None, text: str, chunks: int | None, tokenizer) -> tuple[int | None, str]:
    """(output tokens, how they were counted): the server's usage, else the tokenizer, else chunks."""
    if usage and usage.get("completion_tokens") is not None:
        return usage["completion_tokens"], "usage"
    if tokenizer is not None:
        return len(tokenizer.encode(text, add_special_tokens=False)), "tokenizer"
    if chunks is not None:
        return chunks, "stream chunks"
    return None, "none"


def _answer_text(message: dict) -> str:
    return (message.get("reasoning_content") or "") + (message.get("content") or "")


async def _one(client, url: str, body: dict, headers: dict, tokenizer=None) -> dict:
    start = time.perf_counter()
    if not body["stream"]:
        response = await client.post(url, json=body, headers=headers)
        total = time.perf_counter() - start
        if response.status_code != 200:
            return {"error": f"HTTP {response.status_code}: {response.text[:200]}"}
        data = response.json()
        text = "".join(_answer_text(c.get("message") or {}) for c in data.get("choices", []))
        tokens, source = _counted(data.get("usage"), text, None, tokenizer)
        return {"ttft": None, "latency": total, "tokens": tokens, "source": source}
    first, usage, text, chunks = None, None, "", 0
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
                piece = _answer_text(choice.get("delta") or {})
                if piece:
                    first = time.perf_counter() - start if first is None else first
                    text, chunks = text + piece, chunks + 1
            usage = chunk.get("usage") or usage
    total = time.perf_counter() - start
    tokens, source = _counted(usage, text, chunks, tokenizer)
    return {"ttft": total if first is None else first, "latency": total, "tokens": tokens, "source": source}


async def run_level(base_url: str, concurrency: int, requests: int, prompts: list[str], *, model: str,
                    max_tokens: int, temperature: float, api_key: str | None, timeout: float, stream: bool = True,
                    tokenizer=None) -> dict:
    """`requests` chat completions from `concurrency` clients; the level's summary."""
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
                    "max_tokens": max_tokens, "temperature": temperature, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            try:
                results.append(await _one(client, url, body, headers, tokenizer))
            except httpx.HTTPError as e:
                results.append({"error": f"{type(e).__name__}: {e}"})

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    counted = [r["tokens"] for r in ok if r["tokens"] is not None]
    summary = {"concurrency": concurrency, "requests": len(results), "errors": len(errors), "seconds": elapsed,
               "requests_per_s": len(ok) / elapsed,
               "output_tokens_per_s": sum(counted) / elapsed if counted else float("nan"),
               "mean_output_tokens": statistics.fmean(counted) if counted else float("nan"),
               "tokens_from": ", ".join(sorted({r["source"] for r in ok})) or "none", "stream": stream}
    for key in ("ttft", "latency"):
        for q in (50, 90, 99):
            summary[f"{key}_p{q}_ms"] = 1000 * percentile([r[key] for r in ok if r[key] is not None], q)
    if errors:
        summary["first_error"] = errors[0]
    return summary


def _number(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN: nothing to measure


def format_table(rows: list[dict]) -> str:
    header = ("| concurrency | requests | errors | req/s | out tok/s | TTFT p50/p90/p99 ms | "
              "latency p50/p90/p99 ms |\n|---|---|---|---|---|---|---|")
    lines = [header]
    for r in rows:
        ttft = " / ".join(_number(r[f"ttft_p{q}_ms"]) for q in (50, 90, 99))
        latency = " / ".join(_number(r[f"latency_p{q}_ms"]) for q in (50, 90, 99))
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.2f} | "
                     f"{_number(r['output_tokens_per_s'], 1)} | {ttft} | {latency} |")
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
    parser.add_argument("--api-key", default=None, help="Bearer key (default: env OPENAI_API_KEY, else API_KEY)")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                        help="stream the answers (TTFT measured); --no-stream asks for whole answers")
    parser.add_argument("--tokenizer", help="tokenizer folder used to count output tokens when the server "
                        "sends no usage (default: count streamed chunks)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--warmup", type=int, default=2, help="requests sent before measuring")
    parser.add_argument("--report", help="write the results to this .json or .md file")
    args = parser.parse_args(argv)
    import os

    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("API_KEY")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    prompts = load_prompts(args.prompts)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    common = dict(model=args.model, max_tokens=args.max_tokens, temperature=args.temperature, api_key=api_key,
                  timeout=args.timeout, stream=args.stream, tokenizer=tokenizer)
    if args.warmup:
        asyncio.run(run_level(args.url, 1, args.warmup, prompts, **common))
    rows = []
    for level in levels:
        row = asyncio.run(run_level(args.url, level, args.requests, prompts, **common))
        rows.append(row)
        print(f"concurrency {level}: {row['requests_per_s']:.2f} req/s, {_number(row['output_tokens_per_s'], 1)} "
              f"tok/s (tokens from {row['tokens_from']}), latency p50 {_number(row['latency_p50_ms'])} ms, "
              f"errors {row['errors']}" + (f"; first error: {row['first_error']}" if row["errors"] else ""),
              file=sys.stderr, flush=True)
    table = format_table(rows)
    print(table)
    if args.report:
        path = Path(args.report)
        text = table + "\n" if path.suffix == ".md" else json.dumps(rows, indent=2) + "\n"
        write_atomic(path, text)
    return 1 if any(r["errors"] for r in rows) else 0
