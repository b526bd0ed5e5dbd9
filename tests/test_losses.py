import itertools

import pytest
import torch
import torch.nn.functional as F

from cjepa_hf.losses import (
    covariance_loss,
    effective_rank,
    feature_std,
    invariance_loss,
    jepa_loss,
    variance_covariance_loss,
    variance_loss,
    vicreg_block_loss,
    vicreg_context_loss,
    vicreg_loss,
)


def _official_vicreg(x, y, sim=25.0, std=25.0, cov=1.0):
    """The official VICReg forward (single process), written out independently."""
    n, d = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (n - 1)
    cov_y = (y.T @ y) / (n - 1)
    off = lambda m: m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()  # noqa: E731
    cov_loss = off(cov_x).pow_(2).sum().div(d) + off(cov_y).pow_(2).sum().div(d)
    return sim * repr_loss + std * std_loss + cov * cov_loss


def test_vicreg_matches_official_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 16, generator=g) * 0.5, torch.randn(32, 16, generator=g)
    ours = vicreg_loss(x, y)
    assert torch.allclose(ours["loss"], _official_vicreg(x, y), rtol=1e-5)


def test_block_loss_equals_mean_over_ordered_pairs():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 4, 12, generator=g) * torch.linspace(0.1, 2, 12)
    closed = vicreg_block_loss(z)
    pairs = [vicreg_loss(z[:, i], z[:, j]) for i, j in itertools.permutations(range(4), 2)]
    for key in ("loss", "invariance", "variance", "covariance"):
        reference = torch.stack([p[key] for p in pairs]).mean()
        assert torch.allclose(closed[key], reference, rtol=1e-5, atol=1e-6), key


def test_block_loss_gradients_match_pair_loop():
    z = torch.randn(8, 3, 6, requires_grad=True)
    vicreg_block_loss(z)["loss"].backward()
    g_closed = z.grad.clone()
    z.grad = None
    torch.stack([vicreg_loss(z[:, i], z[:, j])["loss"] for i, j in itertools.permutations(range(3), 2)]).mean().backward()
    assert torch.allclose(g_closed, z.grad, atol=1e-5)


def test_context_loss_equals_mean_over_context_block_pairs():
    ctx, tgt = torch.randn(10, 8), torch.randn(10, 3, 8)
    ours = vicreg_context_loss(ctx, tgt)
    reference = torch.stack([vicreg_loss(ctx, tgt[:, m])["loss"] for m in range(3)]).mean()
    assert torch.allclose(ours["loss"], reference, rtol=1e-5)


def test_terms_on_known_inputs():
    # unit-variance independent columns: no variance penalty; identical views: no invariance
    x = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]) * 0.75**0.5  # column var = 1
    assert variance_loss(x, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert variance_loss(x * 0.5, eps=0.0).item() == pytest.approx(0.5, abs=1e-6)
    assert covariance_loss(x).item() == pytest.approx(0.0, abs=1e-7)
    assert invariance_loss(x, x).item() == 0.0
    collapsed = torch.ones(6, 4)
    assert variance_loss(collapsed).item() == pytest.approx(1 - 0.01, abs=1e-6)
    correlated = torch.randn(100, 1).repeat(1, 3)
    var = correlated[:, 0].var().item()
    assert covariance_loss(correlated).item() == pytest.approx(6 * var**2 / 3, rel=1e-4)


def test_jepa_loss_kinds():
    p, t = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8)
    assert torch.allclose(jepa_loss(p, t), ((p - t) ** 2).mean())
    assert torch.allclose(jepa_loss(p, t, "smooth_l1"), F.smooth_l1_loss(p, t, beta=1.0))
    with pytest.raises(ValueError, match="same shape"):
        jepa_loss(p, t[:, :2])
    with pytest.raises(ValueError, match="kind must be"):
        jepa_loss(p, t, "l1")


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"z must have shape \(B, M, D\) with M >= 2"):
        vicreg_block_loss(torch.randn(4, 1, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        variance_loss(torch.randn(1, 3))


def test_collapse_monitors():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(512, 16, generator=g)
    low = torch.randn(512, 2, generator=g) @ torch.randn(2, 16, generator=g)
    assert effective_rank(full) > 14.0
    assert 1.0 < effective_rank(low) <= 2.0 + 1e-3
    assert feature_std(torch.ones(10, 16)).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_std(full).item() == pytest.approx(16**-0.5, rel=0.1)


def test_variance_covariance_from_moments_equals_the_direct_terms():
    x = torch.randn(50, 6, dtype=torch.float64).float() * torch.tensor([0.3, 1.0, 2.0, 0.1, 1.5, 0.7])
    out = variance_covariance_loss(x, std_coeff=25.0, cov_coeff=1.0)
    assert torch.allclose(out["variance"], variance_loss(x), atol=1e-6)
    assert torch.allclose(out["covariance"], covariance_loss(x), rtol=1e-4, atol=1e-6)
    assert torch.allclose(out["loss"], 25 * variance_loss(x) + covariance_loss(x), rtol=1e-4)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        variance_covariance_loss(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        variance_covariance_loss(torch.randn(1, 4))
