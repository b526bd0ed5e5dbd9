#!/usr/bin/env python
"""Convert I-JEPA weights to cjepa-hf: a pretraining folder and a Hub release.

    # an official facebookresearch/ijepa training checkpoint
    python scripts/convert_ijepa_checkpoint.py --checkpoint IN1K-vit.h.14-300e.pth.tar \
        --output converted/ijepa-vith14 --repo-id me/ijepa-vith14 \
        --dataset ILSVRC/imagenet-1k --base-model facebook/ijepa_vith14_1k

    # a transformers IJepaModel (Hub id or folder)
    python scripts/convert_ijepa_checkpoint.py --ijepa-model facebook/ijepa_vith14_1k --output converted/hf-vith14

Writes
    OUTPUT/pretraining  a CJEPAForPreTraining (context encoder, EMA target encoder, predictor;
                        the VICReg projector, absent from I-JEPA, freshly initialised) to
                        continue training with cjepa-hf;
    OUTPUT/release      the target encoder as a CJEPAModel + model card (see cjepa_hf.hub).

Official checkpoints are read only through `cjepa_hf.convert.load_official_checkpoint`
(torch.load with weights_only=True); weights are written as safetensors only. Every tensor
is mapped strictly: missing, unexpected or mis-shaped tensors stop the conversion with the
full list. Every released layout converts (ViT-H/14 at 224 px, IN-1K and IN-22K; ViT-H/16
at 448 px; ViT-g/16 at 224 px): patch and image size, width, depth, MLP and the predictor's
width and depth are read off the tensors. Attention heads cannot be read off the weights: they
default to I-JEPA's value for the width (Assran et al., CVPR 2023: 16 for ViT-H and ViT-g);
pass --num-heads for anything else.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from cjepa_hf import CJEPAForPreTraining
from cjepa_hf.convert import config_from_official, from_ijepa_model, from_official_checkpoint, load_official_checkpoint
from cjepa_hf.hub import export_release, infer_variant, load_results, load_variants


class ConversionError(Exception):
    """A conversion that cannot go on; the message says why."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def read_official_checkpoint(path: str) -> dict:
    """`load_official_checkpoint` with every failure turned into one clear message."""
    if not os.path.isfile(path):
        raise ConversionError(f"no such file: {path!r}")
    try:
        checkpoint = load_official_checkpoint(path)
    except ValueError as error:
        raise ConversionError(str(error)) from error
    except Exception as error:  # torch.load refusing the file: not a torch file, or pickled code
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConversionError(
            f"{path!r} is not an I-JEPA checkpoint: torch.load(weights_only=True) cannot read it "
            f"({type(error).__name__}: {first}). Expected a .pth.tar written by facebookresearch/ijepa, "
            "a dict with 'encoder', 'predictor' and 'target_encoder' state dicts."
        ) from error
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path!r} is not an I-JEPA training checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    for key in ("encoder", "predictor", "target_encoder"):
        part = checkpoint.get(key)
        if part is None and key == "target_encoder":
            continue
        if not isinstance(part, Mapping) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ConversionError(f"{path!r} is not an I-JEPA checkpoint: its {key!r} entry is not a state dict of tensors")
    return dict(checkpoint)


def convert_official(args: argparse.Namespace) -> tuple[CJEPAForPreTraining, dict, str | None]:
    checkpoint = read_official_checkpoint(args.checkpoint)
    checkpoint.pop("opt", None)  # optimizer state: not needed, and as large as the weights
    overrides = {"num_attention_heads": args.num_heads} if args.num_heads else {}
    try:
        config = config_from_official(checkpoint, image_size=args.image_size, **overrides)
        model = from_official_checkpoint(checkpoint, config=config)
    except KeyError as error:
        raise ConversionError(f"cannot convert {args.checkpoint!r}: missing tensor {error}") from error
    except ValueError as error:
        raise ConversionError(f"cannot convert {args.checkpoint!r}: {error}") from error
    has_target = "target_encoder" in checkpoint
    conversion = {
        "source": os.path.basename(args.checkpoint),
        "format": "official I-JEPA training checkpoint (facebookresearch/ijepa)",
        "sha256": _sha256(args.checkpoint),
        "epoch": checkpoint.get("epoch"),
        "encoder": (
            "the EMA target encoder of the official I-JEPA checkpoint (its `target_encoder` weights)"
            if has_target
            else "the `encoder` weights of the official I-JEPA checkpoint (it has no `target_encoder`)"
        ),
        "attention heads": f"{config.num_attention_heads} ({'given' if args.num_heads else 'paper value for the width'})",
        "predictor": "converted (in the pretraining folder, not in the release)",
    }
    return model, {k: v for k, v in conversion.items() if v is not None}, None


