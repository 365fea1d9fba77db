"""Read a YAML/JSON config plus `key=value` / `--key value` overrides into typed argument groups.

Unknown keys, wrong types and contradictory settings fail here, before any model or data is
touched, with a message that names the key and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..errors import UserError
from .args import (
    GROUPS,
    DataArguments,
    DatagenArguments,
    EvaluationArguments,
    FinetuningArguments,
    GeneratingArguments,
    ModelArguments,
    StudioArguments,
)
from .stages import ADVANTAGE_ESTIMATORS, STAGES

logger = logging.getLogger(__name__)


class ConfigError(ValueError, UserError):
    """A configuration problem the user must fix; the message says what, where and how."""


def split_list(value: str | list | None) -> list[str]:
    """A comma-separated key (`dataset`, `adapter_name_or_path`, `reward_funcs`, ...) as its items."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


@dataclass
class Config:
    model: ModelArguments
    data: DataArguments
    finetuning: FinetuningArguments
    generating: GeneratingArguments
    evaluation: EvaluationArguments
    datagen: DatagenArguments
    studio: StudioArguments
    training: Any | None  # transformers.Seq2SeqTrainingArguments, built only for `train`
    resolved: dict[str, Any]  # every key the user set, after overrides, typed
    sources: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> file or "the command line"

    def plain(self) -> dict[str, Any]:
        """The keys the user set, as plain YAML values (enums by their value)."""
        return {k: v.value if isinstance(v, enum.Enum) else v for k, v in self.resolved.items()}

    def to_yaml(self) -> str:
        """A config file that `alignlab train` reads back into this config: the keys the user set,
        under `### group` headings in `--help` order."""
        from .stages import GROUP_TITLES

        keys = known_keys(with_training=True)
        by_group: dict[str, dict[str, Any]] = {}
        for key, value in self.plain().items():
            by_group.setdefault(key_group(key, keys), {})[key] = value
        parts = []
        for group in sorted(by_group, key=list(GROUP_TITLES).index):
            body = yaml.safe_dump(by_group[group], allow_unicode=True, sort_keys=False, width=1000)
            parts.append(f"### {GROUP_TITLES[group]}\n{body}")
        return "\n".join(parts)

    def for_model(self, model: str, adapters: list[str] | None = None) -> Config:
        """This config with another model (and its adapters, or none): every other key as set."""
        values = self.plain()
        values.update(model_name_or_path=model, adapter_name_or_path=",".join(adapters) if adapters else None)
        return load_config([], with_training=self.training is not None, defaults=values)


def _training_class():
    from transformers import Seq2SeqTrainingArguments

    return Seq2SeqTrainingArguments


def _fields_of(cls) -> dict[str, tuple[Any, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls) if f.init}


def known_keys(with_training: bool = True) -> dict[str, tuple[type, Any, dataclasses.Field]]:
    """Map every accepted key to (group class, type, field)."""
    keys: dict[str, tuple[type, Any, dataclasses.Field]] = {}
    classes = list(GROUPS) + ([_training_class()] if with_training else [])
    for cls in classes:
        for name, (tp, f) in _fields_of(cls).items():
            keys.setdefault(name, (cls, tp, f))
    return keys


def key_group(key: str, keys: dict[str, tuple] | None = None) -> str:
    """The group a key belongs to (model, method, lora, ..., train); see config/stages.py GROUP_TITLES."""
    from .stages import OUTPUT_KEYS

    cls, _tp, f = (keys or known_keys(with_training=True))[key]
    if "group" in (f.metadata or {}):
        return f.metadata["group"]
    if cls in GROUPS:
        return cls.GROUP
    return "output" if key in OUTPUT_KEYS else "train"


@dataclass(frozen=True)
class KeyInfo:
    """What a page or `--help` needs to know of one key."""

    name: str
    group: str
    stages: tuple[str, ...]  # the training stages that read it (none: other commands only)
    type: Any
    default: Any
    help: str
    choices: tuple | None  # the allowed values of a choice key


