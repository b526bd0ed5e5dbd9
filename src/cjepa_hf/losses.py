"""The C-JEPA objective as pure functions (Mo & Tong, NeurIPS 2024: the method section and Algorithm 1), plus collapse monitors.

Shapes use B = batch, M = target blocks, K = patches per block, D = feature size.

VICReg conventions follow the official code: variance with eps 1e-4, the two
branches averaged; covariance divided by (N - 1) and by D; invariance computed on
the local batch; variance and covariance on the batch gathered from all processes
when `gather_distributed=True` (the gather's backward sums the gradients over
processes and returns this process's slice, so that DDP's gradient averaging gives
exactly the single-process gradient of the global batch).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32 for the VICReg statistics; fp32 and fp64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# ----------------------------------------------------------------------------- distributed


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process holds dL/d(global batch); sum them
        return grad.chunk(dist.get_world_size(), dim=0)[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather `x` (N, ...) along dim 0 -> (world * N, ...), keeping gradients.

    Identity when torch.distributed is not initialised or has one process. Every
    process must pass the same shape."""
    if _world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


# ----------------------------------------------------------------------------- JEPA


def jepa_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l2", beta: float = 1.0) -> torch.Tensor:
    """Regression of predicted onto target patch features, averaged over every element.

    prediction, target: (B, M, K, D). kind "l2": mean squared error (the paper);
    "smooth_l1": the I-JEPA code's smooth-L1 with `beta`.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have the same shape, got {tuple(prediction.shape)} and {tuple(target.shape)}")
    target = target.to(prediction.dtype)
    if kind == "l2":
        return F.mse_loss(prediction, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=beta)
    raise ValueError(f"kind must be 'l2' or 'smooth_l1', got {kind!r}")


# ----------------------------------------------------------------------------- VICReg terms


def invariance_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between paired vectors. x, y: (N, D)."""
    return F.mse_loss(x, y)


def variance_loss(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dimension standard deviation. x: (N, D) -> scalar.

    mean_j relu(1 - sqrt(Var_N(x_j) + eps)), Var with the (N - 1) denominator."""
    if x.shape[0] < 2:
        raise ValueError(f"variance_loss needs at least 2 samples, got x of shape {tuple(x.shape)}")
    std = torch.sqrt(x.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariance entries divided by D. x: (N, D) -> scalar."""
    n, d = x.shape
    if n < 2:
        raise ValueError(f"covariance_loss needs at least 2 samples, got x of shape {tuple(x.shape)}")
    x = x - x.mean(dim=0)
    cov = (x.T @ x) / (n - 1)  # (D, D)
    off_diagonal = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off_diagonal / d


def vicreg_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
) -> dict[str, torch.Tensor]:
    """Standard two-view VICReg between x and y (N, D), as the official code computes it."""
    inv = invariance_loss(x, y)
    if gather_distributed:
        x, y = gather_with_grad(x), gather_with_grad(y)
    var = (variance_loss(x, eps) + variance_loss(y, eps)) / 2
    cov = covariance_loss(x) + covariance_loss(y)
    return _combine(inv, var, cov, sim_coeff, std_coeff, cov_coeff)


def _combine(inv, var, cov, sim_coeff, std_coeff, cov_coeff) -> dict[str, torch.Tensor]:
    return {
        "loss": sim_coeff * inv + std_coeff * var + cov_coeff * cov,
        "invariance": inv,
        "variance": var,
        "covariance": cov,
    }


