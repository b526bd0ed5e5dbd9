"""Training curves as a PNG: the loss components and the collapse monitors from a Trainer log."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence


def plot_training_curves(log_history: Sequence[dict], path: str | os.PathLike, title: str = "C-JEPA pretraining") -> str:
    """Write a 2x2 figure (total and JEPA loss; VICReg terms; target feature std; effective rank)
    from `trainer.state.log_history` to `path` (PNG). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [h for h in log_history if "jepa_loss" in h]
    if not logs:
        raise ValueError("log_history has no training logs with 'jepa_loss': was logging_steps larger than the run?")
    steps = [h["step"] for h in logs]

    def series(key: str) -> list[float]:
        return [h.get(key, math.nan) for h in logs]

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    ax.plot(steps, series("loss"), label="total")
    ax.plot(steps, series("jepa_loss"), label="JEPA")
    ax.set_title("loss")
    ax.legend()
    ax = axes[0, 1]
    for key, label in (("vicreg_invariance", "invariance"), ("vicreg_variance", "variance"), ("vicreg_covariance", "covariance")):
        if any(key in h for h in logs):
            ax.plot(steps, series(key), label=label)
    ax.set_title("VICReg terms (unweighted)")
    ax.set_yscale("symlog", linthresh=1e-3)
    if ax.lines:
        ax.legend()
    axes[1, 0].plot(steps, series("target_feature_std"))
    axes[1, 0].set_title("target feature std (L2-normalised, mean over dims)")
    axes[1, 1].plot(steps, series("target_effective_rank"), label="raw")
    if any("target_effective_rank_centered" in h for h in logs):
        axes[1, 1].plot(steps, series("target_effective_rank_centered"), label="centred")
        axes[1, 1].legend()
    axes[1, 1].set_title("target effective rank (RankMe)")
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.fspath(path)
