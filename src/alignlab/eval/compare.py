"""`alignlab compare CFG`: the same prompts to several models, side by side.

Each model answers with its own training template (read from its run), with the generating keys
of the config: `num_beams` > 1 decodes with HF beam search as predict does; a sampled prompt i draws
from seed `seed + i`, so a rerun gives the same answers whatever the batching. The report has each
model's settings (model, adapters, template, decoding), per-model metrics (the predict metrics
against the dataset's reference answers, the reward model's mean score when `reward_model` is set,
an LLM judge's win rate against the first model when `judge_api_base` is set, answer lengths) and
every answer, marked right (✓) or wrong (✗) where an `eval_metrics` entry reports an accuracy
(`classification`, `alignlab.eval.size_accuracy:size_metrics`, or a user metric with an `*accuracy`
key): the mark is that accuracy of the answer alone. report.md and a self-contained report.html;
results.json holds the same data.
"""

from __future__ import annotations

import html
import json
import logging
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import ConfigError, load_config, split_list
from ..files import write_atomic
from .metrics import compute_metrics, parse_metrics

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
    from ..model.run_loader import run_settings

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
    for item in split_list(spec):
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


def _load(spec: ModelSpec, cfg):
    from ..model.run_loader import load_inference_model

    return load_inference_model(cfg.for_model(spec.model, spec.adapters))


def generation_settings(cfg) -> dict:
    """The generating keys that decide the answers, as the report shows them."""
    gen = cfg.generating
    sampled = gen.do_sample and gen.temperature > 0  # temperature 0 means greedy (OpenAI's convention)
    if gen.num_beams > 1:
        decoding = f"beam search, {gen.num_beams} beams" + (", sampled" if sampled else "")
    else:
        decoding = "sampling" if sampled else "greedy"
    settings = {"decoding": decoding, "max_new_tokens": gen.max_new_tokens, "num_beams": gen.num_beams,
                "repetition_penalty": gen.repetition_penalty}
    if sampled:
        settings.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                        seed=cfg.resolved.get("seed", 42))
    if gen.num_beams > 1:
        settings["length_penalty"] = gen.length_penalty
    return settings


def engine_answers(engine, prompts: list[list[int]], params: list) -> list[tuple[str, str]]:
    """(text, finish reason) of each prompt under its own SamplingParams, all queued at once."""
    results: list = [None] * len(prompts)
    finished = threading.Semaphore(0)
    for i, (ids, p) in enumerate(zip(prompts, params)):
        pieces: list[str] = []

        def on_event(event, i=i, pieces=pieces):
            pieces.append(event.delta)
            if event.finished:
                results[i] = ("".join(pieces), event.finish_reason, event.error)
                finished.release()

        engine.submit(ids, p, on_event)
    for _ in prompts:
        finished.acquire()
    failed = next((r[2] for r in results if r[2]), None)
    if failed:
        raise RuntimeError(f"Generation failed: {failed}")
    return [(text, reason) for text, reason, _ in results]


def _beam_answers(loaded, prompts: list[list[int]], cfg, seed: int) -> list[tuple[str, str]]:
    """HF beam search, as predict decodes with `num_beams` > 1; an answer as long as `max_new_tokens`
    (counted again from its text) is reported as cut off."""
    from .generate import generate_batched

    gen = cfg.generating
    sampled = gen.do_sample and gen.temperature > 0
    kwargs = dict(num_beams=gen.num_beams, max_new_tokens=gen.max_new_tokens, do_sample=sampled,
                  repetition_penalty=gen.repetition_penalty, length_penalty=gen.length_penalty)
    if sampled:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
    torch.manual_seed(seed)
    texts = [a[0] for a in generate_batched(loaded.model, loaded.tokenizer, loaded.template, prompts,
                                            batch_size=cfg.model.infer_max_batch, progress=False, **kwargs)]
    return [(t, "length" if len(loaded.tokenizer.encode(t, add_special_tokens=False)) >= gen.max_new_tokens
             else "stop") for t in texts]


def _answers(spec: ModelSpec, examples, cfg) -> tuple[list[str], list[str], str]:
    """Texts, finish reasons and the template name of one model's answers."""
    from ..infer.engine import HFEngine, SamplingParams

    loaded = _load(spec, cfg)
    prompts = [loaded.template.encode_prompt(loaded.tokenizer, ex.prompt, ex.system, ex.tools) for ex in examples]
    seed = cfg.resolved.get("seed", 42)
    if cfg.generating.num_beams > 1:
        results = _beam_answers(loaded, prompts, cfg, seed)
    else:
        engine = HFEngine(loaded.model, loaded.tokenizer, loaded.template, max_batch=cfg.model.infer_max_batch)
        try:
            params = SamplingParams.from_generating_args(cfg.generating)  # a sampled prompt i: seed + i
            results = engine_answers(engine, prompts, [replace(params, seed=seed + i) if params.do_sample else params
                                                       for i in range(len(prompts))])
        finally:
            engine.close()
    return [text for text, _ in results], [reason for _, reason in results], loaded.template.name


