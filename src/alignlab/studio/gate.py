"""The reward model's acceptance gate: does its held-out accuracy reach the bar, and if not, about
how many more items should people annotate before training it again.

The estimate comes from the trend of earlier runs (accuracy = a + b ln(items), least squares)
when there is one, else from a fixed rule; either way it is clamped to 20..50 items, a batch a
person can annotate in one sitting.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

MIN_MORE_ITEMS, MAX_MORE_ITEMS = 20, 50


class GateError(ValueError, UserError):
    """A reward model run whose results cannot be read."""


@dataclass(frozen=True)
class Gate:
    """The verdict on one reward model run.

    more_items: items to annotate before training again (0 when passed or without accuracy);
    estimated_from: "trend", "rule", or "" when nothing was estimated.
    """

    accuracy: float | None
    min_accuracy: float
    passed: bool
    more_items: int
    message: str
    estimated_from: str


def _clamped_items(items: float) -> int:
    """Whole items, rounded up (after dropping float noise below 1e-9), clamped to 20..50."""
    return min(max(math.ceil(round(items, 9)), MIN_MORE_ITEMS), MAX_MORE_ITEMS)


def more_items_rule(accuracy: float, min_accuracy: float) -> int:
    """clamp(ceil(20 + 120 * (min_accuracy - accuracy)), 20, 50): 20 items at the bar, 12 more
    per 0.1 of accuracy missing, 50 from a gap of 0.25 on."""
    return _clamped_items(20 + 120 * (min_accuracy - accuracy))


def more_items_from_trend(history: list[tuple[int, float]], min_accuracy: float) -> int | None:
    """Items still to annotate, from a least-squares fit accuracy = a + b ln(items) of earlier runs.

    history: (annotated items, held-out accuracy) of earlier reward model runs, in the order they
    ran; the last one is the latest. Needs two distinct sizes and a rising fit (b > 0), else None.
    The answer is exp((min_accuracy - a) / b) - latest items, clamped to 20..50.
    """
    points = [(math.log(items), accuracy) for items, accuracy in history
              if items > 0 and accuracy is not None and math.isfinite(accuracy)]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / sum((x - mean_x) ** 2 for x, _ in points))
    if slope <= 0:
        return None
    log_items_needed = mean_x + (min_accuracy - mean_y) / slope  # (min_accuracy - a) / b
    if log_items_needed > 700:  # beyond float range: far more than the clamp allows
        return MAX_MORE_ITEMS
    return _clamped_items(math.exp(log_items_needed) - history[-1][0])


def pair_text(accuracy: float, min_accuracy: float) -> tuple[str, str]:
    """Both numbers with two decimals, or more where two would make unequal numbers look equal."""
    for decimals in (2, 3, 4):
        shown = f"{accuracy:.{decimals}f}", f"{min_accuracy:.{decimals}f}"
        if shown[0] != shown[1] or accuracy == min_accuracy:
            break
    return shown


def rm_gate(run_dir, min_accuracy: float, history: list[tuple[int, float]] = ()) -> Gate:
    """Read `eval_accuracy` from run_dir/all_results.json and judge it against min_accuracy.

    history: as in `more_items_from_trend` (include this run as the last entry to use it in the
    trend); without a usable trend the rule estimates the items.
    """
    results_path = Path(run_dir) / "all_results.json"
    results = {}
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GateError(f"{results_path} is not valid JSON ({e}); train the reward model "
                            f"again to rewrite it.") from e
    accuracy = results.get("eval_accuracy") if isinstance(results, dict) else None
    if (isinstance(accuracy, bool) or not isinstance(accuracy, int | float)
            or not math.isfinite(accuracy)):
        return Gate(None, min_accuracy, False, 0,
                    f"The reward model run has no held-out accuracy yet (no eval_accuracy in "
                    f"{results_path}): set `val_size` so the rm stage evaluates, then train it "
                    f"again.", "")
    accuracy = float(accuracy)
    shown, bar = pair_text(accuracy, min_accuracy)
    if accuracy >= min_accuracy:
        return Gate(accuracy, min_accuracy, True, 0,
                    f"Held-out accuracy {shown} ≥ {bar}: the reward model passes the gate.", "")
    more_items = more_items_from_trend(list(history), min_accuracy)
    estimated_from = "trend"
    if more_items is None:
        more_items, estimated_from = more_items_rule(accuracy, min_accuracy), "rule"
    return Gate(accuracy, min_accuracy, False, more_items,
                f"Held-out accuracy {shown} is below {bar}: annotate about {more_items} more "
                f"items, then train the reward model again.", estimated_from)
