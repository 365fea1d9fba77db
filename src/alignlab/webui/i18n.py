"""The page's strings in English and 中文, from `locales/<part>.<lang>.json` (a file per tab or part,
merged; a key defined twice is an error)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LANGUAGES = {"en": "English", "zh": "中文"}
LOCALES = Path(__file__).with_name("locales")


@cache
def strings(lang: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted(LOCALES.glob(f"*.{lang}.json")):
        part = json.loads(path.read_text(encoding="utf-8"))
        if twice := merged.keys() & part.keys():
            raise KeyError(f"{path}: {sorted(twice)} already defined in another locale file")
        merged.update(part)
    return merged


def translate(lang: str, key: str, **values) -> str:
    """The string `key` in `lang` (English when the language is unknown), formatted with `values`."""
    text = strings(lang if lang in LANGUAGES else "en")[key]
    return text.format(**values) if values else text
