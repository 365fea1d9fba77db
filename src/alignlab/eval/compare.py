"""`alignlab compare CFG`: the same prompts to several models, side by side.

Each model answers with its own training template (read from its run). The report has per-model
metrics (the predict metrics against the dataset's reference answers, the reward model's mean
score when `reward_model` is set, an LLM judge's win rate against the first model when
`judge_api_base` is set, answer lengths) and every answer, as report.md and a self-contained
report.html; results.json holds the same data.
"""

from __future__ import annotations

import html
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError, load_config
from .metrics import compute_metrics

logger = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You compare two answers to the same user request. Reply with exactly one letter: A if answer A "
    "is better, B if answer B is better, or T for a tie.\n\n[Request]\n{prompt}\n\n[Answer A]\n{a}\n\n"
    "[Answer B]\n{b}"
)


@dataclass
class ModelSpec:
    name: str
    model: str
    adapters: list[str]


def _base_of(adapter: str) -> str:
    from ..infer.engine import run_settings

    base = (run_settings(adapter) or {}).get("model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter} is a LoRA adapter without a run_config.yaml naming its base: write "
                          f"`name=BASE+{adapter}`.")
    return base


def parse_models(spec: str | None, default_model: str | None) -> list[ModelSpec]:
    """`name=model[+adapter...]`, `name=+adapter` (on model_name_or_path) or `name=adapter_dir`."""
    if not spec:
        raise ConfigError("`alignlab compare` needs `compare_models`, e.g. "
                          "compare_models: sft=saves/demo/sft, dpo=saves/demo/dpo")
    models = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        if not path:
            name, path = Path(item).name, item
        model, *adapters = path.split("+")
        if not model:
            if not default_model:
                raise ConfigError(f"compare_models {item!r}: `+adapter` needs `model_name_or_path`.")
            model = default_model
        if not adapters and (Path(model) / "adapter_config.json").is_file():
            model, adapters = _base_of(model), [model]
        models.append(ModelSpec(name.strip(), model.strip(), [a.strip() for a in adapters]))
    if len({m.name for m in models}) < len(models):
        raise ConfigError(f"compare_models: model names must differ; got {[m.name for m in models]}.")
    return models


def _load(spec: ModelSpec, cfg_argv: list[str]):
    from ..infer.engine import load_inference_model

    args = [*cfg_argv, f"model_name_or_path={spec.model}",
            f"adapter_name_or_path={','.join(spec.adapters) if spec.adapters else 'null'}"]
    return load_inference_model(load_config(args))


def _answers(spec: ModelSpec, examples, cfg, cfg_argv) -> tuple[list[str], list[str]]:
    from ..infer.engine import HFEngine, SamplingParams

    loaded = _load(spec, cfg_argv)
    prompts = [loaded.template.encode_prompt(loaded.tokenizer, ex.prompt, ex.system, ex.tools) for ex in examples]
    engine = HFEngine(loaded.model, loaded.tokenizer, loaded.template, max_batch=cfg.model.infer_max_batch)
    try:
        results = engine.generate(prompts, SamplingParams.from_generating_args(cfg.generating))
    finally:
        engine.close()
    return [r["text"] for r in results], [r["finish_reason"] for r in results]


def reward_scores(reward_path: str, examples, answers: dict[str, list[str]], cfg_argv) -> dict[str, float]:
    """Mean reward-model score of each model's answers (conversation rendered with the RM's template)."""
    adapters = [reward_path] if (Path(reward_path) / "adapter_config.json").is_file() else []
    loaded = _load(ModelSpec("rm", _base_of(reward_path) if adapters else reward_path, adapters), cfg_argv)
    if loaded.reward_model is None:
        raise ConfigError(f"reward_model {reward_path} has no value_head.safetensors: point it at a run of stage rm.")
    means = {}
    tokenizer, template = loaded.tokenizer, loaded.template
    with torch.inference_mode():
        for name, texts in answers.items():
            scores = []
            for ex, text in zip(examples, texts):
                prompt, answer = template.encode_oneturn(tokenizer, [*ex.prompt, {"role": "assistant", "content": text}],
                                                         ex.system, ex.tools)
                ids = torch.tensor([prompt + answer])
                scores.append(loaded.reward_model.scores(ids, torch.ones_like(ids)).item())
            means[name] = statistics.fmean(scores)
    return means


