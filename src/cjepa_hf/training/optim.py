"""The one AdamW builder: C-JEPA's parameter groups and the fused / foreach kernel choice, for the trainer and every other user.

Weight decay applies to matrices and conv kernels only, never to biases, norms and other 1-D
tensors nor to the predictor's mask token, as in I-JEPA (Assran et al., CVPR 2023), appendix;
the frozen target encoder (an EMA of the context encoder) has no optimizer state at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

ADAMW_IMPLEMENTATIONS = ("fused", "foreach")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: with weight decay (matrices, conv kernels) and without
    (biases, norms and other 1-D tensors, the mask token). The frozen target encoder is excluded.
    The first group is marked `apply_weight_decay`: the weight-decay schedule updates it."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or name.startswith("target_encoder."):
            continue
        if param.ndim <= 1 or name.endswith(".bias") or "mask_token" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "apply_weight_decay": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_weight_decay": False},
    ]


def build_adamw(params: Iterable[Any], implementation: str = "fused", **kwargs: Any) -> tuple[torch.optim.AdamW, str]:
    """`torch.optim.AdamW(params, **kwargs)` with the chosen kernel; returns (optimizer, kernel used).

    "fused": one fused kernel for all parameters (CUDA and, from torch 2.4, the CPU); where the
    device or dtype has none, torch raises a RuntimeError and the multi-tensor "foreach" kernel is
    used instead. "foreach": the multi-tensor kernels. Same gradients in, same weights out (test)."""
    if implementation not in ADAMW_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {ADAMW_IMPLEMENTATIONS}, got {implementation!r}")
    params = list(params)
    if implementation == "fused":
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs), "fused"
        except RuntimeError:  # torch's message: fused needs floating-point tensors on a supported device
            pass
    return torch.optim.AdamW(params, foreach=True, **kwargs), "foreach"


__all__ = ["ADAMW_IMPLEMENTATIONS", "build_adamw", "param_groups"]
