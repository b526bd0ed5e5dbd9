"""Official I-JEPA checkpoints and transformers IJepaModel -> cjepa-hf, through the script.

The reference is a plain-torch re-computation of the I-JEPA forward pass (I-JEPA,
Assran et al. CVPR 2023, as facebookresearch/ijepa `vision_transformer.py` computes it) straight from the raw tensors
of the checkpoint: no cjepa_hf code is involved in it.
"""

import importlib.util
import itertools
import json
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import random_masks
from huggingface_hub import ModelCard
from transformers import AutoModel, IJepaConfig, IJepaModel

from cjepa_hf import CJEPAForPreTraining
from cjepa_hf.convert import config_from_official, from_official_checkpoint, load_official_checkpoint
from cjepa_hf.hub import infer_variant
from cjepa_hf.modeling_cjepa import REMOTE_CODE_FILES

ROOT = Path(__file__).resolve().parents[1]
WIDTH, DEPTH, HEADS, PATCH, IMAGE = 32, 2, 4, 4, 32
PRED_WIDTH, PRED_DEPTH = 16, 2
GRID = IMAGE // PATCH
N = GRID * GRID


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_script = _script("convert_ijepa_checkpoint")


# ============================================================================ an official-layout checkpoint


@dataclass(frozen=True)
class Layout:
    """The geometry of an official I-JEPA checkpoint: encoder, then predictor."""

    width: int
    depth: int
    heads: int
    patch: int
    image: int
    mlp: int
    pred_width: int
    pred_depth: int

    @property
    def num_patches(self) -> int:
        return (self.image // self.patch) ** 2


TINY_LAYOUT = Layout(WIDTH, DEPTH, HEADS, PATCH, IMAGE, 4 * WIDTH, PRED_WIDTH, PRED_DEPTH)


def random_tensors(seed):
    """Random values, LayerNorm weights near 1 so they matter: for the reference forward."""
    g = torch.Generator().manual_seed(seed)
    return lambda *shape, scale, offset=0.0: offset + scale * torch.randn(*shape, generator=g)


def labelled_tensors(seed):
    """Each tensor filled with its own constant (seed * 10^6 + a counter, exact in float32):
    no RNG cost at ViT-g width, and a tensor loaded into the wrong place, or a parameter
    left at its initialisation, shows."""
    labels = itertools.count(seed * 1_000_000)
    return lambda *shape, scale, offset=0.0: torch.full(shape, float(next(labels)))


def meta_tensors(seed):
    """Shapes without memory: enough for what is read off names and shapes."""
    return lambda *shape, scale, offset=0.0: torch.empty(shape, device="meta")


def _vit_state(make, prefix, width, depth, mlp, extra):
    """Blocks under the official names (`blocks.N.*` or `predictor_blocks.N.*`)."""
    sd = dict(extra)
    for i in range(depth):
        p = f"{prefix}{i}."
        sd[p + "norm1.weight"] = make(width, scale=0.1, offset=1.0)
        sd[p + "norm1.bias"] = make(width, scale=0.1)
        sd[p + "attn.qkv.weight"] = make(3 * width, width, scale=0.2)
        sd[p + "attn.qkv.bias"] = make(3 * width, scale=0.1)
        sd[p + "attn.proj.weight"] = make(width, width, scale=0.2)
        sd[p + "attn.proj.bias"] = make(width, scale=0.1)
        sd[p + "norm2.weight"] = make(width, scale=0.1, offset=1.0)
        sd[p + "norm2.bias"] = make(width, scale=0.1)
        sd[p + "mlp.fc1.weight"] = make(mlp, width, scale=0.2)
        sd[p + "mlp.fc1.bias"] = make(mlp, scale=0.1)
        sd[p + "mlp.fc2.weight"] = make(width, mlp, scale=0.2)
        sd[p + "mlp.fc2.bias"] = make(width, scale=0.1)
    return sd


def official_encoder_state(seed, layout=TINY_LAYOUT, tensors=random_tensors):
    """facebookresearch/ijepa `VisionTransformer.state_dict()` under DDP's `module.` prefix."""
    make, lay = tensors(seed), layout
    extra = {
        "patch_embed.proj.weight": make(lay.width, 3, lay.patch, lay.patch, scale=0.2),
        "patch_embed.proj.bias": make(lay.width, scale=0.1),
        # random, not sin-cos: a mapping error cannot hide behind the fixed values
        "pos_embed": make(1, lay.num_patches, lay.width, scale=0.5),
    }
    sd = _vit_state(make, "blocks.", lay.width, lay.depth, lay.mlp, extra)
    sd["norm.weight"] = make(lay.width, scale=0.1, offset=1.0)
    sd["norm.bias"] = make(lay.width, scale=0.1)
    return {"module." + k: v for k, v in sd.items()}  # DDP prefix, as the official checkpoints have it


def official_predictor_state(seed, layout=TINY_LAYOUT, tensors=random_tensors):
    """facebookresearch/ijepa `VisionTransformerPredictor.state_dict()` under `module.`."""
    make, lay = tensors(seed), layout
    extra = {
        "predictor_embed.weight": make(lay.pred_width, lay.width, scale=0.2),
        "predictor_embed.bias": make(lay.pred_width, scale=0.1),
        "mask_token": make(1, 1, lay.pred_width, scale=0.5),
        "predictor_pos_embed": make(1, lay.num_patches, lay.pred_width, scale=0.5),
    }
    sd = _vit_state(make, "predictor_blocks.", lay.pred_width, lay.pred_depth, 4 * lay.pred_width, extra)
    sd["predictor_norm.weight"] = make(lay.pred_width, scale=0.1, offset=1.0)
    sd["predictor_norm.bias"] = make(lay.pred_width, scale=0.1)
    sd["predictor_proj.weight"] = make(lay.width, lay.pred_width, scale=0.2)
    sd["predictor_proj.bias"] = make(lay.width, scale=0.1)
    return {"module." + k: v for k, v in sd.items()}


def official_checkpoint(layout=TINY_LAYOUT, tensors=random_tensors):
    """A facebookresearch/ijepa training checkpoint: the three state dicts, the optimizer state and the run's scalars."""
    encoder, predictor = official_encoder_state(1, layout, tensors), official_predictor_state(2, layout, tensors)
    params = [torch.nn.Parameter(torch.randn(3, generator=torch.Generator().manual_seed(i))) for i in range(3)]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    return {
        "encoder": encoder,
        "predictor": predictor,
        "target_encoder": official_encoder_state(3, layout, tensors),  # differs from `encoder`, as after EMA
        "opt": opt.state_dict(),
        "scaler": None,
        "epoch": 300,
        "loss": 0.123,
        "batch_size": 128,
        "world_size": 16,
        "lr": 0.001,
    }


# The released I-JEPA checkpoints (facebookresearch/ijepa; Assran et al., CVPR 2023): ViT-H is
# 1280 wide, 32 blocks, 16 heads, MLP 5120; ViT-g 1408 wide, 40 blocks, 16 heads, MLP 6144
# (ratio 48/11); the predictor is 384 wide, 12 blocks for ViT-H, 16 for ViT-g.
VIT_H14 = Layout(width=1280, depth=32, heads=16, patch=14, image=224, mlp=5120, pred_width=384, pred_depth=12)
VIT_H16_448 = Layout(width=1280, depth=32, heads=16, patch=16, image=448, mlp=5120, pred_width=384, pred_depth=12)
VIT_G16 = Layout(width=1408, depth=40, heads=16, patch=16, image=224, mlp=6144, pred_width=384, pred_depth=16)
# file: (layout, positions in pos_embed, preset, model-card variant the script picks)
OFFICIAL = {
    "IN1K-vit.h.14-300e.pth.tar": (VIT_H14, 256, "vit-h14", "ijepa-vith14"),  # (224/14)^2
    "IN22K-vit.h.14-900e.pth.tar": (VIT_H14, 256, "vit-h14", "ijepa-vith14"),
    "IN1K-vit.h.16-448px-300e.pth.tar": (VIT_H16_448, 784, "vit-h16", "ijepa-vith16"),  # (448/16)^2
    "IN22K-vit.g.16-600e.pth.tar": (VIT_G16, 196, "vit-g16", "ijepa-vitg16"),  # (224/16)^2
}


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "IN1K-vit.tiny.4-300e.pth.tar"
    torch.save(official_checkpoint(), path)
    return path


# ============================================================================ reference forward (plain torch)


def ref_block(x, sd, p, heads):
    """Official pre-norm block: x + attn(norm1(x)); x + mlp(norm2(x)); LayerNorm eps 1e-6."""
    batch, length, width = x.shape
    h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
    qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
    q, k, v = qkv.reshape(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
    h = (attn @ v).transpose(1, 2).reshape(batch, length, width)
    x = x + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
    h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x + h


def ref_encoder(state, pixels, keep=None):
    """Official VisionTransformer.forward: patch conv, + pos_embed, drop to the kept
    patches, blocks, final norm. In float64."""
    sd = {k.removeprefix("module."): v.double() for k, v in state.items()}
    x = F.conv2d(pixels.double(), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"]  # (B, N, D)
    if keep is not None:
        x = torch.stack([x[b, keep[b]] for b in range(x.shape[0])])
    for i in range(DEPTH):
        x = ref_block(x, sd, f"blocks.{i}.", HEADS)
    return F.layer_norm(x, (WIDTH,), sd["norm.weight"], sd["norm.bias"], 1e-6)


def ref_predictor(state, context, context_idx, target_idx):
    """Official VisionTransformerPredictor, one (image, target block) sequence at a time:
    embed the context + predictor pos at the context indices; mask token + pos at the
    target indices; blocks; norm; keep the target outputs; project."""
    sd = {k.removeprefix("module."): v.double() for k, v in state.items()}
    pos = sd["predictor_pos_embed"][0]
    batch, blocks, per_block = target_idx.shape
    out = torch.empty(batch, blocks, per_block, WIDTH, dtype=torch.float64)
    for b in range(batch):
        ctx = F.linear(context[b].double(), sd["predictor_embed.weight"], sd["predictor_embed.bias"]) + pos[context_idx[b]]
        for m in range(blocks):
            queries = sd["mask_token"][0] + pos[target_idx[b, m]]  # (T, P)
            x = torch.cat([ctx, queries])[None]
            for i in range(PRED_DEPTH):
                x = ref_block(x, sd, f"predictor_blocks.{i}.", HEADS)
            x = F.layer_norm(x, (PRED_WIDTH,), sd["predictor_norm.weight"], sd["predictor_norm.bias"], 1e-6)
            out[b, m] = F.linear(x[0, len(ctx) :], sd["predictor_proj.weight"], sd["predictor_proj.bias"])
    return out


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(3, 3, IMAGE, IMAGE, generator=g)
    context, target = random_masks(3, N, kept=24, blocks=4, per_block=6, seed=seed)
    return pixels, context, target


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


# ============================================================================ tests


def test_official_checkpoint_matches_reference_forward():
    checkpoint = official_checkpoint()
    model = from_official_checkpoint(checkpoint, num_attention_heads=HEADS).eval()
    pixels, context, target = _inputs()
    with torch.no_grad():
        assert _max_diff(model.target_encoder(pixels).last_hidden_state, ref_encoder(checkpoint["target_encoder"], pixels)) < 1e-5
        ctx = model.context_encoder(pixels, keep_indices=context).last_hidden_state
        ref_ctx = ref_encoder(checkpoint["encoder"], pixels, keep=context)
        assert _max_diff(ctx, ref_ctx) < 1e-5
        ref_pred = ref_predictor(checkpoint["predictor"], ref_ctx, context, target)
        assert _max_diff(model.predictor(ctx, context, target), ref_pred) < 1e-5
        assert _max_diff(model(pixels, context, target).predictions, ref_pred) < 1e-5
    # the context and target encoders really come from different tensors
    assert _max_diff(model.target_encoder(pixels).last_hidden_state, model.context_encoder(pixels).last_hidden_state) > 1e-2


def test_script_converts_official_checkpoint(tmp_path, checkpoint_file, capsys):
    out = tmp_path / "converted"
    rc = convert_script.main(
        [
            "--checkpoint",
            str(checkpoint_file),
            "--output",
            str(out),
            "--num-heads",
            str(HEADS),
            "--repo-id",
            "me/ijepa-tiny",
            "--dataset",
            "ILSVRC/imagenet-1k",
            "--base-model",
            "facebook/ijepa_vith14_1k",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "patch 4, image 32, predictor 16 x 2, preset none (a custom size), variant ijepa\n" in captured.out
    checkpoint = torch.load(checkpoint_file, weights_only=True)
    pixels, context, target = _inputs(seed=1)

    # the pretraining folder continues training: all three parts equal the reference
    model = CJEPAForPreTraining.from_pretrained(out / "pretraining").eval()
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    with torch.no_grad():
        ref_ctx = ref_encoder(checkpoint["encoder"], pixels, keep=context)
        assert _max_diff(model.target_encoder(pixels).last_hidden_state, ref_encoder(checkpoint["target_encoder"], pixels)) < 1e-5
        assert (
            _max_diff(model(pixels, context, target).predictions, ref_predictor(checkpoint["predictor"], ref_ctx, context, target)) < 1e-5
        )

    # the release is the official *target* encoder, safetensors only
    files = sorted(os.listdir(out / "release"))
    assert files == sorted(["README.md", "config.json", "model.safetensors", "preprocessor_config.json", *REMOTE_CODE_FILES])
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in os.listdir(out / "pretraining"))
    release = AutoModel.from_pretrained(out / "release").eval()
    assert type(release).__name__ == "CJEPAModel"
    with torch.no_grad():
        assert _max_diff(release(pixels).last_hidden_state, ref_encoder(checkpoint["target_encoder"], pixels)) < 1e-5

    card = ModelCard.load(out / "release" / "README.md")
    assert card.data.license == "cc-by-nc-4.0"
    assert card.data.base_model == "facebook/ijepa_vith14_1k"
    assert card.data.datasets == ["ILSVRC/imagenet-1k"]
    assert card.data.eval_results is None
    assert "IN1K-vit.tiny.4-300e.pth.tar" in card.text and "| epoch | 300 |" in card.text
    assert "`target_encoder` weights" in card.text
    config = json.loads((out / "release" / "config.json").read_text())
    assert config["num_attention_heads"] == HEADS and config["hidden_size"] == WIDTH
    assert config["predictor_hidden_size"] == PRED_WIDTH and config["image_size"] == IMAGE


def test_script_converts_transformers_ijepa_model(tmp_path, capsys):
    torch.manual_seed(0)
    ijepa = IJepaModel(
        IJepaConfig(
            image_size=IMAGE,
            patch_size=PATCH,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            layer_norm_eps=1e-6,
        )
    ).eval()
    ijepa.save_pretrained(tmp_path / "ijepa")
    out = tmp_path / "converted"
    rc = convert_script.main(["--ijepa-model", str(tmp_path / "ijepa"), "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    x = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        expected = ijepa(x).last_hidden_state
        release = AutoModel.from_pretrained(out / "release").eval()
        assert _max_diff(release(x).last_hidden_state, expected) < 1e-5
        model = CJEPAForPreTraining.from_pretrained(out / "pretraining").eval()
        assert _max_diff(model.context_encoder(x).last_hidden_state, expected) < 1e-5
        assert _max_diff(model.target_encoder(x).last_hidden_state, expected) < 1e-5
    card = ModelCard.load(out / "release" / "README.md")
    assert card.data.base_model is None  # a local folder is not a Hub id
    assert "context encoder" in card.text and "freshly initialised" in card.text


def test_wrong_shapes_and_missing_keys_are_listed(tmp_path, capsys):
    checkpoint = official_checkpoint()
    checkpoint["encoder"].pop("module.blocks.0.norm2.bias")
    checkpoint["encoder"]["module.blocks.1.attn.qkv.weight"] = torch.zeros(3 * WIDTH, WIDTH + 1)
    checkpoint["predictor"].pop("module.predictor_blocks.1.mlp.fc2.weight")
    with pytest.raises(ValueError) as info:
        from_official_checkpoint(checkpoint, num_attention_heads=HEADS)
    message = str(info.value)
    assert "missing keys (1): layers.0.norm2.bias" in message
    assert "layers.1.attention.qkv.weight: checkpoint (96, 33) vs model (96, 32)" in message

    path = tmp_path / "broken.pth.tar"
    torch.save(checkpoint, path)
    rc = convert_script.main(["--checkpoint", str(path), "--output", str(tmp_path / "out"), "--num-heads", str(HEADS)])
    err = capsys.readouterr().err
    assert rc == 2 and "layers.0.norm2.bias" in err and "layers.1.attention.qkv.weight" in err

    checkpoint = official_checkpoint()
    checkpoint["predictor"]["module.predictor_extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth.tar"
    torch.save(checkpoint, path)
    rc = convert_script.main(["--checkpoint", str(path), "--output", str(tmp_path / "out2"), "--num-heads", str(HEADS)])
    err = capsys.readouterr().err
    assert rc == 2 and "predictor_extra.weight" in err


class _NotWeights:
    pass


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("state_dict", "is not an I-JEPA training checkpoint: it lacks ['encoder', 'predictor']"),
        ("text", "is not an I-JEPA checkpoint: torch.load(weights_only=True) cannot read it"),
        ("pickled_object", "is not an I-JEPA checkpoint: torch.load(weights_only=True) cannot read it"),
        ("tensor", "is not an I-JEPA training checkpoint: it holds a Tensor, not a dict"),
        ("encoder_not_a_state_dict", "its 'encoder' entry is not a state dict of tensors"),
    ],
)
def test_script_refuses_files_that_are_not_ijepa_checkpoints(tmp_path, capsys, kind, expected):
    path = tmp_path / "file.pth.tar"
    if kind == "state_dict":
        torch.save({"state_dict": official_encoder_state(0)}, path)
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "pickled_object":
        with open(path, "wb") as f:
            pickle.dump({"encoder": _NotWeights()}, f, protocol=2)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save({"encoder": [1, 2], "predictor": {}}, path)
    rc = convert_script.main(["--checkpoint", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err, err
    assert not (tmp_path / "out" / "release").exists()


def test_load_official_checkpoint_never_unpickles_code(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"encoder": {}, "predictor": {}, "payload": _NotWeights()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_official_checkpoint(path)


def test_script_refuses_a_non_empty_output(tmp_path, checkpoint_file, capsys):
    (tmp_path / "out" / "release").mkdir(parents=True)
    (tmp_path / "out" / "release" / "old.txt").write_text("x")
    rc = convert_script.main(["--checkpoint", str(checkpoint_file), "--output", str(tmp_path / "out"), "--num-heads", str(HEADS)])
    assert rc == 2 and "exists and is not empty" in capsys.readouterr().err


# ============================================================================ the released layouts, full size


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_released_layouts_are_read_off_names_and_shapes_at_full_depth(name):
    """Every geometry field, at the released depth, from meta tensors (no memory); the strict
    load runs on the meta device too, so every key and shape of the full model is checked."""
    layout, positions, preset, variant = OFFICIAL[name]
    checkpoint = official_checkpoint(layout, meta_tensors)
    assert checkpoint["encoder"]["module.pos_embed"].shape == (1, positions, layout.width)
    assert checkpoint["predictor"]["module.predictor_pos_embed"].shape == (1, positions, 384)
    config = config_from_official(checkpoint)
    assert (config.patch_size, config.image_size, config.num_patches) == (layout.patch, layout.image, positions)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        layout.width,
        layout.depth,
        16,
        layout.mlp,
    )
    assert (config.predictor_hidden_size, config.predictor_num_hidden_layers, config.predictor_num_attention_heads) == (
        384,
        layout.pred_depth,
        16,
    )
    assert config.predictor_intermediate_size == 4 * 384 and config.qkv_bias
    assert config.matching_preset() == preset
    assert infer_variant(config, "ijepa") == variant
    model = from_official_checkpoint(checkpoint, config=config)  # built where the tensors are: on meta
    assert {p.device.type for p in model.parameters()} == {"meta"}
    for part, key in ((model.context_encoder, "encoder"), (model.target_encoder, "target_encoder"), (model.predictor, "predictor")):
        assert sum(t.numel() for t in part.state_dict().values()) == sum(t.numel() for t in checkpoint[key].values())
    assert not any(p.requires_grad for p in model.target_encoder.parameters())


@pytest.mark.parametrize("layout", [VIT_H14, VIT_H16_448, VIT_G16], ids=["vit-h14-224", "vit-h16-448", "vit-g16-224"])
def test_released_layouts_load_strictly_at_full_width(layout):
    """The released widths with 2 encoder and 2 predictor blocks (about 1 GB for ViT-g):
    every tensor of the three parts is the checkpoint's, each exactly once."""
    shallow = replace(layout, depth=2, pred_depth=2)
    checkpoint = official_checkpoint(shallow, labelled_tensors)
    model = from_official_checkpoint(checkpoint)
    c = model.config
    assert (c.patch_size, c.image_size, c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (
        layout.patch,
        layout.image,
        layout.width,
        2,
        layout.mlp,
    )
    assert (c.predictor_hidden_size, c.predictor_num_hidden_layers, c.matching_preset()) == (384, 2, None)
    for part, key in ((model.context_encoder, "encoder"), (model.target_encoder, "target_encoder"), (model.predictor, "predictor")):
        loaded = part.state_dict()
        assert all(bool((t == t.view(-1)[0]).all()) for t in loaded.values()), f"{key}: a tensor kept its initialisation"
        assert sorted(t.view(-1)[0].item() for t in loaded.values()) == sorted(t.view(-1)[0].item() for t in checkpoint[key].values())
    pairs = [
        (model.target_encoder, "target_encoder", "embeddings.position_embeddings", "pos_embed"),
        (model.target_encoder, "target_encoder", "embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
        (model.target_encoder, "target_encoder", "layers.1.attention.qkv.weight", "blocks.1.attn.qkv.weight"),
        (model.context_encoder, "encoder", "layers.0.norm2.bias", "blocks.0.norm2.bias"),
        (model.context_encoder, "encoder", "layernorm.weight", "norm.weight"),
        (model.predictor, "predictor", "position_embeddings", "predictor_pos_embed"),
        (model.predictor, "predictor", "mask_token", "mask_token"),
        (model.predictor, "predictor", "layers.1.mlp.fc2.weight", "predictor_blocks.1.mlp.fc2.weight"),
        (model.predictor, "predictor", "layernorm.bias", "predictor_norm.bias"),
        (model.predictor, "predictor", "predictor_proj.weight", "predictor_proj.weight"),
    ]
    for part, key, ours, theirs in pairs:
        assert torch.equal(part.state_dict()[ours], checkpoint[key]["module." + theirs]), (ours, theirs)
    # the converter initialises only the projector: a new part of the model would need it too
    assert {key.split(".")[0] for key in model.state_dict()} == {"context_encoder", "target_encoder", "predictor", "projector"}
    # the projector, absent from I-JEPA, has the usual init: truncated normal (std 0.02), zero biases, fresh BatchNorm
    first = model.projector.linears[0]
    assert first.weight.std().item() == pytest.approx(0.02, rel=0.05) and not first.bias.any()
    assert not model.projector.norms[0].running_mean.any() and bool((model.projector.norms[0].running_var == 1).all())
    assert [p.requires_grad for p in (first.weight, model.predictor.mask_token, model.target_encoder.layernorm.weight)] == [
        True,
        True,
        False,
    ]


def test_image_size_that_contradicts_the_positions_is_refused():
    checkpoint = official_checkpoint(VIT_H14, meta_tensors)
    with pytest.raises(
        ValueError, match=r"image_size=448 with 14-px patches gives a 32x32 grid, but the checkpoint's pos_embed holds 16x16"
    ):
        config_from_official(checkpoint, image_size=448)
    assert config_from_official(checkpoint, image_size=224).image_size == 224