def judge_win_rates(base_url: str, model: str, examples, answers: dict[str, list[str]]) -> dict[str, float]:
    """Win rate (ties count half) of each model against the first, by an OpenAI-compatible judge; the
    answer order alternates between prompts against position bias."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("JUDGE_API_KEY", "none"), max_retries=2)
    names = list(answers)
    reference = names[0]
    rates = {}
    for name in names[1:]:
        points = 0.0
        for i, ex in enumerate(examples):
            ours, theirs = answers[name][i], answers[reference][i]
            a, b = (ours, theirs) if i % 2 == 0 else (theirs, ours)
            prompt = JUDGE_PROMPT.format(prompt=ex.prompt[-1]["content"], a=a, b=b)
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                   temperature=0, max_tokens=4).choices[0].message.content or ""
            verdict = reply.strip().upper()[:1]
            if verdict == "T":
                points += 0.5
            elif verdict == ("A" if i % 2 == 0 else "B"):
                points += 1.0
        rates[name] = points / len(examples)
    return rates


def _lengths(tokenizer, texts: list[str], reasons: list[str]) -> dict:
    tokens = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    return {"mean_chars": statistics.fmean(map(len, texts)), "mean_tokens": statistics.fmean(tokens),
            "median_tokens": statistics.median(tokens), "truncated": sum(r == "length" for r in reasons) / len(texts)}


def run_compare(argv: list[str]) -> Path:
    """Answer, score and write the report; return the HTML report's path."""
    from ..data.convert import SkipReport
    from ..data.loader import load_examples
    from ..model import load_tokenizer

    cfg = load_config(argv)
    specs = parse_models(cfg.evaluation.compare_models, cfg.model.model_name_or_path)
    names = cfg.data.eval_dataset or cfg.data.dataset
    if not names:
        raise ConfigError("`alignlab compare` needs prompts: set `eval_dataset` (or `dataset`).")
    examples = [ex for ex in load_examples(cfg.data, names, seed=42, report=SkipReport(), kind="prompt")
                if len(ex.prompt) % 2 == 1]
    if not examples:
        raise ConfigError(f"{names}: no (user ...) prompts to answer.")
    references = [ex.response[0]["content"] if ex.response else "" for ex in examples]
    answers, reasons, metrics = {}, {}, {}
    start = time.time()
    for k, spec in enumerate(specs):
        answers[spec.name], reasons[spec.name] = _answers(spec, examples, cfg, argv)
        print(f"compare: {spec.name} answered {len(examples)} prompts ({k + 1}/{len(specs)} models, "
              f"{time.time() - start:.0f}s)", file=sys.stderr, flush=True)
    tokenizer = load_tokenizer(load_config([f"model_name_or_path={specs[0].model}"]).model)
    for spec in specs:
        metrics[spec.name] = compute_metrics(answers[spec.name], references, cfg.finetuning.eval_metrics) \
            if any(references) else {}
        metrics[spec.name].update(_lengths(tokenizer, answers[spec.name], reasons[spec.name]))
    if cfg.finetuning.reward_model:
        for name, score in reward_scores(cfg.finetuning.reward_model, examples, answers, argv).items():
            metrics[name]["reward"] = score
    if cfg.evaluation.judge_api_base:
        for name, rate in judge_win_rates(cfg.evaluation.judge_api_base, cfg.evaluation.judge_model, examples,
                                          answers).items():
            metrics[name][f"judge_win_rate_vs_{specs[0].name}"] = rate
    out = Path(cfg.evaluation.compare_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": ex.prompt[-1]["content"], "reference": ref, "answers": {n: answers[n][i] for n in answers}}
            for i, (ex, ref) in enumerate(zip(examples, references))]
    report = {"models": [spec.__dict__ for spec in specs], "metrics": metrics, "rows": rows}
    for name, text in (("results.json", json.dumps(report, ensure_ascii=False, indent=2)),
                       ("report.md", render_markdown(report)), ("report.html", render_html(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)
    return out / "report.html"


def _metric_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    names = list(report["metrics"])
    keys = [k for k in dict.fromkeys(k for m in report["metrics"].values() for k in m)
            if all(isinstance(report["metrics"][n].get(k, 0.0), (int, float)) for n in names)]
    table = [[k] + [f"{report['metrics'][n][k]:.3f}" if k in report["metrics"][n] else "" for n in names] for k in keys]
    return names, table


def render_markdown(report: dict) -> str:
    names, table = _metric_rows(report)
    lines = ["# Model comparison", "", "| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    for i, row in enumerate(report["rows"], start=1):
        lines += ["", f"## Prompt {i}", "", row["prompt"], ""]
        if row["reference"]:
            lines += [f"**reference**: {row['reference']}", ""]
        lines += [f"- **{n}**: {text}" for n, text in row["answers"].items()]
    return "\n".join(lines) + "\n"


def render_html(report: dict) -> str:
    """One self-contained page: the metrics table and every prompt with all answers side by side."""
    e = html.escape
    names, table = _metric_rows(report)
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    metric_rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table)
    has_reference = any(r["reference"] for r in report["rows"])
    answer_head = "<th>#</th><th>prompt</th>" + ("<th>reference</th>" if has_reference else "") + head
    body = []
    for i, row in enumerate(report["rows"], start=1):
        cells = [f"<td>{i}</td>", f"<td class='prompt'>{e(row['prompt'])}</td>"]
        if has_reference:
            cells.append(f"<td class='reference'>{e(row['reference'])}</td>")
        cells += [f"<td class='answer' data-model='{e(n)}'>{e(t)}</td>" for n, t in row["answers"].items()]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignlab comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; }}
table {{ border-collapse: collapse; margin-bottom: 28px; }}
th, td {{ border: 1px solid #d0d0d7; padding: 6px 10px; vertical-align: top; text-align: left; }}
th {{ background: #f0f1f5; }}
td.answer, td.prompt, td.reference {{ white-space: pre-wrap; max-width: 360px; }}
td.reference {{ color: #555; }}
</style></head><body>
<h1>Model comparison</h1>
<p>{len(report['rows'])} prompts, {len(names)} models: {e(', '.join(names))}</p>
<h2>Metrics</h2>
<table id="metrics"><tr><th>metric</th>{head}</tr>{metric_rows}</table>
<h2>Answers</h2>
<table id="answers"><tr>{answer_head}</tr>{''.join(body)}</table>
</body></html>
"""