def _variance_per_view(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z: (N, V, D) -> (V,) variance hinge of each view."""
    std = torch.sqrt(z.var(dim=0) + eps)  # (V, D)
    return F.relu(1.0 - std).mean(dim=-1)


def _covariance_per_view(z: torch.Tensor) -> torch.Tensor:
    """z: (N, V, D) -> (V,) off-diagonal covariance penalty of each view."""
    n, _, d = z.shape
    z = z - z.mean(dim=0)
    cov = torch.einsum("nvd,nve->vde", z, z) / (n - 1)  # (V, D, D)
    off_diagonal = cov.pow(2).sum(dim=(1, 2)) - cov.diagonal(dim1=1, dim2=2).pow(2).sum(dim=-1)
    return off_diagonal / d


def vicreg_block_loss(
    z: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
) -> dict[str, torch.Tensor]:
    """VICReg over every ordered pair (i, j), i != j, of the M block views, divided by M (M - 1).

    z: (B, M, D), the projected per-block embeddings of each image (the paper's
    Algorithm 1). Computed in closed form, with no loop over pairs:
      - invariance: mean over pairs of mse(z_i, z_j) = 2 / (M - 1) * sum_i mse(z_i, mean_j z_j);
      - variance: pair term (v_i + v_j) / 2 averages to mean_i v_i;
      - covariance: pair term c_i + c_j averages to 2 * mean_i c_i.
    """
    if z.dim() != 3 or z.shape[1] < 2:
        raise ValueError(f"z must have shape (B, M, D) with M >= 2 blocks, got {tuple(z.shape)}")
    m = z.shape[1]
    centred = z - z.mean(dim=1, keepdim=True)
    inv = 2.0 / (m - 1) * centred.pow(2).mean(dim=(0, 2)).sum()
    if gather_distributed:
        z = gather_with_grad(z)
    var = _variance_per_view(z, eps).mean()
    cov = 2.0 * _covariance_per_view(z).mean()
    return _combine(inv, var, cov, sim_coeff, std_coeff, cov_coeff)


def vicreg_context_loss(
    context: torch.Tensor,
    targets: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
) -> dict[str, torch.Tensor]:
    """VICReg between the context view (B, D) and each target-block view (B, M, D),
    averaged over the M (context, block) pairs: the paper's prose variant."""
    if context.dim() != 2 or targets.dim() != 3 or targets.shape[0] != context.shape[0] or targets.shape[2] != context.shape[1]:
        raise ValueError(f"context must be (B, D) and targets (B, M, D), got {tuple(context.shape)} and {tuple(targets.shape)}")
    inv = (targets - context[:, None]).pow(2).mean()
    if gather_distributed:
        context, targets = gather_with_grad(context), gather_with_grad(targets)
    var = (variance_loss(context, eps) + _variance_per_view(targets, eps).mean()) / 2
    cov = covariance_loss(context) + _covariance_per_view(targets).mean()
    return _combine(inv, var, cov, sim_coeff, std_coeff, cov_coeff)


def variance_covariance_loss(
    x: torch.Tensor,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
) -> dict[str, torch.Tensor]:
    """VICReg's variance and covariance terms of one set of features x (N, D), no invariance:
    the regulariser EB-JEPA and LeJEPA put on the encoder's own output.

    Computed from the first and second moments, so that with `gather_distributed` the
    processes may hold different numbers of rows (context tokens differ per process): the
    sums are all-reduced with gradients, and the statistics are those of all rows together.
    Returns {"loss": std_coeff * variance + cov_coeff * covariance, "variance", "covariance"}."""
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    x = at_least_fp32(x)
    n: float | torch.Tensor = float(x.shape[0])
    total, outer = x.sum(dim=0), x.T @ x  # (D,), (D, D)
    if gather_distributed and _world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        n = dist_sum(torch.full((), n, dtype=torch.long, device=x.device))  # a fill: no host-to-device copy
        total, outer = all_reduce(total), all_reduce(outer)
    elif n < 2:
        raise ValueError(f"variance_covariance_loss needs at least 2 rows, got x of shape {tuple(x.shape)}")
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)  # (D, D), unbiased like torch.var
    var = F.relu(1.0 - torch.sqrt(cov.diagonal().clamp(min=0) + eps)).mean()
    d = x.shape[1]
    off = (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d
    return {"loss": std_coeff * var + cov_coeff * off, "variance": var, "covariance": off}


def dist_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over processes (no gradient)."""
    x = x.clone()
    dist.all_reduce(x)
    return x


# ----------------------------------------------------------------------------- collapse monitors


@torch.no_grad()
def feature_std(x: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension standard deviation of L2-normalised features x (N, D).

    Collapsed features give 0; isotropic features give about 1/sqrt(D)."""
    x = F.normalize(x.float(), dim=-1)
    return x.std(dim=0).mean()


@torch.no_grad()
def effective_rank(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of x (N, D).

    Between 1 (collapsed to a line) and min(N, D)."""
    s = torch.linalg.svdvals(x.float())
    p = s / (s.sum() + eps) + eps
    return torch.exp(-(p * p.log()).sum())


def collapse_figures(features: torch.Tensor) -> dict[str, float]:
    """The collapse monitor's figures of pooled features (N, D): their spread (`feature_std`), their
    RankMe and the RankMe of the centred features (mean-pooled features share a large mean
    direction that dominates the raw RankMe even at random initialisation; the centred rank shows
    the spread around it). NaN for each when the features are not finite (a host sync)."""
    if not torch.isfinite(features).all():
        return dict.fromkeys(("target_feature_std", "target_effective_rank", "target_effective_rank_centered"), float("nan"))
    return {
        "target_feature_std": feature_std(features).item(),
        "target_effective_rank": effective_rank(features).item(),
        "target_effective_rank_centered": effective_rank(features - features.mean(dim=0)).item(),
    }


__all__ = [
    "collapse_figures",
    "at_least_fp32",
    "covariance_loss",
    "effective_rank",
    "feature_std",
    "gather_with_grad",
    "invariance_loss",
    "jepa_loss",
    "variance_loss",
    "vicreg_block_loss",
    "vicreg_context_loss",
    "variance_covariance_loss",
    "vicreg_loss",
]
