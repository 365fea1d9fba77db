"""`alignlab export`: merge adapters into the base and write a folder any runtime can serve exactly
as trained: weights (sharded, `infer_dtype`), the value head of a reward model, the tokenizer with a
`chat_template.jinja` generated from the training template, an Ollama `Modelfile`, and a
`run_config.yaml` naming the template for alignlab's own chat/api/eval."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from .config import ConfigError
from .model.loader import DTYPES

logger = logging.getLogger(__name__)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def run_export(cfg) -> Path:
    """Write the export folder; return its path."""
    from .infer.engine import load_inference_model, training_settings
    from .model.adapter import adapter_paths
    from .model.value_head import HEAD_FILE

    model_args = cfg.model
    if not model_args.export_dir:
        raise ConfigError("`alignlab export` needs `export_dir`: the folder to write the merged model to.")
    if model_args.quantization_bit is not None:
        raise ConfigError("Cannot merge adapters into a quantised base (`quantization_bit` is set): the merged "
                          "weights would be lossy. Drop `quantization_bit`, so the base loads in 16/32 bit, "
                          "merge, then quantise the export if you need to.")
    out = Path(model_args.export_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_inference_model(cfg)  # LoRA adapters are merged when loaded for inference
    model = loaded.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if model_args.infer_dtype == "auto":
        saved = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
        dtype = saved if isinstance(saved, torch.dtype) else DTYPES.get(str(saved), torch.float32)
    else:
        dtype = DTYPES[model_args.infer_dtype]
    model = model.to(dtype)
    model.save_pretrained(out, max_shard_size=int(model_args.export_size * 10**9),
                          safe_serialization=not model_args.export_legacy_format)
    adapters = adapter_paths(model_args)
    head_dir = Path(adapters[-1] if adapters else model_args.model_name_or_path)
    if loaded.reward_model is not None:
        shutil.copyfile(head_dir / HEAD_FILE, out / HEAD_FILE)
    tokenizer, template = loaded.tokenizer, loaded.template
    if hasattr(template, "to_jinja"):
        tokenizer.chat_template = template.to_jinja(tokenizer)
        _atomic_text(out / "Modelfile", template.to_ollama(tokenizer))
    else:
        logger.warning("No built-in template: the tokenizer's own chat template is exported unchanged "
                       "and no Ollama Modelfile is written.")
    tokenizer.save_pretrained(out)
    settings = training_settings(model_args)
    carried = {k: settings[k] for k in ("stage", "template", "default_system", "enable_thinking", "tool_format",
                                        "cutoff_len") if k in settings}
    carried["template"] = getattr(template, "name", None) if hasattr(template, "to_jinja") else None
    carried.update(exported_from=str(model_args.model_name_or_path), adapters=adapters or None,
                   export_dtype=str(dtype).removeprefix("torch."))
    _atomic_text(out / "run_config.yaml", yaml.safe_dump(carried, allow_unicode=True, sort_keys=False))
    logger.info("Exported to %s (%s)", out, carried["export_dtype"])
    return out
