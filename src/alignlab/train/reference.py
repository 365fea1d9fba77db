"""The reference policy of dpo/kto: the base with the LoRA adapter disabled, a `ref_model`, or a
frozen copy of the starting weights; and the one-off pass that stores its log-probs in the data."""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

import torch

from ..model.adapter import init_adapter
from ..model.loader import load_model

logger = logging.getLogger(__name__)


def load_reference(cfg, tokenizer):
    """A separate frozen reference model, or None when the policy's disabled adapter serves."""
    from copy import deepcopy

    f = cfg.finetuning
    if f.ref_model is None and f.finetuning_type == "lora":
        return None
    model_args = deepcopy(cfg.model)
    finetuning = deepcopy(f)
    finetuning.finetuning_type = "lora"
    model_args.model_name_or_path = f.ref_model or cfg.model.model_name_or_path
    model_args.adapter_name_or_path = f.ref_model_adapters if f.ref_model else (
        cfg.model.adapter_name_or_path)
    model_args.quantization_bit = f.ref_model_quantization_bit
    model_args.train_from_scratch = False
    model = load_model(tokenizer, model_args, finetuning, cfg.training, is_trainable=False)
    return init_adapter(model, model_args, finetuning, is_trainable=False)


@contextmanager
def reference_of(policy, reference):
    """Yield the model that computes reference log-probs (no gradients)."""
    with torch.no_grad():
        if reference is not None:
            yield reference
        else:
            with (policy.disable_adapter() if hasattr(policy, "disable_adapter") else nullcontext()):
                yield policy


def precompute(trainer, dataset, compute, columns: tuple[str, ...], batch_size: int):
    """Run `compute(ref_model, batch) -> tuple of 1-D tensors` over the data once (batched by length)
    and add the results as dataset columns, each value in its row."""
    from torch.utils.data import DataLoader

    if dataset is None:
        return None
    # Rows in order of length, so a batch pads little; the values go back to each row's place.
    ids = [c for c in dataset.column_names if c.endswith("input_ids")]
    lengths = [sum(len(row[c]) for c in ids) for row in dataset.select_columns(ids)]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order, collate_fn=trainer.data_collator)
    values: list[list[float]] = [[] for _ in columns]
    model = trainer.model
    was_training = model.training
    model.eval()
    device = trainer.args.device
    with reference_of(model, trainer.reference) as ref:
        for batch in loader:
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            for store, tensor in zip(values, compute(ref, batch)):
                store.extend(tensor.float().cpu().tolist())
    model.train(was_training)
    for n, column in enumerate(values):
        placed = [0.0] * len(order)
        for row, value in zip(order, column):
            placed[row] = value
        values[n] = placed
    for name, column in zip(columns, values):
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
        dataset = dataset.add_column(name, column)
    logger.info("Reference log-probs computed once for %d rows.", len(dataset))
    return dataset


def reference_trainer(trainer_cls, cfg, tokenizer, data, collator, needs_reference: bool = True):
    """A dpo/kto trainer on the policy with its reference model on the device; with
    `precompute_ref_logps`, the reference log-probs are computed once into the data and the reference
    model is dropped (every batch then carries its reference log-probs)."""
    from .callbacks import LogCallback
    from .sft import build_model
    from .trainer import trainer_args

    training, f = cfg.training, cfg.finetuning
    model = build_model(cfg, tokenizer)
    reference = load_reference(cfg, tokenizer) if needs_reference else None
    trainer = trainer_cls(
        model=model, args=trainer_args(training), data_collator=collator, train_dataset=data.train,
        eval_dataset=data.eval, processing_class=tokenizer, callbacks=[LogCallback(training.output_dir)],
        finetuning_args=f, reference=reference,
    )
    if reference is not None:
        reference.to(training.device)
    if f.precompute_ref_logps and needs_reference:
        trainer.precompute_reference()
        trainer.reference = None
    return trainer
