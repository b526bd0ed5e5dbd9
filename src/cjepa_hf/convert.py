"""Weight conversion between C-JEPA and the I-JEPA formats.

- transformers' `IJepaModel` (the Hub's `facebook/ijepa_*` checkpoints): separate
  q/k/v projections, `layernorm_before/after`; both directions.
- the official I-JEPA training checkpoints (`.pth.tar` with `encoder`, `predictor`,
  `target_encoder` state dicts, keys prefixed by DDP's `module.`): fused qkv,
  `pos_embed`, `patch_embed.proj`, `blocks.N.*`, `norm`; predictor
  `predictor_embed`, `mask_token`, `predictor_pos_embed`, `predictor_blocks.N.*`,
  `predictor_norm`, `predictor_proj`.

Every conversion is strict: a missing, unexpected or wrongly shaped tensor raises a
`ValueError` that lists them all; nothing is left at its random initialisation.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import torch

from .configuration_cjepa import CJEPAConfig
from .modeling_cjepa import CJEPAForPreTraining, CJEPAModel

_BLOCK_RENAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.qkv": "attention.qkv",
    "attn.proj": "attention.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
# (C-JEPA name, transformers IJepa name) inside layers.N
_IJEPA_RENAMES = (
    ("attention.proj", "attention.o_proj"),
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
)


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """`module.load_state_dict` that reports every missing, unexpected and mis-shaped key at once."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        lines = [f"cannot load {what}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
        raise ValueError("\n".join(lines))
    module.load_state_dict(state_dict, strict=True)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


# ============================================================================ transformers IJepaModel


def config_from_ijepa(ijepa_config, **overrides) -> CJEPAConfig:
    """A `CJEPAConfig` with the encoder geometry of a transformers `IJepaConfig`.

    I-JEPA was trained with layer-norm eps 1e-6; the transformers config says 1e-12 by
    default, so the value is carried over as written to keep outputs identical."""
    image_size = ijepa_config.image_size if isinstance(ijepa_config.image_size, int) else ijepa_config.image_size[0]
    patch_size = ijepa_config.patch_size if isinstance(ijepa_config.patch_size, int) else ijepa_config.patch_size[0]
    fields = dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=ijepa_config.num_channels,
        hidden_size=ijepa_config.hidden_size,
        num_hidden_layers=ijepa_config.num_hidden_layers,
        num_attention_heads=ijepa_config.num_attention_heads,
        intermediate_size=ijepa_config.intermediate_size,
        hidden_act=ijepa_config.hidden_act,
        layer_norm_eps=ijepa_config.layer_norm_eps,
        qkv_bias=ijepa_config.qkv_bias,
    )
    fields.update(overrides)
    return CJEPAConfig(**fields)


