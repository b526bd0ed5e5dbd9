"""Training curves as a PNG: loss terms, schedules, collapse monitors and online evaluation."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from transformers import TrainerCallback

_LOSS_TERMS = (
    ("vicreg_invariance", "VICReg invariance"),
    ("vicreg_variance", "VICReg variance"),
    ("vicreg_covariance", "VICReg covariance"),
    ("encoder_variance", "encoder variance"),
    ("encoder_covariance", "encoder covariance"),
)


def plot_training_curves(log_history: Sequence[dict], path: str | os.PathLike, title: str = "pretraining") -> str:
    """Write `training_figure(log_history)` to `path` (PNG) and return the path."""
    import matplotlib.pyplot as plt

    fig = training_figure(log_history, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.fspath(path)


def training_figure(log_history: Sequence[dict], title: str = "pretraining"):
    """A 2x3 matplotlib figure from `trainer.state.log_history`: total and JEPA loss; the
    regularisers' unweighted terms; LR, weight decay and EMA momentum; the target features'
    effective rank; their std; online k-NN and linear-probe accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [h for h in log_history if "jepa_loss" in h]
    if not logs:
        raise ValueError("log_history has no training logs with 'jepa_loss': was logging_steps larger than the run?")

    def series(key: str, source: Sequence[dict] = logs) -> tuple[list[int], list[float]]:
        points = [(h["step"], h[key]) for h in source if key in h and h[key] is not None and math.isfinite(h[key])]
        return ([p[0] for p in points], [p[1] for p in points]) if points else ([], [])

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    ax = axes[0, 0]
    for key, label in (("loss", "total"), ("jepa_loss", "JEPA")):
        ax.plot(*series(key), label=label)
    ax.set_yscale("log")
    ax.set_title("loss")
    ax.legend()

    ax = axes[0, 1]
    for key, label in _LOSS_TERMS:
        steps, values = series(key)
        if steps and all(v > 0 for v in values):
            ax.plot(steps, values, label=label)
    ax.set_title("regulariser terms (unweighted)")
    if ax.lines:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no VICReg term in this run", ha="center", va="center", transform=ax.transAxes)

    ax = axes[0, 2]
    ax.plot(*series("learning_rate"), color="tab:blue", label="learning rate")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    twin = ax.twinx()
    twin.plot(*series("weight_decay"), color="tab:orange", label="weight decay")
    steps, momentum = series("ema_momentum")
    twin.plot(steps, momentum, color="tab:green", label="EMA momentum")
    twin.set_ylabel("weight decay, EMA momentum")
    twin.set_ylim(0, 1.05)
    ax.set_title("schedules")
    handles = ax.get_lines() + twin.get_lines()
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")

    ax = axes[1, 0]
    ax.plot(*series("target_effective_rank"), label="raw")
    ax.plot(*series("target_effective_rank_centered"), label="centred")
    ax.set_title("target effective rank (RankMe, training batch)")
    ax.legend()

    ax = axes[1, 1]
    ax.plot(*series("target_feature_std"))
    ax.set_title("target feature std (L2-normalised, mean over dims)")

    ax = axes[1, 2]
    evals = [h for h in log_history if "eval_knn_top1" in h]
    for key, label, source in (
        ("eval_knn_top1", "k-NN monitor", evals),
        ("eval_linear_top1", "online probe (eval set)", evals),
        ("online_linear_top1", "online probe (training batches)", logs),
    ):
        steps, values = series(key, source)
        if steps:
            ax.plot(steps, [100 * v for v in values], marker="o" if len(steps) < 25 else None, label=label)
    ax.set_title("online evaluation (top-1 %)")
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no labels: no online evaluation", ha="center", va="center", transform=ax.transAxes)

    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class CurvesCallback(TrainerCallback):
    """Rewrites output_dir/training_curves.png at every checkpoint (main process only), so a
    long run can be watched, and a killed one still has its curves."""

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and any("jepa_loss" in h for h in state.log_history):
            title = f"pretraining: {model.config.objective}" if model is not None else "pretraining"
            plot_training_curves(state.log_history, os.path.join(args.output_dir, "training_curves.png"), title=title)


__all__ = ["CurvesCallback", "plot_training_curves", "training_figure"]