def key_infos(with_training: bool = True) -> dict[str, KeyInfo]:
    """Every accepted key with its group, the stages reading it, type, default, help and choices."""
    from .stages import stages_reading

    keys = known_keys(with_training)
    infos = {}
    for name, (_cls, tp, f) in keys.items():
        group = key_group(name, keys)
        meta = f.metadata or {}
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        literal = next((a for a in (tp, *typing.get_args(tp)) if typing.get_origin(a) is Literal), None)
        infos[name] = KeyInfo(name, group, tuple(meta.get("stages") or stages_reading(group)), tp, default,
                              meta.get("help", ""), typing.get_args(literal) if literal is not None else None)
    return infos


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field's type; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, (str, bool)):  # transformers' `Union[SomeEnum, str]`: the enum decides
            return _coerce(key, value, enums[0])
        errors = []
        for arg in sorted(args, key=lambda a: a is str):  # try str last
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"`{key}`: cannot use {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(
            f"`{key}`: {value!r} is not one of {', '.join(map(str, choices))}."
        )
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"`{key}`: expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"`{key}`: expected an integer, got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"`{key}`: expected an integer, got {value!r}.") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"`{key}`: expected a number, got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"`{key}`: expected a number, got {value!r}.") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"`{key}`: expected text, got {value!r}.")
        return value if isinstance(value, str) else str(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = split_list(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"`{key}`: expected a list, got {value!r}.")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(key, v, item_tp) for v in value]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"`{key}`: expected a mapping or JSON object, got {value!r}.") from None
        if not isinstance(value, dict):
            raise ConfigError(f"`{key}`: expected a mapping, got {value!r}.")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # str enums of transformers
        if isinstance(value, bool):  # YAML 1.1 reads `save_strategy: no` as false
            value = "yes" if value else "no"
        try:
            return tp(value)
        except ValueError:
            choices = [str(m.value) for m in tp]
            raise ConfigError(f"`{key}`: {value!r} is not one of {', '.join(choices)}.") from None
    return value


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_argv(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """Split `[CFG] [k=v ...] [--k v ...]` into the config path and the overrides."""
    path = None
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            body = arg[2:]
            if "=" in body:
                key, text = body.split("=", 1)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                key, text = body, argv[i + 1]
                i += 1
            else:
                key, text = body, "true"
            overrides[key.replace("-", "_")] = _parse_scalar(text)
        elif "=" in arg:
            key, text = arg.split("=", 1)
            overrides[key] = _parse_scalar(text)
        elif path is None and Path(arg).suffix.lower() in (".yaml", ".yml", ".json"):
            path = arg
        else:
            raise ConfigError(
                f"Cannot read argument {arg!r}: expected a .yaml/.json config, key=value or --key value."
            )
        i += 1
    return path, overrides


def read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"Config file {path} is not valid {p.suffix[1:].upper()}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of keys to values.")
    return data


# Keys that transformers 5 renamed or dropped but LLaMA-Factory configs still use.
RENAMED = {"warmup_ratio": "warmup_steps", "evaluation_strategy": "eval_strategy", "no_cuda": "use_cpu",
           "add_special_tokens": "new_special_tokens"}  # LLaMA-Factory 0.9.5 renamed the last one
DROPPED = {"logging_dir": "transformers 5 writes TensorBoard logs under output_dir/runs",
           "save_safetensors": "transformers 5 always saves safetensors"}


def _translate_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if key in DROPPED:
            logger.warning("Ignoring `%s`: %s.", key, DROPPED[key])
            continue
        if key == "warmup_ratio" and value is not None and not 0 <= float(value) < 1:
            raise ConfigError("`warmup_ratio` must lie in [0, 1).")
        out[RENAMED.get(key, key)] = value
    return out


def _check_unknown(raw: dict[str, Any], keys: dict[str, Any], source: str) -> None:
    from .llamafactory import unsupported_reason

    for key in raw:
        if key not in keys and (reason := unsupported_reason(key)):
            raise ConfigError(f"`{key}` (in {source}) is a LLaMA-Factory key alignlab does not accept: {reason}. "
                              "Remove it; docs/config.md lists every LLaMA-Factory key and its status here.")
        if key not in keys:
            close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(f"Unknown config key `{key}` (in {source}).{hint} "
                              "Run `alignlab train --help` for the list of keys.")


# key -> (test of the value, the allowed range in words); checked before anything loads.
RANGES = {
    "cutoff_len": (lambda v: v > 0, "a positive number of tokens"),
    "max_samples": (lambda v: v is None or v > 0, "a positive number of rows (or unset for all)"),
    "lora_rank": (lambda v: v >= 1, "an integer >= 1"),
    "lora_alpha": (lambda v: v is None or v > 0, "a positive number"),
    "lora_dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "pref_beta": (lambda v: v > 0, "a number > 0"),
    "pref_ftx": (lambda v: v >= 0, "a number >= 0"),
    "kto_chosen_weight": (lambda v: v >= 0, "a number >= 0"),
    "kto_rejected_weight": (lambda v: v >= 0, "a number >= 0"),
    "ppo_epochs": (lambda v: v >= 1, "an integer >= 1"),
    "ppo_buffer_size": (lambda v: v >= 1, "an integer >= 1"),
    "grpo_group_size": (lambda v: v >= 2, "an integer >= 2 (advantages compare samples of one prompt)"),
    "num_candidates": (lambda v: 2 <= v <= 4, "an integer from 2 to 4"),
    "rm_min_accuracy": (lambda v: 0 <= v <= 1, "a fraction from 0 to 1 (0.85 is 85%)"),
    "max_resamples": (lambda v: v >= 0, "an integer >= 0"),
    "per_device_train_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "an integer >= 1"),
    "learning_rate": (lambda v: v >= 0, "a number >= 0"),
    "num_train_epochs": (lambda v: v >= 0, "a number >= 0"),
    "max_new_tokens": (lambda v: v >= 1, "an integer >= 1"),
    "temperature": (lambda v: v >= 0, "a number >= 0"),
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
}


