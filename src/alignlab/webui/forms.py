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
TOP_KEYS = ("stage", "model_name_or_path", "finetuning_type", "template", "dataset_dir", "dataset", "output_dir",
            "do_train")
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