def answer_marks(predicts: list[str], labels: list[str], extra: str | None) -> tuple[str, list[bool | None]] | None:
    """(metric, right or wrong per answer) from the first `eval_metrics` entry that reports an accuracy,
    scoring each answer alone; None where no entry does. An answer without a label gets None."""
    for metric in parse_metrics(extra):
        labelled = [i for i, label in enumerate(labels) if label.strip()]
        if not labelled:
            return None
        key = next((k for k in metric(predicts[labelled[0]:labelled[0] + 1], labels[labelled[0]:labelled[0] + 1])
                    if k.endswith("accuracy")), None)
        if key:
            return key, [metric([p], [label])[key] > 0 if label.strip() else None
                         for p, label in zip(predicts, labels)]
    return None


def reward_scores(reward_path: str, examples, answers: dict[str, list[str]], cfg) -> dict[str, float]:
    """Mean reward-model score of each model's answers (conversation rendered with the RM's template)."""
    adapters = [reward_path] if (Path(reward_path) / "adapter_config.json").is_file() else []
    loaded = _load(ModelSpec("rm", _base_of(reward_path) if adapters else reward_path, adapters), cfg)
    if loaded.reward_model is None:
        raise ConfigError(f"reward_model {reward_path} has no value_head.safetensors: point it at a run of stage rm.")
    means = {}
    for name, texts in answers.items():
        scores = loaded.reward_model.score_answers(loaded.tokenizer, loaded.template, [ex.prompt for ex in examples],
                                                   [ex.system for ex in examples], texts,
                                                   [ex.tools for ex in examples])
        means[name] = statistics.fmean(scores.tolist())
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
    answers, reasons, metrics, templates = {}, {}, {}, {}
    start = time.time()
    for k, spec in enumerate(specs):
        answers[spec.name], reasons[spec.name], templates[spec.name] = _answers(spec, examples, cfg)
        print(f"compare: {spec.name} answered {len(examples)} prompts ({k + 1}/{len(specs)} models, "
              f"{time.time() - start:.0f}s)", file=sys.stderr, flush=True)
    tokenizer = load_tokenizer(load_config([f"model_name_or_path={specs[0].model}"]).model)
    for spec in specs:
        metrics[spec.name] = compute_metrics(answers[spec.name], references, cfg.finetuning.eval_metrics) \
            if any(references) else {}
        metrics[spec.name].update(_lengths(tokenizer, answers[spec.name], reasons[spec.name]))
    if cfg.finetuning.reward_model:
        for name, score in reward_scores(cfg.finetuning.reward_model, examples, answers, cfg).items():
            metrics[name]["reward"] = score
    if cfg.evaluation.judge_api_base:
        for name, rate in judge_win_rates(cfg.evaluation.judge_api_base, cfg.evaluation.judge_model, examples,
                                          answers).items():
            metrics[name][f"judge_win_rate_vs_{specs[0].name}"] = rate
    out = Path(cfg.evaluation.compare_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": ex.prompt[-1]["content"], "reference": ref, "answers": {n: answers[n][i] for n in answers}}
            for i, (ex, ref) in enumerate(zip(examples, references))]
    marked_by = None
    for name in answers:
        marks = answer_marks(answers[name], references, cfg.finetuning.eval_metrics)
        if marks:
            marked_by = marks[0]
            for row, mark in zip(rows, marks[1]):
                row.setdefault("marks", {})[name] = mark
    settings = generation_settings(cfg)
    report = {"models": [{**spec.__dict__, "template": templates[spec.name], "generation": settings} for spec in specs],
              "metrics": metrics, "marked_by": marked_by, "rows": rows}
    for name, text in (("results.json", json.dumps(report, ensure_ascii=False, indent=2)),
                       ("report.md", render_markdown(report)), ("report.html", render_html(report))):
        write_atomic(out / name, text)
    return out / "report.html"


def _metric_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    names = list(report["metrics"])
    keys = [k for k in dict.fromkeys(k for m in report["metrics"].values() for k in m)
            if all(isinstance(report["metrics"][n].get(k, 0.0), (int, float)) for n in names)]
    table = [[k] + [f"{report['metrics'][n][k]:.3f}" if k in report["metrics"][n] else "" for n in names] for k in keys]
    return names, table


def _settings_rows(report: dict) -> list[list[str]]:
    """[setting, value of each model] for model, adapters, template and every generating setting."""
    models = report["models"]
    keys = list(dict.fromkeys(k for m in models for k in m.get("generation", {})))
    table = [["model"] + [m["model"] for m in models],
             ["adapters"] + [", ".join(m["adapters"]) or "none" for m in models],
             ["template"] + [m.get("template") or "" for m in models]]
    return table + [[k] + [str(m["generation"].get(k, "")) for m in models] for k in keys]