def convert_ijepa_model(args: argparse.Namespace) -> tuple[CJEPAForPreTraining, dict, str | None]:
    overrides = {}
    if args.num_heads:
        overrides["num_attention_heads"] = args.num_heads
    if args.image_size:
        overrides["image_size"] = args.image_size
    try:
        encoder = from_ijepa_model(args.ijepa_model, **overrides)
    except (KeyError, ValueError) as error:
        raise ConversionError(f"cannot convert {args.ijepa_model!r}: {error}") from error
    torch.manual_seed(args.seed)  # the predictor and projector are new: make them reproducible
    model = CJEPAForPreTraining(encoder.config)
    model.context_encoder.load_state_dict(encoder.state_dict())
    model.target_encoder.load_state_dict(encoder.state_dict())
    model.freeze_target_encoder()
    conversion = {
        "source": args.ijepa_model,
        "format": "transformers IJepaModel",
        "encoder": (
            "the I-JEPA encoder as ported to transformers' IJepaModel (that port holds the context encoder, not the EMA target encoder)"
        ),
        "predictor": f"not in the source: freshly initialised (seed {args.seed}) in the pretraining folder",
    }
    is_local = os.path.isdir(args.ijepa_model)
    return model, conversion, (None if is_local else args.ijepa_model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="official I-JEPA training checkpoint (.pth.tar)")
    source.add_argument("--ijepa-model", help="transformers IJepaModel: Hub id or folder")
    parser.add_argument("--output", required=True, help="folder for OUTPUT/pretraining and OUTPUT/release")
    parser.add_argument("--image-size", type=int, help="training image size (default: read off the position embeddings)")
    parser.add_argument("--num-heads", type=int, help="attention heads (cannot be read off the weights)")
    parser.add_argument("--repo-id", help="Hub repo id used in the card (default: the variant name)")
    parser.add_argument("--variant", choices=sorted(load_variants()), help="model-card variant (default: from the geometry)")
    parser.add_argument("--dataset", action="append", help="Hub id of the pretraining dataset (repeatable)")
    parser.add_argument("--base-model", help="Hub id of the model the weights come from (default for --ijepa-model: its id)")
    parser.add_argument("--results", help="JSON list of results measured on the converted encoder")
    parser.add_argument("--seed", type=int, default=0, help="seed for the newly initialised parts")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    pretraining, release = out / "pretraining", out / "release"
    try:
        for folder in (pretraining, release):
            if folder.exists() and any(folder.iterdir()):
                raise ConversionError(f"{os.fspath(folder)!r} exists and is not empty; choose a new --output")
        if args.checkpoint:
            model, conversion, base_model = convert_official(args)
        else:
            model, conversion, base_model = convert_ijepa_model(args)
        model.save_pretrained(pretraining)
        variant = args.variant or infer_variant(model.config, "ijepa")
        files = export_release(
            pretraining,
            release,
            model_name=args.repo_id or variant,
            results=load_results(args.results) if args.results else None,
            base_model=args.base_model or base_model,
            datasets=args.dataset,
            variant=variant,
            conversion=conversion,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    c = model.config
    print(
        f"converted {conversion['source']}: ViT {c.hidden_size}/{c.num_hidden_layers}/{c.num_attention_heads} "
        f"(width/depth/heads), patch {c.patch_size}, image {c.image_size}, predictor {c.predictor_hidden_size} x "
        f"{c.predictor_num_hidden_layers}, preset {c.matching_preset() or 'none (a custom size)'}, variant {variant}\n"
        f"  pretraining: {pretraining}\n  release:     {release} ({', '.join(files)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
