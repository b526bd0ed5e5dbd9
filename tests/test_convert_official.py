"""Official I-JEPA checkpoints and transformers IJepaModel -> cjepa-hf, through the script.

The reference is a plain-torch re-computation of the I-JEPA forward pass (I-JEPA,
Assran et al. CVPR 2023, as facebookresearch/ijepa `vision_transformer.py` computes it) straight from the raw tensors
of the checkpoint: no cjepa_hf code is involved in it.
"""

import importlib.util
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import random_masks
from huggingface_hub import ModelCard
from transformers import AutoModel, IJepaConfig, IJepaModel

from cjepa_hf import CJEPAForPreTraining
from cjepa_hf.convert import from_official_checkpoint, load_official_checkpoint
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


def _vit_state(g, prefix, width, depth, mlp, extra):
    """Random tensors under the official names; LayerNorm weights near 1 so they matter."""
    sd = dict(extra)
    for i in range(depth):
        p = f"{prefix}{i}."
        sd[p + "norm1.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
        sd[p + "norm1.bias"] = 0.1 * torch.randn(width, generator=g)
        sd[p + "attn.qkv.weight"] = 0.2 * torch.randn(3 * width, width, generator=g)
        sd[p + "attn.qkv.bias"] = 0.1 * torch.randn(3 * width, generator=g)
        sd[p + "attn.proj.weight"] = 0.2 * torch.randn(width, width, generator=g)
        sd[p + "attn.proj.bias"] = 0.1 * torch.randn(width, generator=g)
        sd[p + "norm2.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
        sd[p + "norm2.bias"] = 0.1 * torch.randn(width, generator=g)
        sd[p + "mlp.fc1.weight"] = 0.2 * torch.randn(mlp, width, generator=g)
        sd[p + "mlp.fc1.bias"] = 0.1 * torch.randn(mlp, generator=g)
        sd[p + "mlp.fc2.weight"] = 0.2 * torch.randn(width, mlp, generator=g)
        sd[p + "mlp.fc2.bias"] = 0.1 * torch.randn(width, generator=g)
    return sd


def official_encoder_state(seed):
    g = torch.Generator().manual_seed(seed)
    extra = {
        "patch_embed.proj.weight": 0.2 * torch.randn(WIDTH, 3, PATCH, PATCH, generator=g),
        "patch_embed.proj.bias": 0.1 * torch.randn(WIDTH, generator=g),
        "pos_embed": 0.5 * torch.randn(1, N, WIDTH, generator=g),  # random: a mapping error cannot hide behind sin-cos
    }
    sd = _vit_state(g, "blocks.", WIDTH, DEPTH, 4 * WIDTH, extra)
    sd["norm.weight"] = 1 + 0.1 * torch.randn(WIDTH, generator=g)
    sd["norm.bias"] = 0.1 * torch.randn(WIDTH, generator=g)
    return {"module." + k: v for k, v in sd.items()}  # DDP prefix, as the official checkpoints have it


def official_predictor_state(seed):
    g = torch.Generator().manual_seed(seed)
    extra = {
        "predictor_embed.weight": 0.2 * torch.randn(PRED_WIDTH, WIDTH, generator=g),
        "predictor_embed.bias": 0.1 * torch.randn(PRED_WIDTH, generator=g),
        "mask_token": 0.5 * torch.randn(1, 1, PRED_WIDTH, generator=g),
        "predictor_pos_embed": 0.5 * torch.randn(1, N, PRED_WIDTH, generator=g),
    }
    sd = _vit_state(g, "predictor_blocks.", PRED_WIDTH, PRED_DEPTH, 4 * PRED_WIDTH, extra)
    sd["predictor_norm.weight"] = 1 + 0.1 * torch.randn(PRED_WIDTH, generator=g)
    sd["predictor_norm.bias"] = 0.1 * torch.randn(PRED_WIDTH, generator=g)
    sd["predictor_proj.weight"] = 0.2 * torch.randn(WIDTH, PRED_WIDTH, generator=g)
    sd["predictor_proj.bias"] = 0.1 * torch.randn(WIDTH, generator=g)
    return {"module." + k: v for k, v in sd.items()}


def official_checkpoint():
    encoder, predictor = official_encoder_state(1), official_predictor_state(2)
    params = [torch.nn.Parameter(v.clone()) for v in list(encoder.values())[:3]]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    return {
        "encoder": encoder,
        "predictor": predictor,
        "target_encoder": official_encoder_state(3),  # differs from `encoder`, as after EMA
        "opt": opt.state_dict(),
        "scaler": None,
        "epoch": 300,
        "loss": 0.123,
        "batch_size": 128,
        "world_size": 16,
        "lr": 0.001,
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
    assert rc == 0, capsys.readouterr().err
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
