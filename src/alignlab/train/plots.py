"""Loss and metric curves as PNG files in the run directory."""

from __future__ import annotations

import math
from pathlib import Path

from .callbacks import read_log


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average; the weight grows with the number of points (as TensorBoard)."""
    if weight is None:
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
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
        plt.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        if len(values) > 1:
            plt.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        plt.title(f"{key} of {output_dir}")
        plt.xlabel("step")
        plt.ylabel(key)
        plt.legend()
        name = "training_" + key.replace("/", "_") + ".png"
        fig.savefig(Path(output_dir) / name, format="png", dpi=100)
        plt.close(fig)
        written.append(name)
    return written
