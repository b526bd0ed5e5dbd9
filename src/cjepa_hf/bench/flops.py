"""FLOP count of one C-JEPA pretraining step (forward + backward, matmuls only) and the devices' bf16 peaks, for MFU.

The step is C-JEPA's (Mo & Tong, NeurIPS 2024): I-JEPA's target encoder, context encoder and
predictor (Assran et al., CVPR 2023) plus the VICReg projector and covariance terms. The
formula (`FLOP_FORMULA`, also written into every benchmark JSON) equals
`torch.utils.flop_counter.FlopCounterMode`'s count of a real forward + backward (test).
"""

from __future__ import annotations

import platform

import torch

from ..configuration_cjepa import CJEPAConfig

# Dense (no sparsity) bf16 tensor-core peaks from the vendor data sheets, FLOP/s.
# Matched in order against `torch.cuda.get_device_name()`: specific names first.
PEAK_BF16_DENSE_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H200", 989.4e12),
    ("H100", 989.4e12),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("A100", 312.0e12),
)

FLOP_FORMULA = (
    "Matmul FLOPs of one step, 2 FLOPs per multiply-add; B batch, N patches, K context tokens, "
    "M target blocks, T patches per block, S = K + T; encoder width D, depth L, MLP width I, "
    "patch embedding C*p*p*D; predictor width P, depth Lp, MLP width Ip. "
    "Per encoder layer and token: 2*(4*D^2 + 2*D*I) (qkv, proj, fc1, fc2); attention per layer "
    "and sequence of n tokens: 4*n^2*D (QK^T and AV). "
    "target = B*[2*N*CppD + L*(2*N*(4D^2+2DI) + 4*N^2*D)] (forward only, no grad); "
    "context = 3 * B*L*(2*K*(4D^2+2DI) + 4*K^2*D) + 2 * B*2*N*CppD "
    "(forward + backward = 3x forward; the patch embedding runs on all N patches before the "
    "context is gathered, and its backward has no input gradient: 2x); "
    "predictor = 3 * [B*2*K*D*P + B*M*(Lp*(2*S*(4P^2+2P*Ip) + 4*S^2*P) + 2*T*P*D)] "
    "(one sequence of K+T tokens per target block); "
    "projector = 3 * 2*R*sum(d_i*d_(i+1)) over the projector's Linear layers, R = B*M rows "
    "(B*(M+1) for vicreg_source='context'); "
    "vicreg = 3 * 2*B*V*d^2 for the per-view covariance matrices (V views of width d). "
    "Total = target + context + predictor + projector + vicreg. Elementwise work (norms, GELU, "
    "softmax, loss, AdamW, EMA) is not counted. MFU = total / step time / device bf16 dense peak."
)


def pretraining_step_flops(
    config: CJEPAConfig, batch_size: int, num_context: int, num_blocks: int, per_block: int, num_patches: int | None = None
) -> dict[str, float]:
    """Matmul FLOPs of one pretraining step (forward + backward), split by part.

    See `FLOP_FORMULA` for the formula; returns the keys "target", "context",
    "predictor", "projector", "vicreg" and "total"."""
    c = config
    b, k, m, t = batch_size, num_context, num_blocks, per_block
    n = num_patches if num_patches is not None else c.num_patches
    d, layers, inter = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    p, p_layers, p_inter = c.predictor_hidden_size, c.predictor_num_hidden_layers, c.predictor_intermediate_size
    patch = c.num_channels * c.patch_size**2 * d
    enc_layer = 4 * d * d + 2 * d * inter

    def encoder_layers(tokens: int) -> float:  # per sequence, forward
        return layers * (2 * tokens * enc_layer + 4 * tokens**2 * d)

    target = b * (2 * n * patch + encoder_layers(n))
    context = 3 * b * encoder_layers(k) + 2 * b * 2 * n * patch
    s = k + t
    pred_layer = 4 * p * p + 2 * p * p_inter
    predictor = 3 * (b * 2 * k * d * p + b * m * (p_layers * (2 * s * pred_layer + 4 * s * s * p) + 2 * t * p * d))
    projector = vicreg = 0.0
    if c.vicreg_weight > 0:
        views = m if c.vicreg_source == "predictor" else m + 1
        dims = [d, *c.projector_dims]
        projector = 3 * 2 * b * views * sum(a * z for a, z in zip(dims[:-1], dims[1:]))
        vicreg = 3 * 2 * b * views * dims[-1] ** 2
    parts = dict(target=target, context=context, predictor=predictor, projector=projector, vicreg=vicreg)
    parts = {key: float(value) for key, value in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def peak_flops_for_name(name: str) -> float | None:
    """bf16 dense peak FLOP/s of a GPU named like `torch.cuda.get_device_name()`, or None."""
    for key, peak in PEAK_BF16_DENSE_FLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def device_peak_flops(device: torch.device | str) -> tuple[str, float | None]:
    """(device name, bf16 dense peak FLOP/s or None when unknown, e.g. on the CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    return name, peak_flops_for_name(name)


__all__ = ["FLOP_FORMULA", "PEAK_BF16_DENSE_FLOPS", "device_peak_flops", "peak_flops_for_name", "pretraining_step_flops"]
