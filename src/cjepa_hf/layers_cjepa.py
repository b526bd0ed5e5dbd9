"""The ViT building blocks of the C-JEPA encoder and predictor: fixed 2-D sin-cos
positions, patch embeddings, attention, MLP and the pre-norm transformer block, laid out
as in I-JEPA (Assran et al., CVPR 2023).

Shapes: B batch, N patches, D width, H heads, Dh = D / H.

Remote code (see `modeling_cjepa.REMOTE_CODE_FILES`): this file imports only
`configuration_cjepa` from the package, so a saved model folder that carries it loads
with `trust_remote_code=True` where `cjepa_hf` is not installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_cjepa import CJEPAConfig

# ============================================================================ position embeddings


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(L,) positions -> (L, embed_dim): [sin(pos * w), cos(pos * w)], w_i = 10000^(-i / (embed_dim/2))."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.double()[:, None] * omega[None]  # (L, embed_dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings (1, grid*grid, embed_dim), row-major patches.

    Same layout as the I-JEPA code: the first half of the channels encodes the column,
    the second half the row."""
    if embed_dim % 4 != 0:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {embed_dim}")
    coords = torch.arange(grid_size)
    rows = coords.repeat_interleave(grid_size)  # (N,)
    cols = coords.repeat(grid_size)  # (N,)
    emb = torch.cat([sincos_1d(embed_dim // 2, cols), sincos_1d(embed_dim // 2, rows)], dim=1)
    return emb.float().unsqueeze(0)


def gather_tokens(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), indices (B, ...) long -> (B, ..., C)."""
    batch, channels = x.shape[0], x.shape[-1]
    flat = indices.reshape(batch, -1)
    out = x.gather(1, flat.unsqueeze(-1).expand(-1, -1, channels))
    return out.reshape(*indices.shape, channels)


# ============================================================================ building blocks


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. q, k, v: (B, H, N, Dh) -> output (B, N, H, Dh), weights (B, H, N, N)."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class CJEPAPatchEmbeddings(nn.Module):
    """(B, C, H, W) -> (B, N, D) with a strided convolution."""

    def __init__(self, config: CJEPAConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"pixel_values must have shape (batch, {self.num_channels}, height, width), got {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image height and width must be multiples of patch_size={self.patch_size}, got {height}x{width}")
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class CJEPAEmbeddings(nn.Module):
    """Patch embeddings plus fixed sin-cos positions (a saved, never-trained buffer)."""

    def __init__(self, config: CJEPAConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embeddings = CJEPAPatchEmbeddings(config)
        self.register_buffer("position_embeddings", sincos_2d(config.hidden_size, config.grid_size), persistent=True)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Bicubic resize of the (1, N, D) position embeddings to a grid_h x grid_w grid."""
        pos = self.position_embeddings
        side = int(math.isqrt(pos.shape[1]))
        if (grid_h, grid_w) == (side, side):
            return pos
        pos = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1).to(self.position_embeddings.dtype)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeddings = self.patch_embeddings(pixel_values.to(self.patch_embeddings.projection.weight.dtype))
        grid_h = pixel_values.shape[-2] // self.config.patch_size
        grid_w = pixel_values.shape[-1] // self.config.patch_size
        return embeddings + self.interpolate_pos_encoding(grid_h, grid_w).to(embeddings.dtype)


class CJEPADropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability `drop_prob`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class CJEPAAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, dispatched through
    transformers' attention interface (`config._attn_implementation`)."""

    def __init__(self, config: CJEPAConfig, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        output = self.proj(output.reshape(batch, length, width))  # (B, N, H, Dh) -> (B, N, D)
        return output, (weights if output_attentions else None)


class CJEPAMLP(nn.Module):
    def __init__(self, config: CJEPAConfig, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class CJEPALayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self, config: CJEPAConfig, hidden_size: int, num_heads: int, intermediate_size: int, drop_path: float, layer_id: int
    ) -> None:
        super().__init__()
        self.layer_id = layer_id  # 1-based depth, for I-JEPA's residual rescaling at init
        self.norm1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = CJEPAAttention(config, hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = CJEPAMLP(config, hidden_size, intermediate_size)
        self.drop_path = CJEPADropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(self.norm1(hidden_states), output_attentions)
        hidden_states = hidden_states + self.drop_path(attended)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))
        return hidden_states, weights


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to `rate` over `depth` blocks."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


__all__ = [
    "CJEPAAttention",
    "CJEPADropPath",
    "CJEPAEmbeddings",
    "CJEPALayer",
    "CJEPAMLP",
    "CJEPAPatchEmbeddings",
    "drop_path_rates",
    "eager_attention_forward",
    "gather_tokens",
    "sincos_1d",
    "sincos_2d",
]