MARKS = {True: "✓", False: "✗"}


def render_markdown(report: dict) -> str:
    """The settings and metrics tables, then each prompt with its reference and every (marked) answer."""
    names, table = _metric_rows(report)

    def md_table(first: str, rows: list[list[str]]) -> list[str]:
        cell = lambda text: text.replace("|", "\\|").replace("\n", " ")
        return ["| " + " | ".join([first, *names]) + " |", "|---" * (len(names) + 1) + "|",
                *("| " + " | ".join(map(cell, row)) + " |" for row in rows)]

    lines = ["# Model comparison", "", "## Settings", "", *md_table("setting", _settings_rows(report)), "",
             "## Metrics", "", *md_table("metric", table)]
    if report.get("marked_by"):
        lines += ["", f"✓ right, ✗ wrong: the answer alone scores `{report['marked_by']}` against the reference."]
    for i, row in enumerate(report["rows"], start=1):
        lines += ["", f"## Prompt {i}", "", row["prompt"], ""]
        if row["reference"]:
            lines += [f"**reference**: {row['reference']}", ""]
        marks = row.get("marks", {})
        lines += [f"- **{n}**{' ' + MARKS[marks[n]] if marks.get(n) is not None else ''}: {text}"
                  for n, text in row["answers"].items()]
    return "\n".join(lines) + "\n"


def render_html(report: dict) -> str:
    """One self-contained page: the settings and metrics tables and every prompt with all answers side by
    side, each marked right or wrong where a label decides it."""
    e = html.escape
    names, table = _metric_rows(report)
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    setting_rows = "".join("<tr>" + f"<th scope='row'>{e(row[0])}</th>" + "".join(f"<td>{e(c)}</td>" for c in row[1:])
                           + "</tr>" for row in _settings_rows(report))
    metric_rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table)
    has_reference = any(r["reference"] for r in report["rows"])
    marked = {n: [r["marks"][n] for r in report["rows"] if r.get("marks", {}).get(n) is not None] for n in names}
    model_head = "".join(f"<th>{e(n)}" + (f"<br><span class='tally'>{sum(marked[n])} of {len(marked[n])} ✓</span>"
                                          if marked[n] else "") + "</th>" for n in names)
    answer_head = "<th>#</th><th>prompt</th>" + ("<th>reference</th>" if has_reference else "") + model_head
    body = []
    for i, row in enumerate(report["rows"], start=1):
        cells = [f"<td>{i}</td>", f"<td class='prompt'>{e(row['prompt'])}</td>"]
        if has_reference:
            cells.append(f"<td class='reference'>{e(row['reference'])}</td>")
        for n, text in row["answers"].items():
            mark = row.get("marks", {}).get(n)
            if mark is None:
                cells.append(f"<td class='answer' data-model='{e(n)}'>{e(text)}</td>")
            else:
                verdict = "right" if mark else "wrong"
                cells.append(f"<td class='answer {verdict}' data-model='{e(n)}' data-mark='{verdict}'>"
                             f"<span class='mark' title='{verdict}'>{MARKS[mark]}</span> {e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = (f"<p class='note'>✓ right, ✗ wrong: the answer alone scores <code>{e(report['marked_by'])}</code> "
            "against the reference.</p>" if report.get("marked_by") else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignlab comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; }}
table {{ border-collapse: collapse; margin-bottom: 28px; }}
th, td {{ border: 1px solid #d0d0d7; padding: 6px 10px; vertical-align: top; text-align: left; }}
th {{ background: #f0f1f5; }}
#settings td {{ font-family: ui-monospace, monospace; font-size: 13px; word-break: break-all; max-width: 420px; }}
td.answer, td.prompt, td.reference {{ white-space: pre-wrap; max-width: 360px; }}
td.reference {{ color: #555; }}
td.right {{ background: #eaf6ec; }}
td.wrong {{ background: #fbeaea; }}
.mark {{ font-weight: bold; }}
td.right .mark {{ color: #1a7f37; }}
td.wrong .mark {{ color: #c62828; }}
.tally {{ font-weight: normal; font-size: 12px; color: #555; }}
</style></head><body>
<h1>Model comparison</h1>
<p>{len(report['rows'])} prompts, {len(names)} models: {e(', '.join(names))}</p>
<h2>Settings</h2>
<table id="settings"><tr><th>setting</th>{head}</tr>{setting_rows}</table>
<h2>Metrics</h2>
<table id="metrics"><tr><th>metric</th>{head}</tr>{metric_rows}</table>
<h2>Answers</h2>
{note}
<table id="answers"><tr>{answer_head}</tr>{''.join(body)}</table>
</body></html>
"""
