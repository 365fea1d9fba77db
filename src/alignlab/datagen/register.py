"""Register output files in `dataset_dir/dataset_info.json`, written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import ConfigError
from ..data.registry import read_dataset_info
from ..files import write_atomic


def file_name_in(dataset_dir: str, path: Path) -> str:
    """`path` as a dataset_info.json `file_name`: relative to dataset_dir."""
    return os.path.relpath(Path(path).resolve(), Path(dataset_dir).resolve())


def check_names_free(dataset_dir: str, entries: dict[str, dict]) -> None:
    """Each name is new in dataset_info.json or already names the same file (a rerun)."""
    if not (Path(dataset_dir) / "dataset_info.json").is_file():
        return
    info = read_dataset_info(dataset_dir)
    for name, entry in entries.items():
        old = info.get(name)
        if old is not None and old.get("file_name") != entry["file_name"]:
            raise ConfigError(f"`register_as`: {dataset_dir}/dataset_info.json already has {name!r} for file "
                              f"{old.get('file_name')!r}: choose another name or remove that entry.")


def register_datasets(dataset_dir: str, entries: dict[str, dict]) -> Path:
    """Add (or refresh) the entries in dataset_info.json, creating it when absent."""
    check_names_free(dataset_dir, entries)
    path = Path(dataset_dir) / "dataset_info.json"
    info = read_dataset_info(dataset_dir) if path.is_file() else {}
    info.update(entries)
    return write_atomic(path, json.dumps(info, ensure_ascii=False, indent=2) + "\n")
