"""Stage pt: pre-training on plain text. Same loop as sft; the data encoding differs (text + EOS,
concatenated and cut into `cutoff_len` blocks when packing, the default for pt)."""

from __future__ import annotations

from . import sft


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    return sft.run(cfg, tokenizer, template, data, resume)
