"""Preprocessing for evaluation and fine-tuning: `ClassificationTransform` (built from `cjepa_hf.data`'s crop, padding rule and normaliser), the model's own image processor (`ProcessorTransform`, `model_transforms`), and batching helpers for `datasets`."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image, ImageOps

from ..data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    NormalizeToTensor,
    RandomResizedCrop,
    auto_pad_to,
    crop_pct_for_padding,
    pad_to_size,
    to_rgb,
)
from ..modeling_cjepa import build_image_processor

logger = logging.getLogger(__name__)

PROCESSOR_FILE = "preprocessor_config.json"


class ClassificationTransform:
    """PIL image -> float32 (3, image_size, image_size).

    Training: `to_rgb`, [pad to `pad_to`], RandomResizedCrop(`scale`), [horizontal flip with
    probability 1/2], ImageNet normalisation (`cjepa_hf.data`'s crop and normaliser).
    Evaluation: `to_rgb`, [pad], `cjepa_hf.data.EvalTransform` (shorter side to
    image_size / crop_pct, centre crop; crop_pct 1 when padded, so a padded Fashion-MNIST
    image is only normalised). Random numbers come from torch's global RNG, which the
    DataLoader seeds per worker."""

    def __init__(
        self,
        image_size: int,
        *,
        train: bool,
        pad_to: int | None = None,
        pad_fill: int = 0,
        scale: tuple[float, float] = (0.3, 1.0),
        hflip: bool = False,
        crop_pct: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.image_size = int(image_size)
        self.train = train
        self.pad_to = pad_to
        self.pad_fill = pad_fill
        self.hflip = hflip
        if train:
            self.crop = RandomResizedCrop(image_size, scale=scale)
            self.normalize = NormalizeToTensor(mean, std)
        else:
            self.eval_transform = EvalTransform(image_size, crop_pct=crop_pct_for_padding(image_size, pad_to, crop_pct), mean=mean, std=std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image)
        if self.pad_to is not None:
            image = pad_to_size(image, self.pad_to, self.pad_fill)
        if not self.train:
            return self.eval_transform(image)
        image = self.crop(image)
        if self.hflip and torch.rand(()) < 0.5:
            image = ImageOps.mirror(image)
        return self.normalize(image)

    def __repr__(self) -> str:
        kind = "train" if self.train else "eval"
        return f"ClassificationTransform({kind}, image_size={self.image_size}, pad_to={self.pad_to}, hflip={self.hflip})"


def batch_transform(transform: Callable[[Image.Image], torch.Tensor], image_column: str, label_column: str | None):
    """For `Dataset.with_transform`: a batch {image_column: [PIL], label_column: [int]} ->
    {"pixel_values": [(3, S, S)], "labels": [int]}."""

    def apply(batch: Mapping[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"pixel_values": [transform(image) for image in batch[image_column]]}
        if label_column is not None and label_column in batch:
            out["labels"] = list(batch[label_column])
        return out

    return apply


def collate_classification(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """[{"pixel_values": (3, S, S), "labels": int}] -> {"pixel_values": (B, 3, S, S), "labels": (B,)}."""
    batch = {"pixel_values": torch.stack([e["pixel_values"] for e in examples])}
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)
    return batch


def eval_image_processor(config: Any, pad_to: int | None = None) -> Any:
    """The evaluation preprocessing as a transformers image processor (what `AutoImageProcessor`
    and `pipeline` load from a saved folder). Without padding: `build_image_processor` (resize
    + centre crop, ImageNet mean/std). With `pad_to == config.image_size` (Fashion-MNIST):
    no resize and a centre "crop" to the image size, which for a smaller image pads it with
    black, centred, exactly like `pad_to_size` (tested against `ClassificationTransform`)."""
    if pad_to is None:
        return build_image_processor(config)
    if pad_to != config.image_size:
        raise ValueError(f"pad_to must equal the model's image_size ({config.image_size}) for a processor, got {pad_to}")
    return build_image_processor(config, resize=False)


def load_model_image_processor(name_or_path: str, **from_pretrained_kwargs: Any) -> Any | None:
    """The image processor saved with a model (its `preprocessor_config.json`), or None
    when it has none. This is the source of truth for how the model's inputs are made: the
    scripts use it for every dataset instead of guessing from the dataset's name."""
    from transformers import AutoImageProcessor

    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, PROCESSOR_FILE)):
            return None
        return AutoImageProcessor.from_pretrained(name_or_path)
    try:  # a Hub id: its processor, if the repo (or the offline cache) has one
        return AutoImageProcessor.from_pretrained(name_or_path, **from_pretrained_kwargs)
    except (OSError, ValueError) as error:
        logger.info("no image processor for %s (%s): preprocessing from the dataset", name_or_path, error)
        return None


def processor_pad_to(processor: Any, image_size: int) -> int | None:
    """`image_size` when `processor` pads rather than resizes (no resize, a centre crop to
    image_size x image_size, which pads a smaller image with black, centred: the processor
    `scripts/pretrain.py` saves for Fashion-MNIST at 32 px), else None."""
    crop = dict(getattr(processor, "crop_size", None) or {})
    if (
        not getattr(processor, "do_resize", True)
        and getattr(processor, "do_center_crop", False)
        and crop.get("height") == crop.get("width") == image_size
    ):
        return image_size
    return None


class ProcessorTransform:
    """PIL image -> float32 (3, H, W): `to_rgb`, then the model's own image processor, so the
    pixels are exactly what `AutoImageProcessor` users of that model get."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=to_rgb(image), return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:  # part of the feature-cache key: another processor, other features
        digest = hashlib.sha1(self.processor.to_json_string().encode()).hexdigest()[:12]
        return f"ProcessorTransform({type(self.processor).__name__}, sha1={digest})"


def model_transforms(
    model_name_or_path: str | None,
    config: Any,
    dataset_name: str | None,
    *,
    scale: tuple[float, float] = (0.3, 1.0),
    hflip: bool = False,
    **from_pretrained_kwargs: Any,
) -> tuple[ClassificationTransform, Callable[[Image.Image], torch.Tensor], Any]:
    """(training transform, evaluation transform, image processor to save with a fine-tuned
    model) for a model folder or Hub id.

    When the model has a saved image processor, it decides, for any dataset: evaluation
    runs it as is (`ProcessorTransform`), training pads where it pads and normalises with its
    mean / std before the RandomResizedCrop, and it is the processor saved with the result.
    Without one, Fashion-MNIST is padded (`cjepa_hf.data.auto_pad_to`) and anything else
    resized (`ClassificationTransform`, `eval_image_processor`)."""
    processor = load_model_image_processor(model_name_or_path, **from_pretrained_kwargs) if model_name_or_path else None
    if processor is None:
        pad_to = auto_pad_to(dataset_name, config.image_size, config.patch_size)
        train = ClassificationTransform(config.image_size, train=True, pad_to=pad_to, scale=scale, hflip=hflip)
        return train, ClassificationTransform(config.image_size, train=False, pad_to=pad_to), eval_image_processor(config, pad_to)
    pad_to = processor_pad_to(processor, config.image_size)
    norm = {}
    if getattr(processor, "do_normalize", False):
        norm = dict(mean=tuple(processor.image_mean), std=tuple(processor.image_std))
    train = ClassificationTransform(config.image_size, train=True, pad_to=pad_to, scale=scale, hflip=hflip, **norm)
    return train, ProcessorTransform(processor), processor
