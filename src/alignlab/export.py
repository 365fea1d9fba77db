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


def run_export(cfg) -> Path:
    """Write the export folder; return its path."""
    from .model.adapter import adapter_paths

    model_args = cfg.model
    if not model_args.export_dir:
        raise ConfigError("`alignlab export` needs `export_dir`: the folder to write the merged model to.")
    if model_args.quantization_bit is not None:
        raise ConfigError("Cannot merge adapters into a quantised base (`quantization_bit` is set): the merged "
                          "weights would be lossy. Drop `quantization_bit`, so the base loads in 16/32 bit, "
                          "merge, then quantise the export if you need to.")
    final = Path(model_args.export_dir)
    check_export_dir(final, [model_args.model_name_or_path, *adapter_paths(model_args)])
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.writing-"))
    try:
        _write_export(cfg, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _replace_dir(out, final)
    logger.info("Exported to %s", final)
    return final


def _is_export(folder: Path) -> bool:
    try:
        return "exported_from" in (yaml.safe_load((folder / "run_config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError, TypeError):
        return False


def check_export_dir(target: Path, sources: list) -> None:
    """Refuse an export_dir that would mix with other files: equal to or inside the model or an adapter,
    inside a training run's folder, or a non-empty folder that is not a previous alignlab export."""
    real = Path(os.path.realpath(target))
    for source in filter(None, sources):
        src = Path(os.path.realpath(source))
        if real == src or src in real.parents:
            raise ConfigError(f"`export_dir` {target} is the model or adapter folder {source} (or inside it): "
                              "choose a new folder, e.g. saves/exported.")
    for folder in [real, *real.parents]:
        if (folder / "run_config.yaml").is_file() and not _is_export(folder):
            raise ConfigError(f"`export_dir` {target} is inside the training run folder {folder}: "
                              "choose a folder outside it.")
    if real.exists() and (not real.is_dir() or any(real.iterdir())) and not _is_export(real):
        raise ConfigError(f"`export_dir` {target} is not empty and holds no previous alignlab export: "
                          "choose an empty or new folder (a previous export there is replaced wholly).")


def _replace_dir(new: Path, final: Path) -> None:
    """Put the finished folder `new` at `final`; an old export there goes wholly, never half."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.replace(final, old / "export")
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_export(cfg, out: Path) -> None:
    from .model.adapter import adapter_paths
    from .model.run_loader import load_inference_model, training_settings
    from .model.value_head import HEAD_FILE

    model_args = cfg.model
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
        (out / "Modelfile").write_text(template.to_ollama(tokenizer), encoding="utf-8")
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
    (out / "run_config.yaml").write_text(yaml.safe_dump(carried, allow_unicode=True, sort_keys=False))
