"""The C-JEPA schedules (I-JEPA (Assran et al., CVPR 2023), appendix; C-JEPA (Mo & Tong, NeurIPS 2024)): pure functions of the step.

Per optimizer step:
  - learning rate: linear warmup start_lr -> peak_lr over warmup_steps, then cosine to final_lr;
  - weight decay: start -> final over the run, a cosine ramp (the I-JEPA code) or linear (the
    paper's text);
  - EMA momentum of the target encoder: start -> final, linearly over the run.
Every value is a function of the global step alone, so resuming is exact by construction.
"""

from __future__ import annotations

import math

WEIGHT_DECAY_SCHEDULES = ("cosine", "linear")


def lr_at(step: int, total_steps: int, warmup_steps: int, start_lr: float, peak_lr: float, final_lr: float) -> float:
    """Linear warmup start_lr -> peak_lr over warmup_steps, then cosine peak_lr -> final_lr at total_steps."""
    if step < warmup_steps:
        return start_lr + (peak_lr - start_lr) * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return final_lr + (peak_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def weight_decay_at(step: int, total_steps: int, start: float, final: float, schedule: str = "cosine") -> float:
    """start -> final over the run: cosine ramp (I-JEPA code) or linear (the paper's text)."""
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return start + (final - start) * progress
    raise ValueError(f"schedule must be one of {WEIGHT_DECAY_SCHEDULES}, got {schedule!r}")


def momentum_at(step: int, total_steps: int, start: float = 0.996, final: float = 1.0) -> float:
    """EMA momentum rising linearly start -> final over the run."""
    return start + (final - start) * min(step / max(total_steps, 1), 1.0)


__all__ = ["WEIGHT_DECAY_SCHEDULES", "lr_at", "momentum_at", "weight_decay_at"]
