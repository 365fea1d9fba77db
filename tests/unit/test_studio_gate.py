"""The reward-model gate: the rule's endpoints and clamping, the log-linear trend on exact data
computed by hand, and the verdict read from all_results.json."""

from __future__ import annotations

import json
import math

import pytest

from alignlab.studio.gate import Gate, more_items_from_trend, more_items_rule, rm_gate


def exact_trend(*sizes: int) -> list[tuple[int, float]]:
    """Runs lying exactly on accuracy = 0.5 + 0.05 ln(items)."""
    return [(n, 0.5 + 0.05 * math.log(n)) for n in sizes]


def write_results(run_dir, results: dict) -> None:
    (run_dir / "all_results.json").write_text(json.dumps(results))


def test_rule_endpoints_and_clamping():
    assert more_items_rule(0.85, 0.85) == 20  # at the bar: 20
    assert more_items_rule(0.60, 0.85) == 50  # gap 0.25: 20 + 30 = 50
    assert more_items_rule(0.75, 0.85) == 32  # gap 0.1: 20 + 12
    assert more_items_rule(0.78, 0.85) == 29  # gap 0.07: ceil(28.4)
    assert more_items_rule(0.70, 0.80) == 32  # 20 + 120 * 0.1 is 32.000000000000014 in floats
    assert more_items_rule(0.30, 0.85) == 50  # clamped high
    assert more_items_rule(0.95, 0.85) == 20  # clamped low


def test_trend_on_exact_log_linear_data():
    # a = 0.5, b = 0.05; items needed = exp((min - 0.5) / 0.05) - 200 (latest run)
    history = exact_trend(50, 100, 200)
    assert more_items_from_trend(history, 0.775) == 45  # exp(5.5) = 244.69 -> 44.69 -> 45
    assert more_items_from_trend(history, 0.77) == 22  # exp(5.4) = 221.41 -> 21.41 -> 22
    assert more_items_from_trend(history, 0.78) == 50  # exp(5.6) = 270.43 -> 70.43, clamped
    assert more_items_from_trend(history, 0.765) == 20  # exp(5.3) = 200.34 -> 0.34, clamped
    assert more_items_from_trend(history, 5.0) == 50  # beyond float range, clamped
    # the latest run is the last entry
    assert more_items_from_trend(exact_trend(200, 100), 0.775) == 50  # 244.69 - 100, clamped


def test_trend_that_cannot_be_estimated_is_none():
    assert more_items_from_trend([], 0.8) is None
    assert more_items_from_trend(exact_trend(100), 0.8) is None  # one run
    assert more_items_from_trend([(100, 0.6), (100, 0.7)], 0.8) is None  # one size
    assert more_items_from_trend([(100, 0.7), (200, 0.6)], 0.8) is None  # falling
    assert more_items_from_trend([(100, 0.7), (200, 0.7)], 0.8) is None  # flat


def test_gate_passes(tmp_path):
    write_results(tmp_path, {"eval_accuracy": 0.91, "eval_loss": 0.3})
    assert rm_gate(tmp_path, 0.85) == Gate(
        0.91, 0.85, True, 0, "Held-out accuracy 0.91 ≥ 0.85: the reward model passes the gate.",
        "")


def test_gate_fails_with_the_rule_or_the_trend(tmp_path):
    write_results(tmp_path, {"eval_accuracy": 0.78})
    gate = rm_gate(tmp_path, 0.85)
    assert (gate.passed, gate.accuracy, gate.more_items) == (False, 0.78, 29)
    assert gate.estimated_from == "rule"
    assert gate.message == ("Held-out accuracy 0.78 is below 0.85: annotate about 29 more items, "
                            "then train the reward model again.")
    assert rm_gate(tmp_path, 0.85, exact_trend(100)).estimated_from == "rule"  # one run: no trend

    history = exact_trend(50, 100, 200)
    write_results(tmp_path, {"eval_accuracy": history[-1][1]})
    gate = rm_gate(tmp_path, 0.775, history)
    assert (gate.passed, gate.more_items, gate.estimated_from) == (False, 45, "trend")
    assert "annotate about 45 more items" in gate.message


def test_gate_shows_enough_decimals_to_tell_the_numbers_apart(tmp_path):
    write_results(tmp_path, {"eval_accuracy": 0.849})
    assert rm_gate(tmp_path, 0.85).message.startswith("Held-out accuracy 0.849 is below 0.850:")


@pytest.mark.parametrize("results", [None, {"eval_loss": 0.4}, {"eval_accuracy": None}])
def test_gate_without_held_out_accuracy(tmp_path, results):
    if results is not None:
        write_results(tmp_path, results)
    gate = rm_gate(tmp_path, 0.85)
    assert (gate.accuracy, gate.passed, gate.more_items) == (None, False, 0)
    assert gate.estimated_from == ""
    assert gate.message.startswith("The reward model run has no held-out accuracy yet")
    assert "set `val_size`" in gate.message


def test_gate_on_unreadable_results_names_the_file(tmp_path):
    (tmp_path / "all_results.json").write_text("{not json")
    with pytest.raises(ValueError, match="all_results.json is not valid JSON"):
        rm_gate(tmp_path, 0.85)


def test_ppo_refuses_a_reward_model_under_the_gate_unless_overridden(tmp_path):
    """stage ppo/grpo reads the rm run's all_results.json: rm_ready false stops the run before any model
    loads, naming the accuracy and the override; `rm_gate_override: true` lets it start (and the run
    config records it, as every key the user set)."""
    import pytest

    from alignlab.config import ConfigError, load_config
    from alignlab.train.rewards import check_reward_source

    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "all_results.json").write_text(json.dumps({"eval_accuracy": 0.7, "rm_ready": False}))
    keys = ["stage=ppo", "model_name_or_path=m", f"reward_model={rm}", "reward_model_type=full",
            f"output_dir={tmp_path / 'ppo'}"]
    with pytest.raises(ConfigError, match=r"0\.700.*rm_gate_override: true"):
        check_reward_source(load_config(keys, with_training=True))
    cfg = load_config([*keys, "rm_gate_override=true"], with_training=True)
    check_reward_source(cfg)
    assert cfg.resolved["rm_gate_override"] is True
    (rm / "all_results.json").write_text(json.dumps({"eval_accuracy": 0.9, "rm_ready": True}))
    check_reward_source(load_config(keys, with_training=True))
