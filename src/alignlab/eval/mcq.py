"""`alignlab eval CFG`: multiple-choice benchmarks in the MMLU / C-Eval / CMMLU file layout.

A task folder holds split folders (`dev/`, `val/`, `test/`) of per-subject CSV files with columns
`question,A,B,C,D,answer` (a header row is optional; C-Eval's leading `id` column and CMMLU's
unnamed index column are skipped), and optionally `mapping.json` ({subject: {name, category}}).
`task: mmlu_test` reads folder `mmlu`, split `test`. Each question is preceded by `n_shot` worked
examples from `dev` as earlier chat turns (as LLaMA-Factory's evaluator does), rendered with the
model's template; the answer is the choice letter whose token has the highest next-token logit at
the last prompt position (the token id of the bare letter, `tokenizer.encode("A")[-1]`: the id a
worked example's answer turn holds there, never the " A" of running text). Accuracy averages over
questions, per subject, per category and overall.

`compare_models: base=MODEL, tuned=MODEL+ADAPTER` (the syntax of `alignlab compare`) scores several
models in one run, prints their accuracies side by side and writes {"models": {name: results}}.

Below 25% is not a scoring fault: a model that has not learnt the question format prefers one
letter whatever the question, and then scores the share of questions whose answer is that letter
(the demo task's 120 answers are A 35, B 23, C 27, D 35: always-B scores 19.2%). results.json
keeps the letter counts of the answers and of the predictions so the bias can be seen.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..data.collate import pad_rows
from ..errors import UserError
from ..files import write_atomic

CHOICES = ("A", "B", "C", "D")
WORDING = {
    "en": {"system": "The following are multiple choice questions (with answers) about {subject}.\n\n",
           "answer": "\nAnswer:"},
    "zh": {"system": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n", "answer": "\n答案："},
}


class TaskError(ValueError, UserError):
    """The benchmark folder or one of its files is not in the expected layout."""


def _read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        table = [row for row in csv.reader(f) if row]
    if not table:
        return []
    header = [h.strip().lower() for h in table[0]]
    if "question" in header and "answer" in header:
        index = {k: header.index(k.lower()) for k in ("question", *CHOICES, "answer")}
        body = table[1:]
    else:  # headerless (MMLU): the last six columns
        index = {k: len(table[0]) - 6 + i for i, k in enumerate(("question", *CHOICES, "answer"))}
        body = table
    rows = []
    for n, row in enumerate(body, start=2 if body is not table else 1):
        try:
            item = {k: row[i].strip() for k, i in index.items()}
        except IndexError:
            raise TaskError(f"{path}, row {n}: expected columns question,A,B,C,D,answer; got {len(row)} "
                            "columns.") from None
        if item["answer"] not in CHOICES:
            raise TaskError(f"{path}, row {n}: answer {item['answer']!r} is not one of A, B, C, D.")
        rows.append(item)
    return rows


def load_task(task_dir: str, task: str) -> tuple[dict[str, dict[str, list[dict]]], dict, str]:
    """({subject: {split: rows}}, mapping, split) for `task` = `<folder>_<split>`."""
    name, _, split = task.rpartition("_")
    if not name or split not in ("dev", "val", "test", "validation"):
        raise TaskError(f"task {task!r}: write `<folder>_<split>` with split test, val or dev (e.g. mmlu_test).")
    folder = Path(task_dir) / name
    if not (folder / split).is_dir():
        raise TaskError(f"task {task!r}: {folder / split} does not exist. Put per-subject CSV files in "
                        f"{folder}/{{dev,{split}}}/ or set `task_dir`.")
    subjects: dict[str, dict[str, list[dict]]] = {}
    for which in dict.fromkeys(("dev", split)):
        for path in sorted((folder / which).glob("*.csv")) if (folder / which).is_dir() else []:
            subject = path.stem.removesuffix(f"_{which}")
            subjects.setdefault(subject, {})[which] = _read_rows(path)
    subjects = {s: v for s, v in subjects.items() if v.get(split)}
    if not subjects:
        raise TaskError(f"task {task!r}: no CSV files with rows in {folder / split}.")
    mapping_file = folder / "mapping.json"
    mapping = json.loads(mapping_file.read_text(encoding="utf-8")) if mapping_file.is_file() else {}
    return subjects, mapping, split


def question_text(row: dict, lang: str) -> str:
    return row["question"] + "".join(f"\n{c}. {row[c]}" for c in CHOICES) + WORDING[lang]["answer"]


def build_messages(row: dict, shots: list[dict], subject: str, lang: str) -> list[dict]:
    """Worked examples as earlier turns, the subject instruction in front of the first question."""
    messages = []
    for shot in shots:
        messages += [{"role": "user", "content": question_text(shot, lang)},
                     {"role": "assistant", "content": shot["answer"]}]
    messages.append({"role": "user", "content": question_text(row, lang)})
    messages[0]["content"] = WORDING[lang]["system"].format(subject=subject) + messages[0]["content"]
    return messages


def logit_scorer(model, tokenizer, batch_size: int) -> Callable[[list[list[int]]], torch.Tensor]:
    """prompts -> (N, 4) next-token logits of the letters A-D after each prompt."""
    letters = [tokenizer.encode(c, add_special_tokens=False)[-1] for c in CHOICES]
    device = next(model.parameters()).device

    @torch.inference_mode()
    def score(prompts: list[list[int]]) -> torch.Tensor:
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            ids, mask = pad_rows(chunk, tokenizer.pad_token_id, side="right", device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            last = logits[torch.arange(len(chunk), device=device), mask.sum(-1) - 1]
            out.append(last[:, letters].float().cpu())
        return torch.cat(out)

    return score


def evaluate_task(subjects: dict, mapping: dict, split: str, tokenizer, template, scorer, *, n_shot: int,
                  lang: str) -> dict:
    """Accuracy per subject, per category and on average (over questions), with every answer."""
    per_subject, per_category, answers = {}, {}, {}
    predicted_letters, answer_letters = dict.fromkeys(CHOICES, 0), dict.fromkeys(CHOICES, 0)
    total_correct = total = 0
    start = time.time()
    for k, (subject, splits) in enumerate(subjects.items()):
        info = mapping.get(subject, {})
        shots = splits.get("dev", [])[:n_shot]
        rows = splits[split]
        prompts = [template.encode_prompt(tokenizer, build_messages(r, shots, info.get("name", subject), lang))
                   for r in rows]
        predicted = [CHOICES[i] for i in scorer(prompts).argmax(-1).tolist()]
        correct = sum(p == r["answer"] for p, r in zip(predicted, rows))
        per_subject[subject] = 100 * correct / len(rows)
        category = info.get("category")
        if category:
            c = per_category.setdefault(category, [0, 0])
            c[0], c[1] = c[0] + correct, c[1] + len(rows)
        answers[subject] = predicted
        for p, r in zip(predicted, rows):
            predicted_letters[p] += 1
            answer_letters[r["answer"]] += 1
        total_correct, total = total_correct + correct, total + len(rows)
        elapsed = time.time() - start
        print(f"\r{subject}: {k + 1}/{len(subjects)} subjects, {elapsed:.0f}s elapsed, "
              f"ETA {elapsed / (k + 1) * (len(subjects) - k - 1):.0f}s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"average": 100 * total_correct / total, "questions": total, "subjects": per_subject,
            "categories": {c: 100 * v[0] / v[1] for c, v in per_category.items()}, "answers": answers,
            "answer_letters": answer_letters, "predicted_letters": predicted_letters}


def _score_model(cfg, subjects: dict, mapping: dict, split: str) -> dict:
    from ..model.run_loader import load_inference_model

    e = cfg.evaluation
    loaded = load_inference_model(cfg)
    return evaluate_task(subjects, mapping, split, loaded.tokenizer, loaded.template,
                         logit_scorer(loaded.model, loaded.tokenizer, e.batch_size), n_shot=e.n_shot, lang=e.lang)


def run_eval(cfg) -> dict:
    """Load the model (or each of `compare_models`) with its training template, score the task,
    write results.json (with `compare_models`: {"models": {name: results}})."""
    e = cfg.evaluation
    if not e.task:
        raise TaskError("`alignlab eval` needs `task` (e.g. task: size_advisor_test with task_dir: data/eval).")
    subjects, mapping, split = load_task(e.task_dir, e.task)
    results = {"task": e.task, "n_shot": e.n_shot, "lang": e.lang}
    if e.compare_models:
        from .compare import parse_models

        results["models"] = {}
        for spec in parse_models(e.compare_models, cfg.model.model_name_or_path):
            model_args = replace(cfg.model, model_name_or_path=spec.model,
                                 adapter_name_or_path=",".join(spec.adapters) or None)
            scored = _score_model(replace(cfg, model=model_args), subjects, mapping, split)
            results["models"][spec.name] = {"model": spec.model, "adapters": spec.adapters, **scored}
    else:
        results.update(_score_model(cfg, subjects, mapping, split))
    out = Path(e.save_dir or Path("saves") / "eval" / e.task)
    write_atomic(out / "results.json", json.dumps(results, ensure_ascii=False, indent=2))
    return results | {"results_file": str(out / "results.json")}


def _letter_counts(label: str, counts: dict) -> str:
    total = sum(counts.values()) or 1
    return f"{label:<28} " + "  ".join(f"{c} {n} ({100 * n / total:.1f}%)" for c, n in counts.items())


def format_results(results: dict) -> str:
    """Accuracy table (one column per model), then the letter counts of the answers and of each model's picks."""
    runs = results.get("models") or {"accuracy": results}
    names, first = list(runs), next(iter(runs.values()))

    def row(label: str, values) -> str:
        return f"{label:<28}" + "".join(f" {v:>10.2f}" for v in values)

    lines = [f"{'subject':<28}" + "".join(f" {n:>10}" for n in names)]
    for key in ("subjects", "categories"):
        lines += [row(s, (runs[n][key][s] for n in names)) for s in first[key]]
    lines.append(row("Average", (runs[n]["average"] for n in names)) + f"  ({first['questions']} questions)")
    lines.append(_letter_counts("answer letters", first["answer_letters"]))
    lines += [_letter_counts("picked" if n == "accuracy" else f"{n} picked", runs[n]["predicted_letters"])
              for n in names]
    lines.append("(a model that picks one letter whatever the question scores that letter's share of the answers)")
    return "\n".join(lines)
