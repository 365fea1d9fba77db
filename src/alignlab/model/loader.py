"""Load a causal LM as the model arguments ask: dtype, attention, RoPE scaling, quantisation,
gradient checkpointing, vocabulary resize, Liger kernels, random init from the config."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import UserError

logger = logging.getLogger(__name__)

ATTENTION = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class ModelError(ValueError, UserError):
    """The model cannot be loaded as configured; the message says how to fix it."""


def compute_dtype(model_args, training_args=None) -> torch.dtype:
    """The dtype the forward pass runs in: bf16/fp16 when training asks for it, else infer_dtype."""
    if training_args is not None:
        if training_args.bf16:
            return torch.bfloat16
        if training_args.fp16:
            return torch.float16
        return torch.float32
    if model_args.infer_dtype != "auto":
        return DTYPES[model_args.infer_dtype]
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _attention(model_args) -> str | None:
    impl = ATTENTION[model_args.flash_attn]
    if impl == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise ModelError("`flash_attn: fa2` needs the flash-attn package on a CUDA GPU "
                             "(pip install flash-attn); use `flash_attn: sdpa` otherwise.") from None
    return impl


def _rope_scaling(config, model_args, cutoff_len: int | None) -> None:
    """LLaMA-Factory's rule: training (cutoff_len given) scales by ceil(cutoff_len / max length) and only
    when cutoff_len exceeds it; inference scales by 2."""
    if not model_args.rope_scaling:
        return
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    current = params.get("original_max_position_embeddings") or getattr(config, "max_position_embeddings", None)
    if not current:
        logger.warning("`rope_scaling` ignored: the model config has no max_position_embeddings.")
        return
    if cutoff_len is not None:
        if cutoff_len <= current:
            logger.warning("`rope_scaling` disabled: cutoff_len %d fits the model's %d positions.", cutoff_len, current)
            return
        factor = float(math.ceil(cutoff_len / current))
    else:
        factor = 2.0
    params.update({"rope_type": model_args.rope_scaling, "factor": factor})
    if model_args.rope_scaling in ("dynamic", "yarn", "llama3"):
        params["original_max_position_embeddings"] = current
    if model_args.rope_scaling == "llama3":
        params.update(low_freq_factor=1.0, high_freq_factor=4.0)
    config.rope_parameters = params
    config.max_position_embeddings = int(current * factor)
    logger.info("RoPE scaling %s with factor %.1f", model_args.rope_scaling, factor)


def _quantization_config(model_args, dtype):
    if model_args.quantization_bit is None:
        return None
    if not torch.cuda.is_available():
        raise ModelError(f"`quantization_bit: {model_args.quantization_bit}` (QLoRA) needs a CUDA GPU with "
                         "bitsandbytes; on this machine remove `quantization_bit` and train LoRA in full precision.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("`quantization_bit` needs bitsandbytes: pip install 'alignlab[bitsandbytes]'.") from None
    from transformers import BitsAndBytesConfig

    if model_args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=model_args.double_quantization,
                              bnb_4bit_quant_type=model_args.quantization_type,
                              bnb_4bit_quant_storage=dtype)


def _liger(model) -> None:
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        logger.warning("`enable_liger_kernel` is set but liger-kernel is not installed "
                       "(pip install 'alignlab[liger-kernel]'); training continues without it.")
        return
    _apply_liger_kernel_to_instance(model=model)
    logger.info("Liger kernels applied.")


LAYERNORM_NAMES = ("norm", "ln_f", "ln_attn", "ln_mlp", "ln_1", "ln_2", "ln1", "ln2")


def _upcast(model, model_args, is_trainable: bool) -> None:
    """LLaMA-Factory's `upcast_layernorm` (norm weights in float32 while training) and
    `upcast_lmhead_output` (logits in float32)."""
    if model_args.upcast_layernorm and is_trainable:
        for name, param in model.named_parameters():
            if param.ndim == 1 and any(n in name for n in LAYERNORM_NAMES):
                param.data = param.data.float()
    if model_args.upcast_lmhead_output:
        model.get_output_embeddings().register_forward_hook(lambda _module, _inputs, output: output.float())


def load_model(tokenizer, model_args, finetuning_args=None, training_args=None, is_trainable: bool = False,
               cutoff_len: int | None = None):
    """A causal LM ready for adapters: weights (or random init), dtype, attention, checkpointing."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_args.model_name_or_path,
                                        trust_remote_code=model_args.trust_remote_code,
                                        revision=model_args.model_revision)
    _rope_scaling(config, model_args, cutoff_len)
    dtype = compute_dtype(model_args, training_args if is_trainable else None)
    pure_bf16 = bool(finetuning_args and getattr(finetuning_args, "pure_bf16", False))
    lora = bool(finetuning_args and finetuning_args.finetuning_type == "lora")
    # full/freeze keep float32 master weights under mixed precision; LoRA and pure_bf16 load in the compute dtype
    load_dtype = dtype if (not is_trainable or lora or pure_bf16) else torch.float32
    if pure_bf16:
        load_dtype = torch.bfloat16
    kwargs = {"trust_remote_code": model_args.trust_remote_code, "dtype": load_dtype}
    impl = _attention(model_args)
    if impl:
        kwargs["attn_implementation"] = impl
    if model_args.train_from_scratch:
        model = AutoModelForCausalLM.from_config(config, **kwargs)
        logger.info("Initialised %s from its config with random weights.", config.model_type)
    else:
        quant = _quantization_config(model_args, dtype)
        if quant is not None:
            kwargs["quantization_config"] = quant
            kwargs["device_map"] = {"": torch.cuda.current_device()}
        try:
            model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, config=config,
                                                         revision=model_args.model_revision,
                                                         low_cpu_mem_usage=model_args.low_cpu_mem_usage, **kwargs)
        except OSError as e:
            if "safetensors" in str(e) or "pytorch_model" in str(e) or "no file named" in str(e).lower():
                raise ModelError(f"{model_args.model_name_or_path} has a config but no weights. To train a "
                                 "model from this config, set `train_from_scratch: true`.") from None
            raise
    embeddings = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embeddings:
        if not model_args.resize_vocab:
            raise ModelError(f"The tokenizer has {len(tokenizer)} tokens but the model's embeddings have "
                             f"{embeddings} rows (the template or new_special_tokens added tokens): set "
                             "`resize_vocab: true`.")
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
        logger.info("Resized embeddings from %d to %d rows.", embeddings, model.get_input_embeddings().weight.shape[0])
    if model_args.enable_liger_kernel:
        _liger(model)
    _upcast(model, model_args, is_trainable)
    if is_trainable:
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=not model_args.disable_gradient_checkpointing)
        elif not model_args.disable_gradient_checkpointing and model.supports_gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
            if lora:
                model.enable_input_require_grads()
        model.train()
    else:
        model.requires_grad_(False)
        model.eval()
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count twice their stored elements."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
