"""The Train tab's form, generated from the key registry: which keys a stage reads, in which
group and order, which widget each gets, and the widget values back to a config.

Nothing here is written per stage: a key added to the registry for a stage appears in the form.
"""

from __future__ import annotations

import enum
import json
import typing
from dataclasses import dataclass

from ..config import load_config
from ..config.parser import KeyInfo, key_infos
from ..config.stages import COMMON_GROUPS, GROUP_TITLES, STAGES

# Chosen above the groups (pickers), not repeated inside them.
TOP_KEYS = ("stage", "model_name_or_path", "finetuning_type", "adapter_name_or_path", "template", "enable_thinking",
            "dataset_dir", "dataset", "output_dir", "do_train")
# The training keys people change most, shown open; the rest of the train group starts collapsed.
PROMINENT_TRAIN_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                        "gradient_accumulation_steps", "logging_steps", "save_steps")
PROMINENT = "essentials"  # the pseudo-group of PROMINENT_TRAIN_KEYS, first in the form


@dataclass(frozen=True)
class Field:
    """One key's widget: its kind (checkbox, dropdown, integer, number, text) and value as shown."""

    info: KeyInfo
    kind: str
    value: typing.Any
    choices: tuple = ()


def _plain_types(tp) -> list:
    return [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]


def _enum_of(tp) -> type[enum.Enum] | None:
    return next((a for a in _plain_types(tp) if isinstance(a, type) and issubclass(a, enum.Enum)), None)


def _shown(value) -> typing.Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def field_of(info: KeyInfo) -> Field:
    """The widget a key gets from its type: bool → checkbox, choices/enum → dropdown, int/float → number."""
    types = _plain_types(info.type)
    value = _shown(info.default)
    if info.choices:
        return Field(info, "dropdown", value, tuple(info.choices))
    if (enum_type := _enum_of(info.type)) is not None:
        return Field(info, "dropdown", value, tuple(e.value for e in enum_type))
    if types == [bool]:
        return Field(info, "checkbox", bool(value))
    if info.default is None:  # an optional number: empty text means "not set"
        return Field(info, "text", "")
    if types == [int]:
        return Field(info, "integer", value)
    if types in ([float], [int, float], [float, int]):
        return Field(info, "number", value)
    return Field(info, "text", "" if value is None else str(value))


def stage_groups(stage: str) -> list[str]:
    """The key groups a stage reads, in `--help` order."""
    wanted = set(COMMON_GROUPS) | set(STAGES[stage].groups)
    return [g for g in GROUP_TITLES if g in wanted]


def form_fields() -> dict[str, list[Field]]:
    """Group → fields for every key some training stage reads (the form holds them all; a stage
    shows its own); the most-used training keys come first, as the group PROMINENT."""
    groups: dict[str, list[Field]] = {}
    wanted = {g for s in STAGES for g in stage_groups(s)}
    for info in key_infos(with_training=True).values():
        if info.group in wanted and info.stages and info.name not in TOP_KEYS:
            groups.setdefault(info.group, []).append(field_of(info))
    every = {f.info.name: f for fields in groups.values() for f in fields}
    prominent = [every[name] for name in PROMINENT_TRAIN_KEYS]
    ordered = {g: [f for f in groups[g] if f not in prominent] for g in GROUP_TITLES if g in groups}
    return {PROMINENT: prominent, **ordered}


def visible_in(field: Field, stage: str) -> bool:
    return stage in field.info.stages


def changed_values(fields: list[Field], values: list, stage: str) -> dict:
    """The keys whose widget value differs from the default (empty text means "not set"), for `stage`."""
    changed = {}
    for field, value in zip(fields, values):
        if not visible_in(field, stage) or value is None or value == "" and field.kind == "text":
            continue
        if isinstance(value, float) and value.is_integer() and (field.kind == "integer" or isinstance(field.value, int)):
            value = int(value)
        if value != field.value:
            changed[field.info.name] = value
    return changed


def widget_values(fields: list[Field], config: dict) -> list:
    """Each field's widget value for a config (a loaded YAML, a run's run_config.yaml): the config's
    value where it sets the key, else the default; the inverse of `changed_values`."""
    values = []
    for field in fields:
        if field.info.name not in config or config[field.info.name] is None:
            values.append(field.value)
            continue
        value = _shown(config[field.info.name])
        if field.kind == "text":
            value = str(value)
        elif field.kind == "checkbox":
            value = bool(value)
        values.append(value)
    return values


def build_config(top: dict, changed: dict):
    """The training config of the page: top pickers plus changed keys, through the CLI's parser."""
    values = {"do_train": True, **{k: v for k, v in top.items() if v not in (None, "", [])}}
    if isinstance(values.get("dataset"), list):
        values["dataset"] = ",".join(values["dataset"])
    return load_config([], with_training=True, defaults={**values, **changed})


# The dataset kinds (as `alignlab data validate` guesses them) each stage kind can train on.
ACCEPTED_KINDS = {"pt": {"prompt", "sft"}, "sft": {"sft"}, "pairwise": {"pairwise"}, "feedback": {"feedback"},
                  "prompt": {"prompt", "sft"}}


def datasets_for(stage: str, dataset_dir: str) -> list[str]:
    """The entries of `dataset_dir/dataset_info.json` that `stage` can train on (empty if unreadable)."""
    from ..config.args import DataArguments
    from ..data.inspect import guess_kind
    from ..data.registry import DataError, get_dataset_attr, read_dataset_info

    try:
        info = read_dataset_info(dataset_dir)
    except DataError:
        return []
    accepted, names = ACCEPTED_KINDS[STAGES[stage].data_kind], []
    for name in info:
        try:
            attr = get_dataset_attr(name, info, dataset_dir)
        except DataError:
            continue
        if guess_kind(attr, DataArguments(dataset_dir=dataset_dir)) in accepted:
            names.append(name)
    return names


def preview_segments(cfg, num: int = 2) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The first `num` examples as the stage encodes them: (title, [(text, "trained" or None)]),
    consecutive tokens with the same mask decoded together (what `alignlab data preview` prints)."""
    from ..data import get_template
    from ..data.inspect import preview
    from ..model import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template, tokenizer, default_system=cfg.data.default_system,
                            enable_thinking=cfg.data.enable_thinking, tool_format=cfg.data.tool_format,
                            preserve_thinking=cfg.data.preserve_thinking)
    shown = []
    for i, item in enumerate(preview(cfg, tokenizer, template, num)):
        for prefix in [p.removesuffix("input_ids") for p in item if p.endswith("input_ids")]:
            ids, labels = item[f"{prefix}input_ids"], item[f"{prefix}labels"]
            segments: list[tuple[str, str | None]] = []
            if len(labels) != len(ids):  # a prompt (ppo/grpo): the labels are its reference answer
                segments = [(tokenizer.decode(ids, skip_special_tokens=False), None),
                            (tokenizer.decode(labels, skip_special_tokens=False), "reference")]
                ids = []
            start = 0
            for end in range(1, len(ids) + 1):
                if end == len(ids) or (labels[end] != -100) != (labels[start] != -100):
                    segments.append((tokenizer.decode(ids[start:end], skip_special_tokens=False),
                                     "trained" if labels[start] != -100 else None))
                    start = end
            title = f"example {i}" + (f" · {prefix.rstrip('_')}" if prefix else "") + f" · {len(ids)} tokens"
            shown.append((title, segments))
    return shown