def _bad_value(key: str, value: Any, allowed: str, sources: dict[str, str]) -> ConfigError:
    where = sources.get(key)
    return ConfigError(f"`{key}: {value}`{f' (in {where})' if where else ''} is out of range: use {allowed}.")


def _check_ranges(values: dict[str, Any], sources: dict[str, str]) -> None:
    for key, (ok, allowed) in RANGES.items():
        if key in values and not ok(values[key]):
            raise _bad_value(key, values[key], allowed, sources)


def _check_training(cfg: Config) -> None:
    t = cfg.training
    if t is None:
        return
    if t.do_train and t.max_steps <= 0 and t.num_train_epochs <= 0:
        raise _bad_value("num_train_epochs", t.num_train_epochs, "a number > 0, or set `max_steps`", cfg.sources)
    out = Path(t.output_dir)
    existing = next((p for p in [out, *out.parents] if p.exists()), None)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"`output_dir` {out} is a file, not a folder: choose another `output_dir`.")
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        raise ConfigError(f"`output_dir` {out} cannot be created or written ({existing} is "
                          f"{'a file' if not existing.is_dir() else 'not writable'}): choose another `output_dir`.")


def validate(cfg: Config) -> None:
    """Cross-argument checks and derived defaults (LLaMA-Factory's rules where it has them)."""
    m, d, f = cfg.model, cfg.data, cfg.finetuning
    _check_ranges({k: getattr(g, k) for g in (m, d, f, cfg.generating) for k in RANGES if hasattr(g, k)},
                  cfg.sources)
    _check_training(cfg)
    if m.quantization_bit is not None:
        if m.quantization_bit not in (4, 8):
            raise ConfigError("`quantization_bit` must be 4 or 8.")
        if f.finetuning_type != "lora":
            raise ConfigError("`quantization_bit` needs `finetuning_type: lora` (QLoRA); "
                              "quantised weights cannot be trained fully or frozen-partially.")
    if d.mask_history and d.train_on_prompt:
        raise ConfigError("`mask_history` and `train_on_prompt` contradict each other: "
                          "set only one of them.")
    if d.val_size and d.eval_dataset:
        raise ConfigError("Set either `val_size` (split the training data) or `eval_dataset`, "
                          "not both.")
    if d.val_size < 0 or (d.val_size >= 1 and not float(d.val_size).is_integer()):
        raise ConfigError("`val_size` must be a fraction in (0, 1) or a whole number of examples.")
    if d.cutoff_len <= 0:
        raise ConfigError("`cutoff_len` must be positive.")
    if d.interleave_probs and d.mix_strategy == "concat":
        raise ConfigError("`interleave_probs` needs `mix_strategy: interleave_under` or "
                          "`interleave_over`.")
    if d.neat_packing:
        d.packing = True
    if d.packing is None:
        d.packing = f.stage == "pt"
    if d.packing and STAGES[f.stage].data_kind not in ("pt", "sft"):
        *first, last = [s.name for s in STAGES.values() if s.data_kind in ("pt", "sft")]
        packable = f"{', '.join(first)} and {last}" if first else last
        raise ConfigError(f"`packing` works for stages {packable}, not `{f.stage}`.")
    estimator = cfg.resolved.get("advantage_estimator")
    if estimator and ADVANTAGE_ESTIMATORS[estimator] != f.stage and STAGES[f.stage].online:
        raise ConfigError(f"`advantage_estimator: {estimator}` runs under `stage: {ADVANTAGE_ESTIMATORS[estimator]}`, "
                          f"not `{f.stage}`: set `stage: {ADVANTAGE_ESTIMATORS[estimator]}` or another estimator.")
    if f.lora_alpha is None:
        f.lora_alpha = 2 * f.lora_rank
    if f.finetuning_type != "lora" and (m.adapter_name_or_path or f.use_dora or f.pissa_init):
        raise ConfigError("`adapter_name_or_path`, `use_dora` and `pissa_init` need "
                          "`finetuning_type: lora`.")
    if m.train_from_scratch and f.finetuning_type != "full":
        raise ConfigError("`train_from_scratch` needs `finetuning_type: full`: a randomly initialised base "
                          "is not saved with a LoRA adapter or frozen layers, so the result could not be "
                          "loaded again.")
    if not 0 <= f.dpo_label_smoothing <= 0.5:
        raise ConfigError("`dpo_label_smoothing` must lie in [0, 0.5].")


