"""`CJEPAConfig`: every hyper-parameter of the C-JEPA model, its masking and its loss.

The config is the single source of truth: the encoder, the predictor, the mask
collator (`cjepa_hf.masking`) and the loss all read their settings from here.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedConfig

# The normalisation of every image (I-JEPA's and C-JEPA's training used ImageNet's statistics);
# defined here, in the module every saved model folder carries, and imported everywhere else.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JEPA_LOSSES = ("l2", "smooth_l1")
VICREG_SOURCES = ("predictor", "context")
ENCODER_VICREG_FEATURES = ("pooled", "tokens", "both")

# ViT sizes of I-JEPA (Assran et al., CVPR 2023): width, depth, heads, predictor depth, patch size;
# the predictor is 384 wide (the config's default) with the encoder's heads. Predictor depths as
# I-JEPA trained them: 6 for ViT-T/S/B, 12 for ViT-L and ViT-H (H/14 at 224 px, H/16 at 448 px),
# 16 for ViT-g. `vit-h16` and `vit-g16` exist for I-JEPA's released ViT-H/16 and ViT-g/16;
# image_size is not part of a preset (224 unless overridden: I-JEPA's H/16 used 448).
_PRESETS: dict[str, dict[str, Any]] = {
    "vit-t16": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, predictor_num_hidden_layers=6, patch_size=16),
    "vit-s16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, predictor_num_hidden_layers=6, patch_size=16),
    "vit-b16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, predictor_num_hidden_layers=6, patch_size=16),
    "vit-l16": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, predictor_num_hidden_layers=12, patch_size=16),
    "vit-h14": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, predictor_num_hidden_layers=12, patch_size=14),
    "vit-h16": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, predictor_num_hidden_layers=12, patch_size=16),
    "vit-g16": dict(
        hidden_size=1408,
        num_hidden_layers=40,
        num_attention_heads=16,
        predictor_num_hidden_layers=16,
        patch_size=16,
        intermediate_size=6144,  # MLP ratio 48/11
    ),
}
_ALIASES = {
    "vit_tiny_patch16": "vit-t16",
    "vit-tiny": "vit-t16",
    "vit-t/16": "vit-t16",
    "vit_small_patch16": "vit-s16",
    "vit-small": "vit-s16",
    "vit-s/16": "vit-s16",
    "vit_base_patch16": "vit-b16",
    "vit-base": "vit-b16",
    "vit-b/16": "vit-b16",
    "vit_large_patch16": "vit-l16",
    "vit-large": "vit-l16",
    "vit-l/16": "vit-l16",
    "vit_huge_patch14": "vit-h14",
    "vit-huge": "vit-h14",
    "vit-h/14": "vit-h14",
    "vit_huge_patch16": "vit-h16",
    "vit-h/16": "vit-h16",
    "vit_giant_patch16": "vit-g16",
    "vit-giant": "vit-g16",
    "vit-g/16": "vit-g16",
}
PRESET_NAMES = tuple(_PRESETS)
# What makes two configs the same network; the image size only sets how many fixed sin-cos
# positions there are, so it is left out.
_ARCHITECTURE_FIELDS = (
    "patch_size",
    "num_channels",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "qkv_bias",
    "predictor_hidden_size",
    "predictor_num_hidden_layers",
    "predictor_num_attention_heads",
    "predictor_intermediate_size",
)


# The named objectives. "ijepa" is I-JEPA's (Assran et al., CVPR 2023); "cjepa" is C-JEPA as the
# paper's Algorithm 1 computes it (Mo & Tong, NeurIPS 2024: VICReg between the projected per-block
# means of the predictor's outputs); "cjepa-context" is the paper's prose reading (variance and
# covariance of the context embeddings, invariance between context and target embeddings). The
# "+encvar" suffix adds this project's encoder regulariser (variance and covariance of the context
# encoder's own output), which is in neither paper. A name is derived from the loss fields
# (`CJEPAConfig.objective`), so it cannot disagree with what is trained.
OBJECTIVES = ("ijepa", "cjepa", "cjepa-context", "ijepa+encvar", "cjepa+encvar", "cjepa-context+encvar")
# The loss fields each name sets when it is asked for by name (`objective_overrides`); the weights
# are the papers' where they give one (beta = 0.001) and the small-data study's otherwise.
_OBJECTIVE_FIELDS: dict[str, dict[str, Any]] = {
    "ijepa": dict(vicreg_weight=0.0, encoder_vicreg_weight=0.0),
    "cjepa": dict(vicreg_weight=0.001, vicreg_source="predictor", encoder_vicreg_weight=0.0),
    "cjepa-context": dict(vicreg_weight=0.001, vicreg_source="context", encoder_vicreg_weight=0.0),
}
_ENCVAR_FIELDS = dict(encoder_vicreg_weight=0.05, encoder_vicreg_features="tokens")
# Every CJEPAConfig field that changes the loss; `describe_objective` reports each one that is in force.
LOSS_FIELDS = (
    "jepa_loss",
    "smooth_l1_beta",
    "vicreg_weight",
    "vicreg_sim_coeff",
    "vicreg_std_coeff",
    "vicreg_cov_coeff",
    "vicreg_eps",
    "vicreg_source",
    "projector_dims",
    "encoder_vicreg_weight",
    "encoder_vicreg_features",
)


def objective_overrides(name: str) -> dict[str, Any]:
    """The loss fields of the objective `name` (one of `OBJECTIVES`), to merge under a run's own
    config overrides: `{**objective_overrides("cjepa"), **overrides}` trains C-JEPA with the
    overrides' weights."""
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(str(name), OBJECTIVES, n=2, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {name!r}{hint}")
    base, _, extra = name.partition("+")
    fields = dict(_OBJECTIVE_FIELDS[base])
    if extra:
        fields.update(_ENCVAR_FIELDS)
    return fields


def as_float_pair(name: str, value: Any) -> tuple[float, float]:
    """(min, max) as floats, or a ValueError naming the field and the value."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of numbers, got {value!r}") from None
    return lo, hi


def block_size(scale: float, aspect_ratio: float, grid_size: int) -> tuple[int, int]:
    """Block ``(h, w)`` in patches for a fraction ``scale`` of the grid and ``aspect_ratio = h / w``.

    ``h = round(sqrt(s * N * a))``, ``w = round(sqrt(s * N / a))`` with ``N = grid_size**2``, each
    clamped to ``[1, grid_size]``."""
    n = scale * grid_size * grid_size
    h = round(math.sqrt(n * aspect_ratio))
    w = round(math.sqrt(n / aspect_ratio))
    return min(max(h, 1), grid_size), min(max(w, 1), grid_size)


def block_sizes(scale: tuple[float, float], aspect: tuple[float, float], grid_size: int) -> set[tuple[int, int]]:
    """The (h, w) that `block_size` gives over the scale x aspect range, on a 257 x 257 lattice
    that includes the corners (fine enough that no size region of a grid <= 64 is missed in practice)."""
    import torch

    u = torch.linspace(0.0, 1.0, 257, dtype=torch.float64)
    s = (scale[0] + u * (scale[1] - scale[0])).view(-1, 1) * grid_size * grid_size
    a = (aspect[0] + u * (aspect[1] - aspect[0])).view(1, -1)
    h = torch.sqrt(s * a).round().clamp(1, grid_size).long()
    w = torch.sqrt(s / a).round().clamp(1, grid_size).long()
    return set(zip(h.view(-1).tolist(), w.view(-1).tolist()))


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _range(name: str, value: Any, upper: float | None) -> tuple[float, float]:
    lo, hi = as_float_pair(name, value)
    if upper is not None and not (0.0 < lo <= upper and 0.0 < hi <= upper):
        raise ValueError(f"{name} must lie in (0, {upper:g}], got {value!r}")
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name} must have min <= max, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class MaskingSpec:
    """The multi-block masking settings (I-JEPA, Assran et al. CVPR 2023, section 3): validated
    once, here, when `CJEPAConfig` builds it (`config.masking_spec()`); `cjepa_hf.masking`
    consumes it as it is.

    Checked: types and ranges; and the necessary conditions for masks to exist: the context
    block can hold `min_keep` patches; the grid minus one target block can (a context cannot
    keep patches a target covers); with ``allow_target_overlap=False`` every block size the
    ranges can give packs `num_target_blocks` times into the grid (by the exact bound
    floor(G/h) * floor(G/w)). Settings that pass but are merely unlikely to succeed fail in
    `cjepa_hf.masking.sample_masks` with a `RuntimeError` (e.g. non-overlapping targets close
    to the packing limit: 4 blocks of 7x6 on 14x14 place in ~4% of random draws)."""

    grid_size: int
    num_target_blocks: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect_ratio: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect_ratio: tuple[float, float] = (1.0, 1.0)
    min_keep: int = 10
    allow_target_overlap: bool = True

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("grid_size", _integer("grid_size", self.grid_size, 1))
        set_("num_target_blocks", _integer("num_target_blocks", self.num_target_blocks, 1))
        set_("min_keep", _integer("min_keep", self.min_keep, 1))
        for name in ("target_scale", "context_scale"):
            set_(name, _range(name, getattr(self, name), upper=1.0))
        for name in ("target_aspect_ratio", "context_aspect_ratio"):
            set_(name, _range(name, getattr(self, name), upper=None))
        set_("allow_target_overlap", bool(self.allow_target_overlap))
        _check_attainable(self)

    @property
    def num_patches(self) -> int:
        return self.grid_size * self.grid_size


@functools.lru_cache(maxsize=64)  # configs are built often (loading, copies); the size scan costs ~ms
def _check_attainable(spec: MaskingSpec) -> None:
    g, m, n, min_keep = spec.grid_size, spec.num_target_blocks, spec.num_patches, spec.min_keep
    if min_keep > n:
        raise ValueError(f"min_keep must be at most the number of patches ({n} on a {g}x{g} grid), got {min_keep}")
    target_sizes = block_sizes(spec.target_scale, spec.target_aspect_ratio, g)
    t_min = min(h * w for h, w in target_sizes)
    c_max = max(h * w for h, w in block_sizes(spec.context_scale, spec.context_aspect_ratio, g))
    if c_max < min_keep:
        raise ValueError(
            f"min_keep={min_keep} cannot be met: the largest context block for context_scale={spec.context_scale} "
            f"and context_aspect_ratio={spec.context_aspect_ratio} has {c_max} patches on a {g}x{g} "
            f"grid; min_keep must be at most {c_max}"
        )
    if not spec.allow_target_overlap:
        if m * t_min > n:
            raise ValueError(
                f"num_target_blocks={m} non-overlapping target blocks of at least {t_min} patches "
                f"(target_scale={spec.target_scale}, target_aspect_ratio={spec.target_aspect_ratio}) cannot fit in "
                f"{n} patches ({g}x{g} grid); lower num_target_blocks or target_scale, or set allow_target_overlap=True"
            )
        # Every h x w block contains exactly one cell (row = -1 mod h, col = -1 mod w), so at
        # most floor(G/h) * floor(G/w) disjoint blocks fit: a size beyond that would fail mid-training.
        jammed = sorted((h, w) for h, w in target_sizes if (g // h) * (g // w) < m)
        if jammed:
            raise ValueError(
                f"num_target_blocks={m} non-overlapping target blocks cannot fit on a {g}x{g} grid for the "
                f"block sizes {jammed} (h x w) that target_scale={spec.target_scale} and target_aspect_ratio="
                f"{spec.target_aspect_ratio} can give; lower num_target_blocks or target_scale, narrow "
                "target_aspect_ratio, or set allow_target_overlap=True"
            )
    covered = m * t_min if not spec.allow_target_overlap else t_min
    if n - covered < min_keep:
        raise ValueError(
            f"min_keep={min_keep} cannot be met: the targets (num_target_blocks={m}, "
            f"target_scale={spec.target_scale}, target_aspect_ratio={spec.target_aspect_ratio}, "
            f"allow_target_overlap={spec.allow_target_overlap}) cover at least {covered} of the {n} patches, "
            f"so min_keep must be at most {n - covered}"
        )


class CJEPAConfig(PreTrainedConfig):
    r"""Configuration of a C-JEPA model (I-JEPA + VICReg, Mo & Tong 2024).

    Encoder (a ViT without CLS token, fixed 2-D sin-cos positions):
        image_size, patch_size, num_channels, hidden_size, num_hidden_layers,
        num_attention_heads, intermediate_size (default 4 * hidden_size), hidden_act,
        layer_norm_eps (1e-6 as I-JEPA), qkv_bias, drop_path_rate, attention_dropout,
        initializer_range.
    Predictor (a narrow ViT, I-JEPA's method section):
        predictor_hidden_size (384), predictor_num_hidden_layers (6),
        predictor_num_attention_heads (default: num_attention_heads),
        predictor_intermediate_size (default 4 * predictor_hidden_size).
    Multi-block masking (I-JEPA's method section), read by `cjepa_hf.masking.MaskCollator`:
        num_target_blocks (M=4), target_scale (0.15, 0.2), target_aspect_ratio (0.75, 1.5),
        context_scale (0.85, 1.0), context_aspect_ratio (1.0, 1.0), min_keep (10),
        allow_target_overlap (True).
    Loss (C-JEPA, Mo & Tong, NeurIPS 2024, Algorithm 1): L = L_jepa + vicreg_weight * (sim * inv + std * var + cov * cov)
        jepa_loss ("l2" | "smooth_l1"), smooth_l1_beta, vicreg_weight (0.001),
        vicreg_sim_coeff (25), vicreg_std_coeff (25), vicreg_cov_coeff (1), vicreg_eps (1e-4),
        vicreg_source ("predictor": per-block means of the predictor outputs, as in the
        paper's Algorithm 1; "context": mean of the context-encoder tokens against the
        per-block means of the target features), projector_dims (hidden and output sizes of
        the VICReg projector MLP; the paper does not give them).
    Encoder regulariser (not in the paper; off by default): L += encoder_vicreg_weight *
        (std * var + cov * cov) of the context encoder's own output, with no projector and no
        invariance term, as EB-JEPA and LeJEPA regularise the encoder. encoder_vicreg_features:
        "pooled" (the mean over the context tokens, (B, D), the features users extract),
        "tokens" (every context token, (B*K, D)) or "both" (the sum of the two).
    """

    model_type = "cjepa"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int | None = None,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        predictor_hidden_size: int = 384,
        predictor_num_hidden_layers: int = 6,
        predictor_num_attention_heads: int | None = None,
        predictor_intermediate_size: int | None = None,
        num_target_blocks: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect_ratio: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        allow_target_overlap: bool = True,
        jepa_loss: str = "l2",
        smooth_l1_beta: float = 1.0,
        vicreg_weight: float = 0.001,
        vicreg_sim_coeff: float = 25.0,
        vicreg_std_coeff: float = 25.0,
        vicreg_cov_coeff: float = 1.0,
        vicreg_eps: float = 1e-4,
        vicreg_source: str = "predictor",
        projector_dims: tuple[int, ...] = (2048, 2048),
        encoder_vicreg_weight: float = 0.0,
        encoder_vicreg_features: str = "pooled",
        **kwargs: Any,
    ) -> None:
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.predictor_hidden_size = predictor_hidden_size
        self.predictor_num_hidden_layers = predictor_num_hidden_layers
        self.predictor_num_attention_heads = (
            predictor_num_attention_heads if predictor_num_attention_heads is not None else num_attention_heads
        )
        self.predictor_intermediate_size = (
            predictor_intermediate_size if predictor_intermediate_size is not None else 4 * predictor_hidden_size
        )
        self.num_target_blocks = num_target_blocks
        self.target_scale = tuple(target_scale) if target_scale is not None else target_scale
        self.target_aspect_ratio = tuple(target_aspect_ratio) if target_aspect_ratio is not None else None
        self.context_scale = tuple(context_scale) if context_scale is not None else None
        self.context_aspect_ratio = tuple(context_aspect_ratio) if context_aspect_ratio is not None else None
        self.min_keep = min_keep
        self.allow_target_overlap = allow_target_overlap
        self.jepa_loss = jepa_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.vicreg_weight = vicreg_weight
        self.vicreg_sim_coeff = vicreg_sim_coeff
        self.vicreg_std_coeff = vicreg_std_coeff
        self.vicreg_cov_coeff = vicreg_cov_coeff
        self.vicreg_eps = vicreg_eps
        self.vicreg_source = vicreg_source
        self.projector_dims = tuple(int(d) for d in projector_dims) if projector_dims is not None else None
        self.encoder_vicreg_weight = encoder_vicreg_weight
        self.encoder_vicreg_features = encoder_vicreg_features
        super().__init__(**kwargs)
        self.validate_cjepa()

    # ------------------------------------------------------------------ derived sizes
    @property
    def grid_size(self) -> int:
        """Patches per side of the (square) training image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    # ------------------------------------------------------------------ the objective
    @property
    def objective(self) -> str:
        """The objective's name (one of `OBJECTIVES`), read from the loss fields: "ijepa" when
        the paper's VICReg term is off, "cjepa" / "cjepa-context" when it is on (by
        `vicreg_source`), with "+encvar" when the encoder regulariser is on."""
        if self.vicreg_weight > 0:
            base = "cjepa" if self.vicreg_source == "predictor" else "cjepa-context"
        else:
            base = "ijepa"
        return base + ("+encvar" if self.encoder_vicreg_weight > 0 else "")

    def describe_objective(self) -> dict[str, Any]:
        """What this config trains, term by term: ``{"name", "formula", "terms": [...]}``; each
        term is ``{"term", "weight", "origin", "fields"}`` where `fields` holds every loss field
        (`LOSS_FIELDS`) that term reads, with its value. Terms that are off are left out. Model
        cards are written from this, never from fields copied by hand."""

        def term(text: str, weight: float, origin: str, names: tuple[str, ...]) -> dict[str, Any]:
            return dict(term=text, weight=weight, origin=origin, fields={name: getattr(self, name) for name in names})

        jepa_names = ("jepa_loss", "smooth_l1_beta") if self.jepa_loss == "smooth_l1" else ("jepa_loss",)
        terms = [
            term(
                "JEPA prediction loss (predicted against layer-normed target-encoder features at the target patches)",
                1.0,
                "I-JEPA (Assran et al., CVPR 2023)",
                jepa_names,
            )
        ]
        formula = "L_jepa"
        if self.vicreg_weight > 0:
            where = (
                "between the projected per-block means of the predictor's outputs, every ordered pair of target blocks (Algorithm 1)"
                if self.vicreg_source == "predictor"
                else "between the projected mean context embedding and the projected per-block means of the target "
                "features, each (context, block) pair (the paper's prose)"
            )
            vicreg_names = ("vicreg_weight", "vicreg_source", "vicreg_sim_coeff", "vicreg_std_coeff", "vicreg_cov_coeff")
            terms.append(
                term(
                    f"VICReg {where}",
                    self.vicreg_weight,
                    "C-JEPA (Mo & Tong, NeurIPS 2024)",
                    (*vicreg_names, "vicreg_eps", "projector_dims"),
                )
            )
            formula += (
                f" + {self.vicreg_weight:g} * ({self.vicreg_sim_coeff:g} inv + {self.vicreg_std_coeff:g} var"
                f" + {self.vicreg_cov_coeff:g} cov)"
            )
        if self.encoder_vicreg_weight > 0:
            terms.append(
                term(
                    f"encoder regulariser: variance and covariance of the context encoder's output ({self.encoder_vicreg_features})",
                    self.encoder_vicreg_weight,
                    "this project (in neither paper)",
                    ("encoder_vicreg_weight", "encoder_vicreg_features", "vicreg_std_coeff", "vicreg_cov_coeff", "vicreg_eps"),
                )
            )
            formula += (
                f" + {self.encoder_vicreg_weight:g} * ({self.vicreg_std_coeff:g} var + {self.vicreg_cov_coeff:g} cov"
                f" of the context encoder's {self.encoder_vicreg_features} output)"
            )
        return {"name": self.objective, "formula": formula, "terms": terms}

    # ------------------------------------------------------------------ validation
    def validate_cjepa(self) -> None:
        """Raise `ValueError` naming the field, its value and what is allowed."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "predictor_hidden_size",
            "predictor_num_hidden_layers",
            "predictor_num_attention_heads",
            "predictor_intermediate_size",
            "num_target_blocks",
            "min_keep",
        ):
            positive_int(name)
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size must be divisible by patch_size, got image_size={self.image_size} and patch_size={self.patch_size}"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads must divide hidden_size, got num_attention_heads="
                f"{self.num_attention_heads} and hidden_size={self.hidden_size}"
            )
        if self.predictor_hidden_size % self.predictor_num_attention_heads != 0:
            raise ValueError(
                f"predictor_num_attention_heads must divide predictor_hidden_size, got "
                f"predictor_num_attention_heads={self.predictor_num_attention_heads} and "
                f"predictor_hidden_size={self.predictor_hidden_size}"
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must lie in [0, 1), got {self.drop_path_rate!r}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must lie in [0, 1), got {self.attention_dropout!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not self.initializer_range > 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range!r}")

        self.masking_spec()  # the masking settings are validated there, once

        if self.jepa_loss not in JEPA_LOSSES:
            raise ValueError(f"jepa_loss must be one of {JEPA_LOSSES}, got {self.jepa_loss!r}")
        if self.vicreg_source not in VICREG_SOURCES:
            raise ValueError(f"vicreg_source must be one of {VICREG_SOURCES}, got {self.vicreg_source!r}")
        if self.encoder_vicreg_features not in ENCODER_VICREG_FEATURES:
            raise ValueError(f"encoder_vicreg_features must be one of {ENCODER_VICREG_FEATURES}, got {self.encoder_vicreg_features!r}")
        for name in ("vicreg_weight", "vicreg_sim_coeff", "vicreg_std_coeff", "vicreg_cov_coeff", "encoder_vicreg_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("vicreg_eps", "smooth_l1_beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not self.projector_dims or any(d <= 0 for d in self.projector_dims):
            raise ValueError(f"projector_dims must be a non-empty list of positive sizes, got {self.projector_dims!r}")
        if self.vicreg_source == "predictor" and self.vicreg_weight > 0 and self.num_target_blocks < 2:
            raise ValueError(
                "vicreg_source='predictor' compares target blocks pairwise and needs num_target_blocks >= 2, "
                f"got num_target_blocks={self.num_target_blocks}"
            )

    def masking_spec(self) -> MaskingSpec:
        """The validated masking settings the collator consumes (`cjepa_hf.masking.MaskCollator`)."""
        return MaskingSpec(
            grid_size=self.grid_size,
            num_target_blocks=self.num_target_blocks,
            target_scale=self.target_scale,
            target_aspect_ratio=self.target_aspect_ratio,
            context_scale=self.context_scale,
            context_aspect_ratio=self.context_aspect_ratio,
            min_keep=self.min_keep,
            allow_target_overlap=self.allow_target_overlap,
        )

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> CJEPAConfig:
        """A paper-size config: `vit-t16`, `vit-s16`, `vit-b16`, `vit-l16`, `vit-h14` (also
        `vit-h16`, `vit-g16`, and aliases such as `vit_base_patch16` or `vit-b/16`).
        Keyword arguments override any field."""
        key = _ALIASES.get(name.lower(), name.lower())
        if key not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESET_NAMES)}")
        return cls(**{**_PRESETS[key], **overrides})

    def matching_preset(self) -> str | None:
        """The preset whose architecture (encoder and predictor widths, depths, heads, MLP
        sizes, patch size, qkv bias) this config has, whatever its image size, masking or
        loss; None for a custom size."""
        for name in PRESET_NAMES:
            preset = CJEPAConfig.from_preset(name)
            if all(getattr(self, field) == getattr(preset, field) for field in _ARCHITECTURE_FIELDS):
                return name
        return None


def build_config(
    overrides: str | dict | None = None, preset: str | None = None, objective: str | None = None, source: str = "the overrides"
) -> CJEPAConfig:
    """The config a run trains: the named `objective`'s loss fields (`objective_overrides`), then
    `overrides` (a dict, or `--config_overrides` text) over them, on a preset's architecture when
    `preset` is given. Overrides that turn the named objective into another raise a ValueError
    naming both (`source` says where the overrides came from)."""
    fields = parse_config_overrides(overrides)
    if objective:
        fields = {**objective_overrides(objective), **fields}
    config = CJEPAConfig.from_preset(preset, **fields) if preset else CJEPAConfig(**fields)
    check_objective(config, objective, source)
    return config


def check_objective(config: CJEPAConfig, requested: str | None, source: str) -> None:
    """A run asked for by objective name trains that objective, or does not start."""
    if requested and config.objective != requested:
        raise ValueError(
            f"--objective {requested} was asked for, but {source} make the loss {config.objective!r} "
            f"({config.describe_objective()['formula']}); change --objective or the loss fields"
        )


def _split_top_level(text: str) -> list[str]:
    """Split "a=1,b=[2,3]" at the commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in (part.strip() for part in parts) if p]


def config_field_names() -> set[str]:
    """Every field a `CJEPAConfig` accepts: its own and transformers' common ones."""
    own = set(inspect.signature(CJEPAConfig.__init__).parameters) - {"self", "kwargs"}
    return own | set(PreTrainedConfig().to_dict())


def parse_config_overrides(text: str | dict | None) -> dict[str, Any]:
    """`--config_overrides` as a dict: a JSON object, or transformers' "k=v,k2=v2" form whose
    values are read as JSON when they parse (numbers, true/false, [lists]) and as strings
    otherwise. An unknown field raises a ValueError naming it and the closest valid ones."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        overrides = dict(text)
    elif text.lstrip().startswith("{"):
        try:
            overrides = json.loads(text)
        except ValueError as error:
            raise ValueError(f"config_overrides is not a valid JSON object ({error}): {text!r}") from None
    else:
        overrides = {}
        for part in _split_top_level(text):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"config_overrides must be a JSON object or k=v,k2=v2; {part!r} in {text!r} has no k=v")
            try:
                overrides[key.strip()] = json.loads(value)
            except ValueError:
                overrides[key.strip()] = value.strip()
    if not isinstance(overrides, dict):
        raise ValueError(f"config_overrides must be a JSON object or k=v,k2=v2, got {text!r}")
    known = config_field_names()
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"config_overrides: {key!r} is not a CJEPAConfig field{hint}")
    return overrides


__all__ = [
    "CJEPAConfig",
    "LOSS_FIELDS",
    "OBJECTIVES",
    "build_config",
    "check_objective",
    "objective_overrides",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MaskingSpec",
    "block_size",
    "config_field_names",
    "parse_config_overrides",
    "ENCODER_VICREG_FEATURES",
    "PRESET_NAMES",
    "JEPA_LOSSES",
    "VICREG_SOURCES",
]
