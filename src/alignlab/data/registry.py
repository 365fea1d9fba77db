"""`dataset_info.json` entries and the files they point at.

An entry names a local `file_name` (file or folder) plus how to read its rows: `formatting`
(alpaca | sharegpt | openai), `ranking`, `columns`, `tags`, `split`, `num_samples`. Entries that
only point at a hub cannot load offline and say so.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
FILE_TYPES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet",
              ".txt": "text", ".arrow": "arrow"}
DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
    "openai": {"messages": "messages", "tools": "tools"},
}
DEFAULT_TAGS = {
    "sharegpt": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                 "assistant_tag": "gpt", "observation_tag": "observation",
                 "function_tag": "function_call", "system_tag": "system"},
    "openai": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
               "assistant_tag": "assistant", "observation_tag": "tool",
               "function_tag": "function_call", "system_tag": "system"},
}
COLUMN_NAMES = ("prompt", "query", "response", "history", "messages", "system", "tools",
                "chosen", "rejected", "kto_tag", "images", "videos", "audios")
MEDIA_COLUMNS = ("images", "videos", "audios")
TAG_NAMES = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag",
             "system_tag")


class DataError(ValueError, UserError):
    """Bad data or a bad registry entry; the message names the dataset, file and row."""


@dataclass
class DatasetAttr:
    name: str
    file_name: str
    formatting: str = "alpaca"
    ranking: bool = False
    split: str = "train"
    num_samples: int | None = None
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()  # column roles every row must have
    mapped: tuple[str, ...] = ()  # column roles named in the entry's `columns`


def read_dataset_info(dataset_dir: str) -> dict[str, dict]:
    path = Path(dataset_dir) / "dataset_info.json"
    if not path.is_file():
        raise DataError(f"No dataset_info.json in `dataset_dir` {dataset_dir!r}: create it or point "
                        "`dataset_dir` at the folder that holds it.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise DataError(f"{path} must map dataset names to entries.")
    return info


def get_dataset_attr(name: str, info: dict[str, dict], dataset_dir: str) -> DatasetAttr:
    """Resolve one entry of dataset_info.json, checking it can load offline."""
    if name not in info:
        import difflib

        close = difflib.get_close_matches(name, list(info), n=3)
        raise DataError(f"Dataset {name!r} is not in {dataset_dir}/dataset_info.json."
                        + (f" Did you mean: {', '.join(close)}?" if close else ""))
    entry = info[name]
    if "file_name" not in entry:
        hubs = [f"{k}: {entry[k]}" for k in HUB_KEYS if k in entry]
        raise DataError(
            f"Dataset {name!r} points only at a hub ({'; '.join(hubs) or 'no file_name'}). alignlab "
            "works offline: download the data and give the entry a local `file_name`."
        )
    formatting = entry.get("formatting", "alpaca")
    if formatting not in DEFAULT_COLUMNS:
        raise DataError(f"Dataset {name!r}: unknown formatting {formatting!r}; use alpaca, sharegpt "
                        "or openai.")
    # As LLaMA-Factory: an entry with `columns` (or `tags`) names all it uses; the defaults apply
    # only to an entry without that key, and a role left out of it is absent, not defaulted.
    given = entry["columns"] or {} if "columns" in entry else None
    columns = dict(DEFAULT_COLUMNS[formatting]) if given is None else {k: v for k, v in given.items() if v}
    unknown = [c for c in given or {} if c not in COLUMN_NAMES]
    if unknown:
        raise DataError(f"Dataset {name!r}: unknown column role(s) {unknown} in `columns`; known: "
                        f"{', '.join(COLUMN_NAMES)}.")
    media = [role for role in MEDIA_COLUMNS if role in columns]
    if media:
        raise DataError(f"Dataset {name!r} maps {', '.join(f'`{m}`' for m in media)} in `columns`: multimodal "
                        "data is not supported by alignlab (text only). Remove the mapping to train on the text.")
    if "tags" in entry:
        tags = {tag: (entry["tags"] or {}).get(tag) for tag in TAG_NAMES}
    else:
        tags = dict(DEFAULT_TAGS.get(formatting, {}))
    main = "prompt" if formatting == "alpaca" else "messages"
    if formatting != "alpaca":
        if main not in columns:
            raise DataError(f"Dataset {name!r}: `columns` must map `messages` for {formatting} data.")
        missing_tags = [t for t in ("role_tag", "content_tag") if not tags.get(t)]
        if missing_tags:
            raise DataError(f"Dataset {name!r}: `tags` must name {' and '.join(missing_tags)}.")
    ranking = bool(entry.get("ranking", False))
    required = tuple(r for r in (main, "chosen", "rejected") if r in columns and (r == main or given))
    return DatasetAttr(name=name, file_name=entry["file_name"], formatting=formatting,
                       ranking=ranking, split=entry.get("split", "train"),
                       num_samples=entry.get("num_samples"), columns=columns, tags=tags,
                       required=required, mapped=tuple(given or ()))


def data_files(attr: DatasetAttr, dataset_dir: str) -> list[Path]:
    """The files of an entry: the file itself, or every data file in a folder."""
    path = Path(dataset_dir) / attr.file_name
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return [path]  # saved with datasets.save_to_disk
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_TYPES)
        if not files:
            raise DataError(f"Dataset {attr.name!r}: folder {path} holds no data files "
                            f"({', '.join(FILE_TYPES)}).")
        types = {FILE_TYPES[p.suffix.lower()] for p in files}
        if len(types) > 1:
            raise DataError(f"Dataset {attr.name!r}: folder {path} mixes file types {sorted(types)}.")
        return files
    if not path.is_file():
        raise DataError(f"Dataset {attr.name!r}: file {path} does not exist. Check `file_name` in "
                        f"{dataset_dir}/dataset_info.json and `dataset_dir`.")
    if path.suffix.lower() not in FILE_TYPES:
        raise DataError(f"Dataset {attr.name!r}: cannot read {path}; supported types: "
                        f"{', '.join(FILE_TYPES)} or a datasets.save_to_disk folder.")
    return [path]


def _read_text(path: Path, name: str) -> str:
    """A data file's text; bytes that are not UTF-8 are an error naming the file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"Dataset {name!r}: {path} is not UTF-8 text: line {line}, column {column} has byte "
                        f"0x{data[e.start]:02x} ({e.reason}). Re-save the file as UTF-8.") from None


