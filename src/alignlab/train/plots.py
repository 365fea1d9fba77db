"""Loss and metric curves as PNG files in the run directory."""

from __future__ import annotations

import math
from pathlib import Path

from .callbacks import read_log


def ema_weight(count: int) -> float:
    """The smoothing weight for `count` points: grows with the number of points (as LLaMA-Factory)."""
    return 1.8 * (1 / (1 + math.exp(-0.05 * count)) - 0.5)


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average (it lags the raw curve; the plots label it as an EMA)."""
    if weight is None:
        weight = ema_weight(len(values))
    out, last = [], values[0] if values else 0.0
    for v in values:
        last = last * weight + (1 - weight) * v
        out.append(last)
    return out


def plot_metrics(output_dir: str, keys: list[str]) -> list[str]:
    """Write `training_<key>.png` for each key that was logged; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_log(output_dir)
    written = []
    for key in keys:
        points = [(e["current_steps"], e[key]) for e in log if isinstance(e.get(key), (int, float))]
        if not points:
            continue
        steps, values = zip(*points)
        fig = plt.figure(figsize=(6, 4))
        plt.plot(steps, values, color="#1f77b4", alpha=0.4, marker="o" if len(values) < 20 else None,
                 label="logged")
        if len(values) > 1:
            plt.plot(steps, smooth(list(values)), color="#1f77b4",
                     label=f"EMA (weight {ema_weight(len(values)):.2f})")
        plt.title(f"{key} · {Path(output_dir).resolve().name}")
        plt.xlabel("step")
        plt.ylabel(key)
        plt.legend()
        name = "training_" + key.replace("/", "_") + ".png"
        fig.savefig(Path(output_dir) / name, format="png", dpi=100)
        plt.close(fig)
        written.append(name)
    return written
