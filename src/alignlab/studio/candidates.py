"""`alignlab data candidates`: k different answers per prompt (k = `num_candidates`, 2-4) for people to rank.

Candidate i is written by the i-th of `candidate_models` (cycled; default the config's model and adapters)
at the i-th of `candidate_temperatures` (cycled; default `temperature`), with its own seed
`seed + 4 * row position + i`; an answer that exactly repeats an earlier candidate of the same prompt is
sampled again with a new seed, up to `max_resamples` times (then kept and marked `duplicate`). Rows go to
`output_dir/candidates.jsonl` as they finish, one per prompt, each candidate with its model, adapter,
seed and generating settings; `guideline` (text or a .md/.txt file) goes to `guideline.md` for the
Annotate page. A rerun with the same settings resumes after the last whole row; with
other settings it refuses (the rows would mix two generations).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import ConfigError, split_list
from ..data import DataError
from ..datagen.rows import PromptRow, load_rows
from ..datagen.runner import output_folder, read_records
from ..eval.compare import ModelSpec, engine_answers, parse_models
from ..files import append_durable, write_atomic

logger = logging.getLogger(__name__)

CANDIDATES = "candidates.jsonl"
SETTINGS = "candidates.settings.json"
GUIDELINE = "guideline.md"  # the ranking standard the Annotate page shows
RESEED = 1_000_003  # seed offset of each resampling attempt


@dataclass(frozen=True)
class Slot:
    """Who writes candidate `index` of every prompt, and how hot."""

    index: int
    model: ModelSpec
    temperature: float


def candidate_slots(cfg) -> list[Slot]:
    """The `num_candidates` slots from `candidate_models` and `candidate_temperatures`."""
    s = cfg.studio
    if s.candidate_models:
        models = parse_models(s.candidate_models, cfg.model.model_name_or_path)
    elif cfg.model.model_name_or_path:
        models = [ModelSpec("model", cfg.model.model_name_or_path, split_list(cfg.model.adapter_name_or_path))]
    else:
        raise ConfigError("`alignlab data candidates` needs `model_name_or_path` (or `candidate_models`): the model "
                          "whose answers people will rank, e.g. model_name_or_path=saves/demo/sft.")
    try:
        temperatures = [float(t) for t in split_list(s.candidate_temperatures)] or [cfg.generating.temperature]
    except ValueError:
        raise ConfigError(f"candidate_temperatures: {s.candidate_temperatures!r} is not a comma separated list of "
                          "numbers, e.g. 0.7,1.0,1.3.") from None
    if any(t < 0 for t in temperatures):
        raise ConfigError(f"candidate_temperatures: {s.candidate_temperatures!r} has a negative temperature.")
    return [Slot(i, models[i % len(models)], temperatures[i % len(temperatures)]) for i in range(s.num_candidates)]


def prompt_rows(cfg) -> list[PromptRow]:
    """The prompts: a dataset_info.json entry (any format the registry reads) or a .txt file, one prompt per line."""
    name = cfg.data.dataset
    path = Path(name or "")
    if path.suffix == ".txt":
        path = path if path.is_file() else Path(cfg.data.dataset_dir) / path
        if not path.is_file():
            raise DataError(f"dataset {name!r}: no such file (a .txt dataset is a file of prompts, one per line).")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        rows = [PromptRow(id=i, system=cfg.data.default_system or "", turns=[{"role": "user", "content": line}])
                for i, line in enumerate(lines, start=1) if line]
        if not rows:
            raise DataError(f"dataset {name!r}: {path} has no prompts (one per line).")
        return rows
    return load_rows(cfg.data, name, kind="prompt", command="candidates")


def guideline_text(value: str) -> str:
    """`guideline`: the text itself, or a .md/.txt file holding it."""
    path = Path(value)
    if path.suffix in (".md", ".txt"):
        if not path.is_file():
            raise ConfigError(f"guideline: no such file {value!r} (give the text itself or an existing .md/.txt file).")
        return path.read_text(encoding="utf-8")
    return value


def settings_of(cfg, slots: list[Slot]) -> dict:
    """What decides the candidates besides the prompts."""
    gen = cfg.generating
    return {"num_candidates": len(slots), "dataset": cfg.data.dataset, "seed": cfg.resolved.get("seed", 42),
            "slots": [{"model": s.model.model, "adapters": s.model.adapters, "temperature": s.temperature}
                      for s in slots],
            "do_sample": gen.do_sample, "top_p": gen.top_p, "top_k": gen.top_k, "max_new_tokens": gen.max_new_tokens,
            "repetition_penalty": gen.repetition_penalty, "max_resamples": cfg.studio.max_resamples}


def check_settings(folder: Path, settings: dict) -> None:
    """A folder holding candidates of other settings is refused, naming the settings that differ."""
    path = folder / SETTINGS
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    changed = sorted(k for k in {*settings, *previous} if settings.get(k) != previous.get(k))
    if changed and read_records(folder / CANDIDATES):
        raise ConfigError(f"output_dir {folder} holds candidates made with other settings ({', '.join(changed)} "
                          "differ): choose another `output_dir`, or delete that folder to start again.")


def _seed(base: int, position: int, index: int, attempt: int) -> int:
    return base + 4 * position + index + attempt * RESEED


class _Writers:
    """One loaded model and engine per distinct model spec, opened on first use."""

    def __init__(self, cfg):
        self.cfg, self.open = cfg, {}

    def get(self, spec: ModelSpec):
        key = (spec.model, tuple(spec.adapters))
        if key not in self.open:
            from ..infer.engine import HFEngine
            from ..model.run_loader import load_inference_model

            loaded = load_inference_model(self.cfg.for_model(spec.model, spec.adapters))
            engine = HFEngine(loaded.model, loaded.tokenizer, loaded.template, max_batch=self.cfg.model.infer_max_batch)
            self.open[key] = (loaded, engine)
        return self.open[key]

    def close(self) -> None:
        for _, engine in self.open.values():
            engine.close()


def _generate(writers: _Writers, cfg, jobs: list[tuple[PromptRow, int, Slot, int]]) -> list[tuple[str, str]]:
    """(text, finish reason) for each (row, position, slot, attempt), batched per model."""
    from ..infer.engine import SamplingParams

    base = SamplingParams.from_generating_args(cfg.generating)
    seed = cfg.resolved.get("seed", 42)
    results: list = [None] * len(jobs)
    by_model: dict = {}
    for j, (_, _, slot, _) in enumerate(jobs):
        by_model.setdefault((slot.model.model, tuple(slot.model.adapters)), []).append(j)
    for indices in by_model.values():
        loaded, engine = writers.get(jobs[indices[0]][2].model)
        prompts, params = [], []
        for j in indices:
            row, position, slot, attempt = jobs[j]
            prompts.append(loaded.template.encode_prompt(loaded.tokenizer, row.turns, row.system or None))
            sampled = base.do_sample and slot.temperature > 0
            params.append(replace(base, do_sample=sampled, temperature=slot.temperature if sampled else 1.0,
                                  seed=_seed(seed, position, slot.index, attempt) if sampled else None))
        for j, answer in zip(indices, engine_answers(engine, prompts, params)):
            results[j] = answer
    return results


def _duplicates(texts: list[str]) -> list[int]:
    """Indices of texts that repeat an earlier one exactly (ignoring surrounding white space)."""
    seen, repeated = set(), []
    for i, text in enumerate(texts):
        if text.strip() in seen:
            repeated.append(i)
        seen.add(text.strip())
    return repeated


def candidates_for(writers: _Writers, cfg, slots: list[Slot], rows: list[tuple[int, PromptRow]]) -> list[dict]:
    """The candidates.jsonl records of `rows` ((position, row) pairs), duplicates re-sampled."""
    gen, seed = cfg.generating, cfg.resolved.get("seed", 42)
    answers = _generate(writers, cfg, [(row, pos, slot, 0) for pos, row in rows for slot in slots])
    texts = {(pos, s.index): answers[k * len(slots) + s.index] for k, (pos, _) in enumerate(rows) for s in slots}
    attempts = dict.fromkeys(texts, 0)
    for attempt in range(1, cfg.studio.max_resamples + 1):
        redo = [(pos, row, slots[i]) for pos, row in rows
                for i in _duplicates([texts[pos, s.index][0] for s in slots])]
        if not redo:
            break
        for (pos, _row, slot), answer in zip(redo, _generate(writers, cfg, [(r, p, s, attempt) for p, r, s in redo])):
            texts[pos, slot.index], attempts[pos, slot.index] = answer, attempt
    records = []
    for pos, row in rows:
        record = row.record()
        repeated = set(_duplicates([texts[pos, s.index][0] for s in slots]))
        candidates = []
        for s in slots:
            text, reason = texts[pos, s.index]
            sampled = gen.do_sample and s.temperature > 0
            candidates.append({
                "id": f"c{s.index}", "text": text, "model": s.model.model, "adapter": ",".join(s.model.adapters) or None,
                "seed": _seed(seed, pos, s.index, attempts[pos, s.index]) if sampled else None,
                "temperature": s.temperature if sampled else 0.0, "top_p": gen.top_p, "top_k": gen.top_k,
                "max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty,
                "finish_reason": reason, "resamples": attempts[pos, s.index], "duplicate": s.index in repeated})
        records.append({"id": row.id, "prompt": {k: record[k] for k in ("system", "history", "instruction")},
                        "source": cfg.data.dataset, "extra": row.extra, "candidates": candidates})
    return records


def run_candidates(cfg) -> Path:
    """Write the candidates of every prompt not yet in output_dir/candidates.jsonl; return that file."""
    folder = output_folder(cfg, "candidates")
    slots = candidate_slots(cfg)
    rows = prompt_rows(cfg)
    settings = settings_of(cfg, slots)
    check_settings(folder, settings)
    path = folder / CANDIDATES
    done = {record["id"] for record in read_records(path)}
    todo = [(pos, row) for pos, row in enumerate(rows) if row.id not in done]
    write_atomic(folder / SETTINGS, json.dumps(settings, ensure_ascii=False, indent=2) + "\n")
    if cfg.studio.guideline:
        write_atomic(folder / GUIDELINE, guideline_text(cfg.studio.guideline))
    if done:
        print(f"candidates: resuming: {len(rows) - len(todo)} of {len(rows)} prompts are already in {path}",
              file=sys.stderr, flush=True)
    writers, chunk = _Writers(cfg), max(1, cfg.model.infer_max_batch // len(slots))
    start, made, duplicates = time.monotonic(), 0, 0
    try:
        with open(path, "a", encoding="utf-8") as f:
            for first in range(0, len(todo), chunk):
                for record in candidates_for(writers, cfg, slots, todo[first:first + chunk]):
                    append_durable(f, json.dumps(record, ensure_ascii=False))
                    duplicates += sum(c["duplicate"] for c in record["candidates"])
                made = min(first + chunk, len(todo))
                elapsed = time.monotonic() - start
                print(f"candidates: {len(rows) - len(todo) + made}/{len(rows)} prompts, {elapsed:.0f}s elapsed, "
                      f"ETA {elapsed / made * (len(todo) - made):.0f}s", file=sys.stderr, flush=True)
    finally:
        writers.close()
    print(f"candidates: {made} prompts x {len(slots)} candidates written to {path}"
          + (f"; {duplicates} candidates still repeat another after {cfg.studio.max_resamples} resamples "
             "(marked `duplicate`)" if duplicates else ""), file=sys.stderr, flush=True)
    return path
