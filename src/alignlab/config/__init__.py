"""Typed configuration: LLaMA-Factory key names, YAML/JSON files, key=value and --key overrides."""

from .args import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
from .parser import Config, ConfigError, help_text, load_config, split_list

__all__ = [
    "Config",
    "ConfigError",
    "DataArguments",
    "FinetuningArguments",
    "GeneratingArguments",
    "ModelArguments",
    "help_text",
    "load_config",
    "split_list",
]
