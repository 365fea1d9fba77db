"""`alignlab data judge`: answers -> preference pairs by an LLM judge scoring against a rubric.

improve: a good answer becomes `chosen` and `rejected_model` writes the `rejected` one; a bad answer becomes
`rejected` and the judge's improved answer `chosen`. pairwise: two candidates judged in both orders; a
verdict that flips with the order is dropped as position bias. A failed judgement is a failure record,
never a label. Pairs go to output_dir/pairs.jsonl, dropped rows (with their reason) to dropped.jsonl.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import ConfigError, split_list
from ..data import DataError
from .client import ChatEndpoint, Ledger, RequestFailed, request_fields
from .generate import GENERATED, require_endpoint
from .parse import (
    VerdictError,
    check_improve_verdict,
    check_pairwise_verdict,
    parse_json_object,
    same_text,
)
from .register import file_name_in, register_datasets
from .rows import ALPACA_COLUMNS, PromptRow, load_rows
from .runner import RowLog, output_folder, read_records, run_job

PAIRS, DROPPED = "pairs.jsonl", "dropped.jsonl"
REASKS = 2  # re-asks after an unusable judge reply, before the row is a failure

IMPROVE_FORMAT = """Judge the assistant's answer below against this rubric. Reply with one JSON object and nothing
else: {"is_good": true or false, "reason": "<one or two sentences>", "improved_answer": "<when is_good is false: a
complete answer that meets every rubric point, in the language of the question; when true: an empty string>"}"""
PAIRWISE_FORMAT = """Compare answer A and answer B below against this rubric. Reply with one JSON object and
nothing else: {"winner": "A" or "B" or "tie", "reason": "<one or two sentences>"}"""
REASK = "Your reply could not be used: {problem}. Reply again with only the JSON object described above."


def _sum_usage(usages: list[dict]) -> dict[str, int]:
    return {key: sum(u.get(key, 0) for u in usages) for key in ("prompt_tokens", "completion_tokens")}


def judge_request(rubric: str, instructions: str, row: PromptRow, answers: dict[str, str]) -> list[dict]:
    """The judge's messages: rubric and reply format as system, then the conversation and the answer(s)."""
    parts = [f"[System prompt of the assistant]\n{row.system}"] if row.system else []
    for turn in row.turns[:-1]:
        parts.append(f"[{turn['role'].capitalize()}]\n{turn['content']}")
    parts.append(f"[Question]\n{row.turns[-1]['content']}")
    parts += [f"[{label}]\n{text}" for label, text in answers.items()]
    return [{"role": "system", "content": f"{rubric.strip()}\n\n{instructions}"},
            {"role": "user", "content": "\n\n".join(parts)}]


async def ask_judge(endpoint: ChatEndpoint, messages: list[dict], check, usages: list[dict]) -> dict:
    """The judge's verdict, parsed and checked by `check`; an unusable reply is re-asked up to REASKS times
    (the reply and the problem go back to the judge), then the row fails."""
    for _ in range(REASKS + 1):
        reply = await endpoint.chat(messages)
        usages.append(reply.usage)
        try:
            return check(parse_json_object(reply.text))
        except VerdictError as e:
            problem = str(e)
            messages = [*messages, {"role": "assistant", "content": reply.text},
                        {"role": "user", "content": REASK.format(problem=problem)}]
    raise RequestFailed(f"judge reply unusable after {REASKS + 1} tries: {problem}")


def _rubric(cfg) -> str:
    path = cfg.datagen.judge_rubric
    if not path:
        raise ConfigError("`alignlab data judge` needs `judge_rubric`: a text file with the rubric "
                          "(see examples/data/kids_clothing/rubric_en.md).")
    if not Path(path).is_file():
        raise ConfigError(f"`judge_rubric` {path} does not exist.")
    text = Path(path).read_text(encoding="utf-8")
    if not text.strip():
        raise ConfigError(f"`judge_rubric` {path} is empty.")
    return text


def _improve(cfg, rubric: str, judge: ChatEndpoint, ledger: Ledger):
    """The rows (answers of an SFT dataset), the row job of mode improve, and its endpoints."""
    d = cfg.datagen
    if not d.rejected_model:
        raise ConfigError("`judge_mode: improve` needs `rejected_model`: the model that writes the rejected answer "
                          "when the original is good (e.g. the base model, or the same model with a high "
                          "`rejected_temperature`).")
    ledger.check_prices([d.api_model, d.rejected_model])
    rows = load_rows(cfg.data, cfg.data.dataset, kind="sft", command="judge")
    sampling = {**request_fields(cfg), **({"temperature": d.rejected_temperature}
                                          if d.rejected_temperature is not None else {})}
    base = d.rejected_api_base or d.api_base  # the same server shares one concurrency limit
    writer = judge if base == d.api_base else ChatEndpoint.from_config(cfg, ledger, base_url=base)

    async def process(row: PromptRow) -> tuple[str, dict]:
        usages: list[dict] = []
        verdict = await ask_judge(judge, judge_request(rubric, IMPROVE_FORMAT, row, {"Answer": row.response}),
                                  lambda v: check_improve_verdict(v, row.response), usages)
        record = {**row.record(), "judge_reason": verdict["reason"]}
        if verdict["is_good"]:
            reply = await writer.chat(row.messages(), model=d.rejected_model, **sampling)
            usages.append(reply.usage)
            if not reply.text.strip() or same_text(reply.text, row.response):
                raise RequestFailed(f"`rejected_model` {d.rejected_model} gave "
                                    f"{'an empty answer' if not reply.text.strip() else 'the chosen answer again'}")
            record.update(chosen=row.response, rejected=reply.text, outcome="good", rejected_model=d.rejected_model)
        else:
            record.update(chosen=verdict["improved_answer"], rejected=row.response, outcome="improved")
        return PAIRS, {**record, "usage": _sum_usage(usages)}

    return rows, process, list(dict.fromkeys([judge, writer]))


def _candidate_file(path: str) -> Path:
    file = Path(path) / GENERATED if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ConfigError(f"`judge_candidates`: {path} is neither a `generate` output folder nor a file.")
    return file


def _candidate_pairs(spec: str | None) -> list[PromptRow]:
    """Rows present in both `judge_candidates` files, with the two answers; the prompts must agree."""
    paths = split_list(spec)
    if len(paths) != 2:
        raise ConfigError("`judge_mode: pairwise` needs `judge_candidates`: two `generate` outputs (folders or "
                          f"generated.jsonl files), comma separated; got {spec!r}.")
    first, second = ({r["id"]: r for r in read_records(_candidate_file(p))} for p in paths)
    rows, missing = [], 0
    for row_id, a in first.items():
        b = second.get(row_id)
        if b is None:
            missing += 1
            continue
        row, other = PromptRow.from_record(a), PromptRow.from_record(b)
        if row.messages() != other.messages():
            raise DataError(f"`judge_candidates`: id {row_id!r} has different prompts in {paths[0]} and {paths[1]}.")
        row.extra = {"candidates": [a.get("output", ""), b.get("output", "")],
                     "candidate_models": [a.get("model"), b.get("model")]}
        rows.append(row)
    missing += sum(row_id not in first for row_id in second)
    if missing:
        print(f"judge: {missing} ids are in only one of {paths[0]} and {paths[1]}: not judged.", file=sys.stderr)
    if not rows:
        raise DataError(f"`judge_candidates`: {paths[0]} and {paths[1]} share no ids.")
    return rows


def _pairwise(cfg, rubric: str, judge: ChatEndpoint, ledger: Ledger):
    """The rows (pairs of candidates), the row job of mode pairwise, and its endpoints."""
    ledger.check_prices([cfg.datagen.api_model])
    rows = _candidate_pairs(cfg.datagen.judge_candidates)

    async def process(row: PromptRow) -> tuple[str, dict]:
        candidates = row.extra["candidates"]
        record = {**row.record(), "candidates": candidates, "candidate_models": row.extra["candidate_models"]}
        if same_text(*candidates):
            return DROPPED, {**record, "outcome": "identical_candidates"}
        usages: list[dict] = []
        verdicts = []
        for a, b in ((0, 1), (1, 0)):  # both orders; the winner is mapped back to a candidate index
            verdict = await ask_judge(judge, judge_request(rubric, PAIRWISE_FORMAT, row, {
                "Answer A": candidates[a], "Answer B": candidates[b]}), check_pairwise_verdict, usages)
            verdicts.append({"A": a, "B": b}.get(verdict["winner"]))
            record.setdefault("judge_reasons", []).append(verdict["reason"])
        record["usage"] = _sum_usage(usages)
        if None in verdicts:
            return DROPPED, {**record, "outcome": "tie"}
        if verdicts[0] != verdicts[1]:
            return DROPPED, {**record, "outcome": "position_bias"}
        winner = verdicts[0]
        return PAIRS, {**record, "chosen": candidates[winner], "rejected": candidates[1 - winner],
                       "chosen_model": row.extra["candidate_models"][winner], "outcome": "consistent"}

    return rows, process, [judge]


def run_judge(cfg) -> dict:
    """Judge every unfinished row; register the pairs as a ranking dataset when `register_as` is set."""
    d = cfg.datagen
    require_endpoint(cfg, "judge")
    folder = output_folder(cfg, "judge")
    rubric = _rubric(cfg)
    ledger = Ledger(d.api_prices)
    judge = ChatEndpoint.from_config(cfg, ledger)
    build = _improve if d.judge_mode == "improve" else _pairwise
    rows, process, endpoints = build(cfg, rubric, judge, ledger)
    summary = run_job("judge", rows, process, RowLog(folder, (PAIRS, DROPPED)), endpoints, ledger,
                      workers=2 * d.max_concurrency)
    if d.register_as:
        register_datasets(cfg.data.dataset_dir, {d.register_as: {
            "file_name": file_name_in(cfg.data.dataset_dir, folder / PAIRS), "ranking": True,
            "columns": {**ALPACA_COLUMNS, "chosen": "chosen", "rejected": "rejected"}}})
    return summary
