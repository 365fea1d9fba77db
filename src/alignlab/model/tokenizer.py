"""Load a tokenizer the way the model arguments ask for."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import split_list
from .adapter import adapter_paths
from .loader import ModelError

logger = logging.getLogger(__name__)


def _hub_snapshot(repo_id: str) -> str | None:
    """The local snapshot folder of a hub id already in the Hugging Face cache, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def resolve_model_paths(model_args) -> None:
    """Check model and adapter paths before anything loads, in place: a hub id must already be in the
    local cache (alignlab runs offline); an adapter folder given as the model loads its base plus that
    adapter, as PEFT users expect."""
    path = model_args.model_name_or_path
    if not path:
        raise ModelError("`model_name_or_path` is required: point it at a Hugging Face model folder.")
    folder = Path(path)
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ModelError(f"`model_name_or_path` {path} is a LoRA adapter whose adapter_config.json names no "
                             "base model: set `model_name_or_path` to the base and `adapter_name_or_path` to it.")
        logger.info("%s is a LoRA adapter: loading its base %s with the adapter.", path, base)
        model_args.adapter_name_or_path = ",".join([str(path), *adapter_paths(model_args)])
        model_args.model_name_or_path = path = base
        folder = Path(base)
    if not folder.exists():
        snapshot = _hub_snapshot(str(path))
        if snapshot is None:
            hub_like = "/" in str(path) and not str(path).startswith((".", "/", "~"))
            how = (f"download the weights first, e.g. `hf download {path} --local-dir models/{Path(path).name}`, "
                   f"then set `model_name_or_path: models/{Path(path).name}`" if hub_like else
                   "give a local folder with config.json and the tokenizer files")
            raise ModelError(f"`model_name_or_path` {path} is not a local folder"
                             f"{' nor in the Hugging Face cache' if hub_like else ''}; alignlab runs offline: {how}.")
        model_args.model_name_or_path = snapshot
    for adapter in adapter_paths(model_args):
        if not (Path(adapter) / "adapter_config.json").is_file():
            reason = "does not exist" if not Path(adapter).exists() else "holds no adapter_config.json"
            raise ModelError(f"`adapter_name_or_path` {adapter} {reason}: give the folder of a LoRA run "
                             "(its output_dir or a checkpoint-N inside it).")


def load_tokenizer(model_args):
    """AutoTokenizer from `model_name_or_path`, with `new_special_tokens` added."""
    from transformers import AutoTokenizer

    resolve_model_paths(model_args)
    path = model_args.model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(
        path,
        trust_remote_code=model_args.trust_remote_code,
        use_fast=model_args.use_fast_tokenizer,
        split_special_tokens=model_args.split_special_tokens,
        revision=model_args.model_revision,
        padding_side="right",
    )
    if model_args.new_special_tokens:
        tokens = split_list(model_args.new_special_tokens)
        tokenizer.add_special_tokens({"additional_special_tokens": tokens},
                                     replace_extra_special_tokens=False)
    return tokenizer
