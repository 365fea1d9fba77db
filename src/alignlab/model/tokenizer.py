"""Load a tokenizer the way the model arguments ask for."""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(model_args):
    """AutoTokenizer from `model_name_or_path`, with `new_special_tokens` added."""
    from transformers import AutoTokenizer

    path = model_args.model_name_or_path
    if not path:
        raise ValueError("`model_name_or_path` is required: point it at a Hugging Face model folder.")
    if not Path(path).exists():
        raise ValueError(f"`model_name_or_path` {path!r} does not exist. alignlab runs offline: give a "
                         "local folder with config.json and the tokenizer files.")
    tokenizer = AutoTokenizer.from_pretrained(
        path,
        trust_remote_code=model_args.trust_remote_code,
        use_fast=model_args.use_fast_tokenizer,
        split_special_tokens=model_args.split_special_tokens,
        revision=model_args.model_revision,
        padding_side="right",
    )
    if model_args.new_special_tokens:
        tokens = [t.strip() for t in model_args.new_special_tokens.split(",") if t.strip()]
        tokenizer.add_special_tokens({"additional_special_tokens": tokens},
                                     replace_extra_special_tokens=False)
    return tokenizer
