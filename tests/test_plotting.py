"""Training curves: every panel readable, schedules shown, rewritten at every save."""

import math

import matplotlib.pyplot as plt
import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from cjepa_hf.plotting import CurvesCallback, plot_training_curves, training_figure


def _history(steps=40):
    logs = []
    for s in range(1, steps + 1):
        logs.append(
            {
                "step": s,
                "loss": 2.0 / s**0.3,
                "jepa_loss": 1.0 / s**0.3,
                "vicreg_invariance": 0.05 / s,
                "vicreg_variance": 0.9 - 0.02 * s,
                "vicreg_covariance": 0.001 * s,
                "encoder_variance": 0.5 / s,
                "encoder_covariance": 3.0 / s,
                "learning_rate": 1e-3 * min(1, s / 5) * (0.5 + 0.5 * math.cos(math.pi * s / steps)),
                "weight_decay": 0.04 + 0.36 * s / steps,
                "ema_momentum": 0.996 + 0.004 * s / steps,
                "target_effective_rank": 2 + s / 4,
                "target_effective_rank_centered": 5 + s / 3,
                "target_feature_std": 0.01 * s,
                "online_linear_top1": min(0.8, 0.1 + s / 50),
            }
        )
        if s % 10 == 0:
            logs.append({"step": s, "eval_knn_top1": 0.4 + s / 200, "eval_linear_top1": 0.3 + s / 150, "eval_runtime": 1.0})
    return logs


def _visible_ticks(ax):
    lo, hi = sorted(ax.get_ylim())
    return [t for t in ax.get_yticks() if lo <= t <= hi]


def test_every_panel_is_readable():
    fig = training_figure(_history())
    fig.canvas.draw()
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    terms = axes["regulariser terms (unweighted)"]
    assert terms.get_yscale() == "log" and len(terms.get_lines()) == 5
    assert len(_visible_ticks(terms)) >= 2  # a log axis with labelled decades, not one tick
    schedules = axes["schedules"]
    twin = [ax for ax in fig.axes if ax is not schedules and ax.bbox.bounds == schedules.bbox.bounds][0]
    assert [line.get_label() for line in schedules.get_lines() + twin.get_lines()] == ["learning rate", "weight decay", "EMA momentum"]
    online = axes["online evaluation (top-1 %)"]
    assert [line.get_label() for line in online.get_lines()] == [
        "k-NN monitor",
        "online probe (eval set)",
        "online probe (training batches)",
    ]
    assert list(online.get_lines()[0].get_xdata()) == [10, 20, 30, 40]
    plt.close(fig)


def test_curves_are_written_at_every_save(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    state = TrainerState()
    state.log_history = _history(12)
    CurvesCallback().on_save(args, state, TrainerControl())
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no training logs"):
        plot_training_curves([{"step": 1, "eval_knn_top1": 0.5}], tmp_path / "x.png")