def _json_rows(path: Path, name: str) -> Iterator[tuple[int, dict]]:
    text = _read_text(path, name)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"Dataset {name!r}: {path} is not valid JSON at line {e.lineno}, "
                            f"column {e.colno}: {e.msg}.") from None
        for i, row in enumerate(rows):
            yield i, row
        return
    row_index = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"Dataset {name!r}: {path} line {line_no} (row {row_index}) is not valid "
                            f"JSON: {e.msg} at column {e.colno}. Fix or remove that line.") from None
        yield row_index, row
        row_index += 1


def iter_rows(attr: DatasetAttr, dataset_dir: str) -> Iterator[tuple[Path, int, dict]]:
    """Yield (file, row index, row) for every row of the entry, checking each is an object."""
    for path in data_files(attr, dataset_dir):
        if path.is_dir():
            from datasets import load_from_disk

            ds = load_from_disk(str(path))
            if hasattr(ds, "keys"):  # DatasetDict
                if attr.split not in ds:
                    raise DataError(f"Dataset {attr.name!r}: {path} has no split {attr.split!r} "
                                    f"(has {', '.join(ds.keys())}).")
                ds = ds[attr.split]
            rows: Any = enumerate(ds)
        else:
            kind = FILE_TYPES[path.suffix.lower()]
            if kind == "json":
                rows = _json_rows(path, attr.name)
            elif kind == "text":
                lines = _read_text(path, attr.name).splitlines()
                rows = enumerate({"text": line} for line in lines if line.strip())
            elif kind == "csv":
                rows = list(enumerate(csv.DictReader(io.StringIO(_read_text(path, attr.name), newline=""))))
            else:
                import datasets

                builder = "parquet" if kind == "parquet" else "arrow"
                ds = datasets.load_dataset(builder, data_files=str(path), split="train")
                rows = enumerate(ds)
        for i, row in rows:
            if not isinstance(row, dict):
                raise DataError(f"Dataset {attr.name!r}: {path} row {i} is a {type(row).__name__}, "
                                "expected an object with named columns.")
            yield path, i, row
