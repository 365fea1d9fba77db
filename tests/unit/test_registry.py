"""The registries: stages, key groups, the config writer and `cfg.for_model`."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import typing
from pathlib import Path

import pytest
import yaml

from alignlab.config import ConfigError, help_text, load_config
from alignlab.config.args import GROUPS, FinetuningArguments
from alignlab.config.parser import key_infos
from alignlab.config.stages import GROUP_TITLES, PREFERENCE_LOSSES, STAGES
from alignlab.data import STAGE_KIND

ROOT = Path(__file__).resolve().parents[2]


def test_every_stage_has_a_module_and_its_choices_come_from_the_registry():
    for stage in STAGES.values():
        assert callable(importlib.import_module(stage.module).run), stage.name
        assert STAGE_KIND[stage.name] == stage.data_kind
    hints = typing.get_type_hints(FinetuningArguments)
    assert typing.get_args(hints["stage"]) == tuple(STAGES)
    assert typing.get_args(hints["pref_loss"]) == tuple(PREFERENCE_LOSSES)
    with pytest.raises(ConfigError, match="not one of pt, sft, rm, dpo, kto, ppo, grpo"):
        load_config(["stage=sfft"])


def test_every_key_has_a_known_group_and_finetuning_keys_say_theirs():
    infos = key_infos()
    assert {i.group for i in infos.values()} <= set(GROUP_TITLES)
    for f in dataclasses.fields(FinetuningArguments):
        assert f.metadata.get("group") or f.name in ("stage", "finetuning_type", "pure_bf16"), f.name
    assert infos["lora_rank"].group == "lora" and infos["output_dir"].group == "output"
    assert infos["learning_rate"].group == "train" and infos["temperature"].group == "generation"
    assert infos["pref_loss"].choices == tuple(PREFERENCE_LOSSES)
    assert infos["pref_beta"].stages == ("dpo",) and infos["ppo_epochs"].stages == ("ppo", "grpo")
    assert infos["precompute_ref_logps"].stages == ("dpo", "kto")
    assert infos["compare_models"].stages == ()  # read by `alignlab compare`, no training stage


def _keys_listed(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.startswith("  ")}


def test_help_for_one_stage_lists_only_what_it_reads(capsys):
    dpo, grpo = _keys_listed(help_text(stage="dpo")), _keys_listed(help_text(stage="grpo"))
    assert {"pref_beta", "pref_loss", "ref_model", "lora_rank", "learning_rate"} <= dpo
    assert not {"grpo_group_size", "ppo_kl_coef", "reward_funcs", "kto_chosen_weight"} & dpo
    assert {"grpo_group_size", "advantage_estimator", "reward_funcs", "max_new_tokens"} <= grpo
    assert not {"pref_beta", "ppo_vf_coef"} & grpo
    from alignlab.cli import main

    assert main(["train", "--help", "stage=kto"]) == 0
    out = capsys.readouterr().out
    assert "keys read by stage kto" in out and "kto_chosen_weight" in out and "pref_loss" not in out


def _example_configs() -> list[Path]:
    files = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        text = path.read_text()
        if path.parent.name == "accelerate" or not text.startswith("# alignlab train"):
            continue
        if "deepspeed:" in text and importlib.util.find_spec("deepspeed") is None:
            continue
        files.append(path)
    return files


@pytest.mark.parametrize("path", _example_configs(), ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_to_yaml_round_trips_every_example(path, tmp_path):
    cfg = load_config([str(path)], with_training=True)
    written = tmp_path / "written.yaml"
    written.write_text(cfg.to_yaml())
    again = load_config([str(written)], with_training=True)
    assert again.plain() == cfg.plain()
    assert again.training.to_dict() == cfg.training.to_dict()
    assert again.finetuning == cfg.finetuning and again.data == cfg.data and again.model == cfg.model
    text = written.read_text()
    assert text.startswith("### model\n") and "### method\n" in text  # grouped as in --help
    assert yaml.safe_load(text) == cfg.plain()


def test_round_trip_reproduces_run_config(tmp_path):
    from alignlab.train.run import write_run_config

    cfg = load_config([str(ROOT / "examples" / "demo" / "dpo.yaml"), f"output_dir={tmp_path / 'a'}"],
                      with_training=True)
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    again = load_config([str(tmp_path / "c.yaml")], with_training=True)
    write_run_config(cfg, cfg.data.template)
    first = yaml.safe_load((tmp_path / "a" / "run_config.yaml").read_text())
    write_run_config(again, again.data.template)
    assert yaml.safe_load((tmp_path / "a" / "run_config.yaml").read_text()) == first  # keys grouped, same values


def test_for_model_changes_only_the_model_and_adapters():
    cfg = load_config([str(ROOT / "examples" / "demo" / "dpo.yaml")], with_training=True)
    other = cfg.for_model("saves/other", ["saves/a1", "saves/a2"])
    assert other.model.model_name_or_path == "saves/other"
    assert other.model.adapter_name_or_path == "saves/a1,saves/a2"
    assert other.finetuning == cfg.finetuning and other.data == cfg.data
    assert other.training.to_dict() == cfg.training.to_dict()
    bare = cfg.for_model("saves/other")
    assert bare.model.adapter_name_or_path is None
    assert cfg.model.model_name_or_path == "saves/demo/sft"  # the original is untouched


def test_estimator_must_match_its_stage():
    with pytest.raises(ConfigError, match="runs under `stage: grpo`"):
        load_config(["stage=ppo", "advantage_estimator=rloo"])
    with pytest.raises(ConfigError, match="runs under `stage: ppo`"):
        load_config(["stage=grpo", "advantage_estimator=gae"])
    assert load_config(["stage=grpo", "advantage_estimator=reinforce_pp"]).finetuning.advantage_estimator


def test_groups_cover_every_argument_class():
    assert all(cls.GROUP in GROUP_TITLES for cls in GROUPS)
