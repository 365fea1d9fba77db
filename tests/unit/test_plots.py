"""Curves read at a glance: titled with the run name (never an absolute path), the smoothed line
labelled as an EMA, and the RM eval curve has a point per evaluation during training."""

from __future__ import annotations

import json

from alignlab.train.plots import plot_metrics, smooth


def test_plot_title_names_the_run_and_labels_the_ema(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    run = tmp_path / "deep" / "my-run"
    run.mkdir(parents=True)
    rows = [{"current_steps": i, "loss": 2.0 / i} for i in range(1, 6)] + [{"current_steps": 5, "train_runtime": 1.0}]
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (seen.append(fig.axes[0]), original(fig, *a, **k)))
    assert plot_metrics(str(run), ["loss", "eval_loss"]) == ["training_loss.png"]
    (axes,) = seen
    assert axes.get_title() == "loss · my-run" and str(tmp_path) not in axes.get_title()
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels[0] == "logged" and labels[1].startswith("EMA (weight ")
    assert list(axes.get_lines()[0].get_ydata()) == [2.0 / i for i in range(1, 6)]


def test_ema_by_hand():
    assert smooth([1.0, 3.0, 3.0], weight=0.5) == [1.0, 2.0, 2.5]


def test_held_out_data_is_evaluated_during_training_by_default():
    from alignlab.config import load_config

    cfg = load_config(["model_name_or_path=m", "do_train=true", "val_size=0.1"], with_training=True)
    assert cfg.training.eval_strategy == "steps" and cfg.training.eval_steps == 0.1
    cfg = load_config(["model_name_or_path=m", "do_train=true", "val_size=0.1", "eval_strategy=no"], with_training=True)
    assert cfg.training.eval_strategy == "no"
    assert load_config(["model_name_or_path=m", "do_train=true"], with_training=True).training.eval_strategy == "no"