def load_config(argv: list[str], with_training: bool = False, defaults: dict | None = None) -> Config:
    """Parse `[CFG] [k=v ...] [--k v ...]` into a validated Config.

    with_training: also build `transformers.Seq2SeqTrainingArguments` (the `train` command).
    defaults: keys applied before the file (e.g. a run's saved config for `chat`).
    """
    path, overrides = split_argv(argv)
    keys = known_keys(with_training=True)
    raw: dict[str, Any] = _translate_legacy(dict(defaults or {}))  # LLaMA-Factory's names, as in a file
    _check_unknown(raw, keys, "the given settings")  # a misspelt key is a ConfigError, not a KeyError
    sources: dict[str, str] = {}
    if path:
        from_file = _translate_legacy(read_config_file(path))
        _check_unknown(from_file, keys, path)
        raw.update(from_file)
        sources.update(dict.fromkeys(from_file, path))
    overrides = _translate_legacy(overrides)
    _check_unknown(overrides, keys, "command-line overrides")
    raw.update(overrides)
    sources.update(dict.fromkeys(overrides, "the command line"))

    typed: dict[str, Any] = {}
    for key, value in raw.items():
        typed[key] = _coerce(key, value, keys[key][1])

    groups = {}
    for cls in GROUPS:
        names = _fields_of(cls)
        groups[cls] = cls(**{k: v for k, v in typed.items() if k in names})
    training = None
    _check_ranges(typed, sources)  # before transformers sees them (GA 0 is a ZeroDivisionError there)
    if with_training:
        cls = _training_class()
        names = _fields_of(cls)
        kwargs = {k: v for k, v in typed.items() if k in names}
        kwargs.setdefault("output_dir", "saves/run")
        if (typed.get("val_size") or typed.get("eval_dataset")) and "eval_strategy" not in kwargs \
                and kwargs.get("do_train"):
            # a held-out set is evaluated during training (10 times), so eval curves have points to draw
            kwargs.update(eval_strategy="steps", eval_steps=kwargs.get("eval_steps") or 0.1)
        import torch

        if not torch.cuda.is_available() and not torch.backends.mps.is_available():
            kwargs.setdefault("use_cpu", True)  # lets GPU-minded configs (bf16: true) run here unchanged
            for key in ("bf16", "fp16"):
                if kwargs.get(key):
                    # measured: bf16 autocast trains ~11x slower than float32 on these CPUs
                    logger.warning("`%s: true` needs a GPU; training in float32 on this CPU-only machine.", key)
                    kwargs[key] = False
        if kwargs.get("deepspeed"):
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                raise ConfigError("`deepspeed` is set but DeepSpeed is not installed: pip install "
                                  "'alignlab[deepspeed]' (GPU), or remove the key to train without it.")
            if isinstance(kwargs["deepspeed"], str) and not Path(kwargs["deepspeed"]).is_file():
                raise ConfigError(f"`deepspeed` config file {kwargs['deepspeed']} does not exist.")
        try:
            training = cls(**kwargs)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"Training arguments rejected: {e}") from None
    cfg = Config(
        model=groups[ModelArguments],
        data=groups[DataArguments],
        finetuning=groups[FinetuningArguments],
        generating=groups[GeneratingArguments],
        evaluation=groups[EvaluationArguments],
        datagen=groups[DatagenArguments],
        studio=groups[StudioArguments],
        training=training,
        resolved=typed,
        sources=sources,
    )
    validate(cfg)
    _warn_no_effect(typed, keys)
    return cfg


def _warn_no_effect(typed: dict[str, Any], keys: dict[str, tuple]) -> None:
    """One warning per key that is accepted for LLaMA-Factory compatibility but changes nothing here."""
    for key, value in typed.items():
        _cls, _tp, f = keys[key]
        reason = (f.metadata or {}).get("no_effect")
        if reason and value != f.default:
            logger.warning("`%s` is accepted for LLaMA-Factory compatibility and has no effect: %s.", key, reason)


def help_text(with_training: bool = True, stage: str | None = None) -> str:
    """Every key under its group with type, default and help, for `--help`; with `stage`, only the
    keys that stage reads."""
    from .stages import GROUP_TITLES

    by_group: dict[str, list[KeyInfo]] = {}
    for info in key_infos(with_training).values():
        if stage is None or stage in info.stages:
            by_group.setdefault(info.group, []).append(info)
    lines = [f"keys read by stage {stage}:" if stage else "keys:"]
    for group in sorted(by_group, key=list(GROUP_TITLES).index):
        lines.append(f"\n[{GROUP_TITLES[group]}]")
        for info in by_group[group]:
            lines.append(f"  {info.name} (default {info.default!r}): {info.help.splitlines()[0] if info.help else ''}")
    return "\n".join(lines)
