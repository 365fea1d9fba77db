"""Which parameters train: full, freeze (chosen layers/modules) or LoRA/DoRA/PiSSA via PEFT."""

from __future__ import annotations

import logging
import re

import torch

from ..config import ConfigError, split_list
from .loader import count_parameters

logger = logging.getLogger(__name__)


def _names(value: str | None) -> list[str]:
    return split_list(value)


def adapter_paths(model_args) -> list[str]:
    """The folders of `adapter_name_or_path`, in stacking order."""
    return _names(model_args.adapter_name_or_path)


def all_linear_modules(model) -> list[str]:
    """Names (last component) of every linear layer except the output head."""
    output = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if module is output or "lm_head" in name:
            continue
        if isinstance(module, torch.nn.Linear) or module.__class__.__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(name.split(".")[-1])
    return sorted(names)


def _setup_freeze(model, args) -> None:
    num_layers = model.config.num_hidden_layers
    n = args.freeze_trainable_layers
    if n == 0 or abs(n) > num_layers:
        raise ConfigError(f"`freeze_trainable_layers` must be in [-{num_layers}, {num_layers}] and not 0, got {n}.")
    layer_ids = range(num_layers - n, num_layers) if n > 0 else range(-n)
    modules = _names(args.freeze_trainable_modules)
    layer_re = re.compile(r"\.layers\.(\d+)\.")
    extra = _names(args.freeze_extra_modules)
    matched = 0
    for name, param in model.named_parameters():
        found = layer_re.search(name)
        in_layer = found is not None and int(found.group(1)) in layer_ids
        module_ok = modules == ["all"] or any(f".{m}." in name for m in modules)
        trainable = (in_layer and module_ok) or any(f"{m}." in name or name.startswith(m) for m in extra)
        param.requires_grad_(trainable)
        if trainable:
            matched += 1
            param.data = param.data.float() if param.dtype != torch.float32 and not args.pure_bf16 else param.data
    if not matched:
        raise ConfigError(f"`freeze_trainable_modules` {args.freeze_trainable_modules!r} matched no parameter "
                         f"in layers {list(layer_ids)}.")


def _setup_lora(model, model_args, args, is_trainable: bool):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    adapters = adapter_paths(model_args)
    resume_last = is_trainable and adapters and not args.create_new_adapter
    to_merge = adapters[:-1] if resume_last else adapters
    for path in to_merge:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        logger.info("Merged adapter %s into the base model.", path)
    if resume_last:
        model = PeftModel.from_pretrained(model, adapters[-1], is_trainable=True)
        logger.info("Continuing to train adapter %s.", adapters[-1])
        return model
    if not is_trainable:
        return model
    targets = _names(args.lora_target)
    if targets == ["all"]:
        targets = all_linear_modules(model)
    init = f"pissa_niter_{args.pissa_iter}" if args.pissa_init and args.pissa_iter != -1 else (
        "pissa" if args.pissa_init else True)
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, target_modules=targets, use_rslora=args.use_rslora,
        use_dora=args.use_dora, modules_to_save=_names(args.additional_target) or None,
        init_lora_weights=init,
        # keep tied input/output embeddings tied when one of them is trained in full (additional_target)
        ensure_weight_tying=bool(args.additional_target and getattr(model.config, "tie_word_embeddings", False)),
    )
    return get_peft_model(model, config)


def init_adapter(model, model_args, finetuning_args, is_trainable: bool):
    """Apply the fine-tuning method and report trainable/total parameters."""
    kind = finetuning_args.finetuning_type
    if kind == "lora":
        model = _setup_lora(model, model_args, finetuning_args, is_trainable)
    elif is_trainable and kind == "freeze":
        _setup_freeze(model, finetuning_args)
    elif is_trainable:  # full
        model.requires_grad_(True)
        if not finetuning_args.pure_bf16:
            model.float()
    if not is_trainable:
        model.requires_grad_(False)
    trainable, total = count_parameters(model)
    logger.info("trainable params: %s || all params: %s || trainable%%: %.4f", f"{trainable:,}", f"{total:,}",
                100 * trainable / max(total, 1))
    if model_args.print_param_status:
        for name, param in model.named_parameters():
            print(f"{name}: {param.dtype} {'trainable' if param.requires_grad else 'frozen'}")
    return model
