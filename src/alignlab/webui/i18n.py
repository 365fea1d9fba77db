"""The page's strings in English and 中文, from `locales/<lang>.json`."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LANGUAGES = {"en": "English", "zh": "中文"}
LOCALES = Path(__file__).with_name("locales")


@cache
def strings(lang: str) -> dict[str, str]:
    return json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))


def translate(lang: str, key: str, **values) -> str:
    """The string `key` in `lang` (English when the language is unknown), formatted with `values`."""
    text = strings(lang if lang in LANGUAGES else "en")[key]
    return text.format(**values) if values else text