def ijepa_to_cjepa_state_dict(state_dict: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """transformers `IJepaModel` keys -> `CJEPAModel` keys (q, k, v fused into qkv).

    The optional pooler (`add_pooling_layer=True`) has no counterpart and is dropped;
    any other unmapped key raises."""
    sd = {k: v for k, v in strip_prefix(state_dict, "ijepa.").items() if not k.startswith("pooler.")}
    out = {}
    for name in (
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.bias",
        "layernorm.weight",
        "layernorm.bias",
    ):
        out[name] = sd.pop(name)
    for i in range(num_layers):
        p = f"layers.{i}."
        out[p + "attention.qkv.weight"] = torch.cat([sd.pop(p + f"attention.{n}_proj.weight") for n in "qkv"], dim=0)
        if p + "attention.q_proj.bias" in sd:
            out[p + "attention.qkv.bias"] = torch.cat([sd.pop(p + f"attention.{n}_proj.bias") for n in "qkv"], dim=0)
        for ours, theirs in _IJEPA_RENAMES:
            for kind in ("weight", "bias"):
                out[f"{p}{ours}.{kind}"] = sd.pop(f"{p}{theirs}.{kind}")
    if sd:
        raise ValueError(f"IJepaModel state dict has keys with no C-JEPA counterpart: {', '.join(sorted(sd))}")
    return out


def cjepa_to_ijepa_state_dict(state_dict: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """`CJEPAModel` keys -> transformers `IJepaModel` keys (qkv split into q, k, v)."""
    sd = dict(state_dict)
    out = {
        "embeddings.position_embeddings": sd["embeddings.position_embeddings"],
        "embeddings.patch_embeddings.projection.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "layernorm.weight": sd["layernorm.weight"],
        "layernorm.bias": sd["layernorm.bias"],
    }
    for i in range(num_layers):
        p = f"layers.{i}."
        for name, tensor in zip("qkv", sd[p + "attention.qkv.weight"].chunk(3, dim=0)):
            out[p + f"attention.{name}_proj.weight"] = tensor.clone()
        if p + "attention.qkv.bias" in sd:
            for name, tensor in zip("qkv", sd[p + "attention.qkv.bias"].chunk(3, dim=0)):
                out[p + f"attention.{name}_proj.bias"] = tensor.clone()
        for ours, theirs in _IJEPA_RENAMES:
            for kind in ("weight", "bias"):
                out[f"{p}{theirs}.{kind}"] = sd[f"{p}{ours}.{kind}"]
    return out


def from_ijepa_model(ijepa_model, **config_overrides) -> CJEPAModel:
    """A `CJEPAModel` with the weights of a transformers `IJepaModel` (or a Hub id / folder of one)."""
    if isinstance(ijepa_model, (str, os.PathLike)):
        from transformers import IJepaModel

        ijepa_model = IJepaModel.from_pretrained(ijepa_model)
    config = config_from_ijepa(ijepa_model.config, **config_overrides)
    model = CJEPAModel(config)
    state = ijepa_to_cjepa_state_dict(ijepa_model.state_dict(), config.num_hidden_layers)
    load_strict(model, state, "IJepaModel weights into CJEPAModel")
    return model


def to_ijepa_model(model: CJEPAModel):
    """A transformers `IJepaModel` with the weights of a `CJEPAModel`."""
    from transformers import IJepaConfig, IJepaModel

    c = model.config
    ijepa_config = IJepaConfig(
        image_size=c.image_size,
        patch_size=c.patch_size,
        num_channels=c.num_channels,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        hidden_act=c.hidden_act,
        layer_norm_eps=c.layer_norm_eps,
        qkv_bias=c.qkv_bias,
    )
    ijepa = IJepaModel(ijepa_config)
    state = cjepa_to_ijepa_state_dict(model.state_dict(), c.num_hidden_layers)
    load_strict(ijepa, state, "CJEPAModel weights into IJepaModel")
    return ijepa


# ============================================================================ official I-JEPA checkpoints


def official_encoder_to_cjepa(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official I-JEPA `VisionTransformer` keys -> `CJEPAModel` keys."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_prefix(state_dict).items():
        if key == "pos_embed":
            out["embeddings.position_embeddings"] = value
        elif key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.split(".")[-1]] = value
        elif key.startswith("norm."):
            out["layernorm." + key.split(".")[-1]] = value
        elif (m := re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", key)) and m.group(2) in _BLOCK_RENAMES:
            out[f"layers.{m.group(1)}.{_BLOCK_RENAMES[m.group(2)]}.{m.group(3)}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"official I-JEPA encoder has keys with no C-JEPA counterpart: {', '.join(sorted(unknown))}")
    return out


def official_predictor_to_cjepa(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official I-JEPA `VisionTransformerPredictor` keys -> `CJEPAPredictor` keys."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_prefix(state_dict).items():
        if key == "predictor_pos_embed":
            out["position_embeddings"] = value
        elif key == "mask_token":
            out["mask_token"] = value
        elif key.startswith(("predictor_embed.", "predictor_proj.")):
            out[key] = value
        elif key.startswith("predictor_norm."):
            out["layernorm." + key.split(".")[-1]] = value
        elif (m := re.fullmatch(r"predictor_blocks\.(\d+)\.(.+)\.(weight|bias)", key)) and m.group(2) in _BLOCK_RENAMES:
            out[f"layers.{m.group(1)}.{_BLOCK_RENAMES[m.group(2)]}.{m.group(3)}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"official I-JEPA predictor has keys with no C-JEPA counterpart: {', '.join(sorted(unknown))}")
    return out


# Attention heads of I-JEPA's ViT sizes by width (Assran et al., CVPR 2023): the fused qkv
# weights do not say how they are split. The predictor uses the encoder's heads (I-JEPA's code).
_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def _depth(keys, prefix: str, what: str) -> int:
    """1 + the highest N of the `prefix`N.* keys (a gap shows up as missing keys when loading)."""
    indices = [int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    if not indices:
        raise ValueError(f"official I-JEPA {what} has no {prefix}N.* tensors, so its depth cannot be read")
    return 1 + max(indices)


def config_from_official(checkpoint: Mapping[str, Mapping[str, torch.Tensor]], image_size: int | None = None, **overrides) -> CJEPAConfig:
    """The C-JEPA config of an official I-JEPA checkpoint, read off its tensors' names and shapes
    (only shapes are read: meta tensors do).

    - patch size, channels, width: `patch_embed.proj.weight` (D, C, p, p);
    - image size: sqrt(positions) * p, positions from `pos_embed` (1, N, D);
    - depth: the `blocks.N.*` keys; MLP size: `blocks.0.mlp.fc1.weight`; qkv bias: its presence;
    - predictor width, depth, MLP: `predictor_embed.weight` (P, D), the `predictor_blocks.N.*`
      keys, `predictor_blocks.0.mlp.fc1.weight`;
    - heads cannot be read off the weights: I-JEPA's value for the width (Assran et al.,
      CVPR 2023), else width / 64; the predictor uses the encoder's, as I-JEPA does.

    The released checkpoints (facebookresearch/ijepa) read as: IN1K-vit.h.14-300e and
    IN22K-vit.h.14-900e: `vit-h14` at 224 px (1280 wide, 32 blocks, 16 heads, 16x16 patches of
    14 px; predictor 384 x 12); IN1K-vit.h.16-448px-300e: `vit-h16` at 448 px (28x28 patches of
    16 px); IN22K-vit.g.16-600e: `vit-g16` at 224 px (1408 wide, 40 blocks, 16 heads, MLP 6144;
    predictor 384 x 16). `image_size` and `overrides` replace what was read."""
    enc = strip_prefix(checkpoint["encoder"])
    pred = strip_prefix(checkpoint["predictor"])
    width, channels, patch, patch_w = enc["patch_embed.proj.weight"].shape
    if patch != patch_w:
        raise ValueError(f"official I-JEPA patches must be square, got {patch}x{patch_w} (patch_embed.proj.weight)")
    num_patches = enc["pos_embed"].shape[1]
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"official I-JEPA pos_embed must hold a square grid of positions, got {num_patches}")
    if image_size is not None and image_size // patch != grid:
        raise ValueError(
            f"image_size={image_size} with {patch}-px patches gives a {image_size // patch}x{image_size // patch} grid, but the "
            f"checkpoint's pos_embed holds {grid}x{grid} positions (image size {grid * patch})"
        )
    fields = dict(
        image_size=image_size or grid * patch,
        patch_size=patch,
        num_channels=channels,
        hidden_size=width,
        num_hidden_layers=_depth(enc, "blocks.", "encoder"),
        num_attention_heads=_HEADS_BY_WIDTH.get(width, max(1, width // 64)),
        intermediate_size=enc["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in enc,
        predictor_hidden_size=pred["predictor_embed.weight"].shape[0],
        predictor_num_hidden_layers=_depth(pred, "predictor_blocks.", "predictor"),
        predictor_intermediate_size=pred["predictor_blocks.0.mlp.fc1.weight"].shape[0],
    )
    fields.update(overrides)
    return CJEPAConfig(**fields)


def load_official_checkpoint(path: str | os.PathLike) -> dict:
    """Read an official I-JEPA `.pth.tar` with `weights_only=True` (no arbitrary pickle code)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no I-JEPA checkpoint at {os.fspath(path)!r}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{os.fspath(path)!r} is not an I-JEPA training checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    missing = [k for k in ("encoder", "predictor") if k not in checkpoint]
    if missing:
        raise ValueError(f"{os.fspath(path)!r} is not an I-JEPA training checkpoint: it lacks {missing}; found keys {sorted(checkpoint)}")
    return checkpoint


def from_official_checkpoint(checkpoint: Mapping, config: CJEPAConfig | None = None, **overrides) -> CJEPAForPreTraining:
    """A `CJEPAForPreTraining` from an official I-JEPA checkpoint dict: context encoder from
    `encoder`, target encoder from `target_encoder` (or `encoder` if absent), predictor
    from `predictor`; the VICReg projector (absent from I-JEPA) gets a fresh init.

    The model is built on the device of the checkpoint's tensors without a random init of
    the parts the checkpoint fills (for ViT-g, two billion parameters drawn only to be
    overwritten); the strict loads below leave none of them unset. Meta tensors give a meta
    model: a check of every key and shape that allocates nothing."""
    config = config or config_from_official(checkpoint, **overrides)
    device = next(iter(checkpoint["encoder"].values())).device
    with torch.device("meta"):
        model = CJEPAForPreTraining(config)
    model.to_empty(device=device)
    if model.projector is not None:
        model.projector.apply(model._init_weights)
    load_strict(model.context_encoder, official_encoder_to_cjepa(checkpoint["encoder"]), "official encoder")
    target = checkpoint.get("target_encoder", checkpoint["encoder"])
    load_strict(model.target_encoder, official_encoder_to_cjepa(target), "official target_encoder")
    load_strict(model.predictor, official_predictor_to_cjepa(checkpoint["predictor"]), "official predictor")
    model.freeze_target_encoder()
    return model


__all__ = [
    "cjepa_to_ijepa_state_dict",
    "config_from_ijepa",
    "config_from_official",
    "from_ijepa_model",
    "from_official_checkpoint",
    "ijepa_to_cjepa_state_dict",
    "load_official_checkpoint",
    "load_strict",
    "official_encoder_to_cjepa",
    "official_predictor_to_cjepa",
    "to_ijepa_model",
]
