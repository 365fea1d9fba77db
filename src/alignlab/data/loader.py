"""From dataset names to tokenised `datasets.Dataset`s: load, convert, mix, split, encode, pack, cache.

The tokenised result is cached on disk under a key made of the data files' contents, the
registry entries, the tokenizer, the template and every option that changes the encoding; a
second run with the same inputs loads it instead of tokenising again (`overwrite_cache`
rebuilds it, `tokenized_path` saves/loads it at a path of your choice).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..config import split_list
from ..config.stages import STAGES
from .convert import Example, SkipReport, check_mapped_columns, convert_row
from .encode import (
    EncodeOptions,
    chunk_pretrain,
    encode_feedback,
    encode_pairwise,
    encode_pretrain_text,
    encode_prompt_only,
    encode_supervised,
    pack,
)
from .registry import DataError, data_files, get_dataset_attr, iter_rows, read_dataset_info

logger = logging.getLogger(__name__)

STAGE_KIND = {name: stage.data_kind for name, stage in STAGES.items()} | {"predict": "prompt"}
CACHE_FORMAT = 2  # bump when the encoded layout changes


def split_names(names: str | None) -> list[str]:
    return split_list(names)


def check_fits_stage(attr, kind: str | None) -> None:
    """A ranking dataset for sft, or a non-ranking one for dpo, is a mistake worth naming early."""
    if kind == "pairwise" and not attr.ranking:
        raise DataError(f"Dataset {attr.name!r} is not a preference dataset: stages rm and dpo need chosen/"
                        "rejected pairs (`ranking: true` with `chosen` and `rejected` columns).")
    if kind in ("sft", "pt", "feedback") and attr.ranking:
        raise DataError(f"Dataset {attr.name!r} is a ranking (chosen/rejected) dataset: stage "
                        f"{'kto' if kind == 'feedback' else kind} needs single answers; use it with stage "
                        "rm or dpo, or pick a dataset without `ranking: true`.")
    if kind == "feedback" and "kto_tag" not in attr.columns:
        raise DataError(f"Dataset {attr.name!r} has no `kto_tag` column mapping: stage kto needs each "
                        "answer tagged desirable (true) or not (false).")


def read_dataset(data_args, attr, kind: str | None, seed: int, report: SkipReport,
                 on_error: Callable[[str], None] | None = None) -> list[Example]:
    """One dataset's rows -> examples for a stage kind: the one conversion training and
    `alignlab data validate` share.

    Rows are counted as LLaMA-Factory counts them: `num_samples` resamples rows and `max_samples`
    keeps the first rows, before conversion; then each row converts or is dropped with its reason
    (in `report`). Bad data raises DataError; with `on_error`, each error goes to it and reading
    goes on with the next row (file-level errors end the dataset).
    """
    def fail(error: DataError) -> None:
        if on_error is None:
            raise error
        on_error(str(error))

    rows, seen, complete = [], {}, True
    limit = data_args.max_samples if not attr.num_samples else None
    try:
        for path, index, row in iter_rows(attr, data_args.dataset_dir):
            if limit and len(rows) == limit:
                complete = False
                break
            seen.setdefault(path, set()).update(row)
            rows.append((path, index, row))
    except DataError as e:
        fail(e)
        return []
    if not rows:
        files = ", ".join(str(p) for p in data_files(attr, data_args.dataset_dir))
        fail(DataError(f"Dataset {attr.name!r} has no rows: {files} holds none."))
        return []
    if attr.num_samples:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        rows = [rows[order[i % len(order)]] for i in range(attr.num_samples)]
    if data_args.max_samples:
        rows = rows[: data_args.max_samples]
    examples = []
    for path, index, row in rows:
        try:
            ex = convert_row(attr, path, index, row, report, kind)
        except DataError as e:
            fail(e)
            continue
        if ex is not None:
            examples.append(ex)
    if complete:
        for path, columns in seen.items():
            try:
                check_mapped_columns(attr, path, columns)
            except DataError as e:
                fail(e)
    return examples


def load_examples(data_args, names: str, seed: int, report: SkipReport, kind: str | None = None) -> list[Example]:
    """Read and convert the named datasets (`read_dataset`), then mix them.

    kind: the stage's encoding (STAGE_KIND values); datasets that cannot serve it are refused and
    rows it cannot use are dropped with their reason.
    """
    info = read_dataset_info(data_args.dataset_dir)
    per_dataset = []
    for name in split_names(names):
        attr = get_dataset_attr(name, info, data_args.dataset_dir)
        check_fits_stage(attr, kind)
        examples = read_dataset(data_args, attr, kind, seed, report)
        if not examples:
            raise DataError(f"Dataset {name!r} has no usable rows: {report.summary()}")
        per_dataset.append(examples)
    return mix(per_dataset, data_args.mix_strategy, data_args.interleave_probs, seed)


def mix(datasets: list[list[Example]], strategy: str, probs: str | None, seed: int) -> list[Example]:
    """concat, or interleave (as `datasets.interleave_datasets`): `interleave_under` stops when an
    exhausted dataset is drawn, `interleave_over` restarts it until every dataset ran out once."""
    if strategy == "concat" or len(datasets) == 1:
        return [ex for d in datasets for ex in d]
    weights = [float(p) for p in split_list(probs)] if probs else [1.0] * len(datasets)
    if len(weights) != len(datasets):
        raise DataError(f"`interleave_probs` has {len(weights)} values for {len(datasets)} datasets.")
    rng = random.Random(seed)
    positions = [0] * len(datasets)
    exhausted = [False] * len(datasets)
    out: list[Example] = []
    turn = 0
    while True:
        i = rng.choices(range(len(datasets)), weights)[0] if probs else turn % len(datasets)
        turn += 1
        if positions[i] == len(datasets[i]):
            if strategy == "interleave_under":
                return out
            positions[i] = 0
        out.append(datasets[i][positions[i]])
        positions[i] += 1
        if positions[i] == len(datasets[i]):
            exhausted[i] = True
            if strategy == "interleave_over" and all(exhausted):
                return out


def train_val_split(examples: list[Example], val_size: float, seed: int):
    if not val_size:
        return examples, []
    n_val = int(val_size) if val_size >= 1 else math.ceil(val_size * len(examples))
    if not 0 < n_val < len(examples):
        raise DataError(f"`val_size` {val_size} leaves no training or no validation examples "
                        f"out of {len(examples)}.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    val = set(order[:n_val])
    return ([ex for i, ex in enumerate(examples) if i not in val],
            [examples[i] for i in order[:n_val]])


def _encode_chunk(examples: list[Example], kind: str, template, tokenizer, opt: EncodeOptions,
                  kl_answers: list[dict] | None = None) -> list[dict | None]:
    out = []
    for i, ex in enumerate(examples):
        if kind == "sft":
            out.append(encode_supervised(template, tokenizer, ex, opt))
        elif kind == "pairwise":
            out.append(encode_pairwise(template, tokenizer, ex, opt))
        elif kind == "feedback":
            out.append(encode_feedback(template, tokenizer, ex, kl_answers[i], opt))
        elif kind == "prompt":
            enc = encode_prompt_only(template, tokenizer, ex, opt)
            if enc is not None:
                enc["prompt_messages"] = json.dumps(ex.prompt, ensure_ascii=False)
                enc["system"], enc["tools"] = ex.system, ex.tools
                enc["extra"] = json.dumps(ex.extra, ensure_ascii=False, default=str)
            out.append(enc)
        else:  # pt
            out.append({"input_ids": encode_pretrain_text(tokenizer, ex, template.name)})
    return out


def kl_partners(n: int, batch_size: int) -> list[int]:
    """KTO's KL pairs: example i takes the answer of example i - 1, the first of each preprocessing
    batch the last of its batch (LLaMA-Factory's and TRL's shift, batch by batch)."""
    partners = []
    for i in range(n):
        start = i - i % batch_size
        partners.append(i - 1 if i > start else min(start + batch_size, n) - 1)
    return partners


def encode_examples(examples: list[Example], kind: str, template, tokenizer, opt: EncodeOptions,
                    num_workers: int | None, report: SkipReport, packing: bool,
                    batch_size: int = 1000) -> list[dict]:
    """Encode (in parallel when asked), and pack or chunk.

    Packed sft examples are cut to `cutoff_len - 1` tokens and packed into rows of as many, as
    LLaMA-Factory does (its packed rows are padded to `cutoff_len`).
    """
    if kind == "sft" and packing:
        opt = replace(opt, cutoff_len=opt.cutoff_len - 1)
    kl_answers = None
    if kind == "feedback":
        kl_answers = [examples[j].response[0] for j in kl_partners(len(examples), batch_size)]
    workers = min(num_workers or 1, max(1, len(examples) // 256))
    if workers > 1:
        size = math.ceil(len(examples) / (workers * 4))
        chunks = [examples[i:i + size] for i in range(0, len(examples), size)]
        kl_chunks = [kl_answers[i:i + size] if kl_answers else None for i in range(0, len(examples), size)]
        jobs = [(chunk, kind, template, tokenizer, opt, kl) for chunk, kl in zip(chunks, kl_chunks)]
        with get_context("fork").Pool(workers) as pool:
            parts = pool.starmap(_encode_chunk, jobs)
        encoded = [e for part in parts for e in part]
    else:
        encoded = _encode_chunk(examples, kind, template, tokenizer, opt, kl_answers)
    kept = []
    for ex, enc in zip(examples, encoded):
        if enc is None:  # conversion drops what a stage cannot use; this is a safety net
            report.skip(ex.dataset, f"not encodable for stage kind {kind}", ex.row)
        else:
            kept.append(enc)
    if kind == "pt":
        ids = [e["input_ids"] for e in kept]
        bos = tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", False) else None
        if packing:
            blocks = chunk_pretrain(ids, opt.cutoff_len)
            if bos is not None:  # LLaMA-Factory: each block starts with BOS (replacing its first token)
                for block in blocks:
                    block["input_ids"][0] = block["labels"][0] = bos
            return blocks
        if bos is not None:
            ids = [[bos, *x] for x in ids]
        return [{"input_ids": x[: opt.cutoff_len], "labels": x[: opt.cutoff_len]} for x in ids]
    if kind == "sft" and packing:
        return pack(kept, opt.cutoff_len)
    return kept


def _fingerprint(obj: Any) -> Any:
    if is_dataclass(obj):
        return asdict(obj)
    return obj


def cache_key(data_args, stage: str, tokenizer, template, seed: int) -> str:
    """Hash of everything that determines the encoded data."""
    info = read_dataset_info(data_args.dataset_dir)
    files = []
    for name in split_names(data_args.dataset) + split_names(data_args.eval_dataset):
        attr = get_dataset_attr(name, info, data_args.dataset_dir)
        for path in data_files(attr, data_args.dataset_dir):
            targets = sorted(path.rglob("*")) if path.is_dir() else [path]
            for p in targets:
                if p.is_file():
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                    files.append((name, str(p.relative_to(data_args.dataset_dir)), digest))
        files.append((name, json.dumps(info[name], sort_keys=True)))
    vocab = tokenizer.get_vocab()
    tok_digest = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()
    payload = {
        "format": CACHE_FORMAT,
        "stage": STAGE_KIND.get(stage, stage),
        "files": files,
        "tokenizer": [tok_digest, tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token],
        "template": repr(_fingerprint(template)) if template.name != "jinja" else tokenizer.chat_template,
        "options": {k: getattr(data_args, k) for k in (
            "dataset", "eval_dataset", "cutoff_len", "train_on_prompt", "mask_history", "mix_strategy",
            "interleave_probs", "max_samples", "val_size", "packing", "neat_packing", "default_system",
            "preprocessing_batch_size",
            "enable_thinking", "preserve_thinking", "tool_format")},
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNLAB_CACHE", Path.home() / ".cache" / "alignlab")) / "tokenized"


@dataclass
class EncodedData:
    train: Any  # datasets.Dataset or None
    eval: Any  # datasets.Dataset or None
    report: SkipReport
    cache_dir: str | None = None
    from_cache: bool = False


REPORT_FILE = "alignlab_drop_report.json"


def _save_atomic(dataset_dict, target: Path, report: SkipReport) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
    dataset_dict.save_to_disk(str(tmp))
    (tmp / REPORT_FILE).write_text(report.to_json())
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _load_saved(path: Path) -> EncodedData:
    from datasets import load_from_disk

    saved = load_from_disk(str(path))
    report_file = path / REPORT_FILE  # the drops of the run that made the cache, shown again
    report = SkipReport.from_json(report_file.read_text()) if report_file.is_file() else SkipReport()
    return EncodedData(train=saved["train"] if "train" in saved else None,
                       eval=saved["eval"] if "eval" in saved else None,
                       report=report, cache_dir=str(path), from_cache=True)


def get_dataset(data_args, stage: str, tokenizer, template, seed: int = 42) -> EncodedData:
    """Tokenised train/eval datasets for a stage, from cache when the inputs are unchanged."""
    from datasets import Dataset, DatasetDict

    if data_args.tokenized_path and Path(data_args.tokenized_path, "dataset_dict.json").is_file() \
            and not data_args.overwrite_cache:
        logger.info("Loading tokenised data from %s", data_args.tokenized_path)
        return _load_saved(Path(data_args.tokenized_path))
    if not data_args.dataset and not data_args.eval_dataset:
        raise DataError("No `dataset` given: name one or more entries of dataset_info.json.")
    kind = STAGE_KIND[stage]
    if data_args.preserve_thinking and not template.preserve_thinking:  # a data option: it decides the encoding
        template = replace(template, preserve_thinking=True)
    cache_dir = cache_root() / cache_key(data_args, stage, tokenizer, template, seed)
    if cache_dir.joinpath("dataset_dict.json").is_file() and not data_args.overwrite_cache:
        logger.info("Loading cached tokenised data from %s", cache_dir)
        if data_args.tokenized_path:
            shutil.copytree(cache_dir, data_args.tokenized_path, dirs_exist_ok=True)
        return _load_saved(cache_dir)

    report = SkipReport()
    train_examples = load_examples(data_args, data_args.dataset, seed, report, kind) if data_args.dataset else []
    eval_examples = (load_examples(data_args, data_args.eval_dataset, seed, report, kind)
                     if data_args.eval_dataset else [])
    if data_args.val_size:
        train_examples, eval_examples = train_val_split(train_examples, data_args.val_size, seed)
    opt = EncodeOptions(data_args.cutoff_len, data_args.train_on_prompt, data_args.mask_history)
    splits = {}
    for split, examples in (("train", train_examples), ("eval", eval_examples)):
        if examples:
            rows = encode_examples(examples, kind, template, tokenizer, opt,
                                   data_args.preprocessing_num_workers, report,
                                   packing=bool(data_args.packing) and split == "train",
                                   batch_size=data_args.preprocessing_batch_size)
            if not rows:
                raise DataError(f"No {split} example survived encoding.\n{report.summary()}")
            splits[split] = Dataset.from_list(rows)
    bundle = DatasetDict(splits)
    _save_atomic(bundle, cache_dir, report)
    if data_args.tokenized_path:
        _save_atomic(bundle, Path(data_args.tokenized_path), report)
    return EncodedData(train=splits.get("train"), eval=splits.get("eval"), report=report,
                       cache_dir=str(cache_dir))
