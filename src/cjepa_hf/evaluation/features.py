"""Frozen-encoder features: `load_encoder`, `encode` (mean-pooled target-encoder output, or the pooled last n blocks), `extract_features` with an on-disk cache, the raw-pixel baseline and collapse statistics of a feature set.

Features come from the target encoder, average-pooled over the patch tokens (there is no CLS
token), the protocol of I-JEPA (Assran et al., CVPR 2023, section 5 and Appendix A) that
C-JEPA (Mo & Tong, NeurIPS 2024) evaluates with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..losses import effective_rank, feature_std
from .labelled import check_columns
from .preprocessing import ClassificationTransform, batch_transform, collate_classification

logger = logging.getLogger(__name__)


def load_encoder(name_or_path: str, *, random_init: bool = False, seed: int = 0, **from_pretrained_kwargs: Any) -> nn.Module:
    """The frozen encoder to evaluate, in eval mode.

    `AutoModel.from_pretrained(name_or_path)`: a saved `CJEPAForPreTraining` (a pretraining
    checkpoint) gives its EMA target encoder, an exported encoder folder or Hub id the
    encoder itself. `random_init=True`: the same architecture (the folder's config) with
    freshly initialised weights (seeded): the random-features baseline."""
    from transformers import AutoConfig, AutoModel  # "cjepa" is registered by importing this package

    looks_like_a_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_a_path and not os.path.exists(os.path.expanduser(name_or_path)):  # not "owner/name" on the Hub
        raise FileNotFoundError(f"model folder {name_or_path!r} does not exist (a folder with config.json, or a Hub id 'owner/name')")
    if random_init:
        config = AutoConfig.from_pretrained(name_or_path, **from_pretrained_kwargs)
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    else:
        model = AutoModel.from_pretrained(name_or_path, **from_pretrained_kwargs)
    model.requires_grad_(False)
    return model.eval()


@torch.no_grad()
def encode(model: nn.Module, pixel_values: torch.Tensor, last_n_layers: int = 1) -> torch.Tensor:
    """(B, 3, H, W) -> (B, last_n_layers * D).

    last_n_layers=1: `pooler_output`, the mean over patch tokens of the final-normed last
    block. n > 1: the outputs of the last n blocks, each passed through the encoder's final
    LayerNorm and mean-pooled, concatenated from the n-th last to the last (the last D
    columns are `pooler_output`), as DINO's / I-JEPA's multi-block linear evaluation."""
    if last_n_layers == 1:
        return model(pixel_values).pooler_output
    depth = model.config.num_hidden_layers
    if not 1 <= last_n_layers <= depth:
        raise ValueError(f"last_n_layers must lie in [1, {depth}] (the encoder's depth), got {last_n_layers}")
    hidden_states = model(pixel_values, output_hidden_states=True).hidden_states  # embeddings + each block, pre-norm
    return torch.cat([model.layernorm(h).mean(dim=1) for h in hidden_states[-last_n_layers:]], dim=-1)


def _batches(
    data: Any,
    *,
    batch_size: int,
    transform: Callable[[Image.Image], torch.Tensor] | None,
    image_column: str,
    label_column: str,
    num_workers: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(pixel_values (B, 3, H, W), labels (B,)) from a DataLoader (dict or tuple batches), a
    `datasets.Dataset` with image and label columns (decoded with `transform`), or any
    map-style dataset of such dicts / tuples."""
    if not isinstance(data, torch.utils.data.DataLoader):
        if isinstance(data, datasets.Dataset):
            if transform is None:
                raise ValueError("a datasets.Dataset of images needs a transform (PIL image -> tensor)")
            check_columns(data, image_column, label_column)
            data = data.with_transform(batch_transform(transform, image_column, label_column))
            collate = collate_classification
        else:
            collate = None
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    for batch in data:
        if isinstance(batch, Mapping):
            labels = batch.get("labels", batch.get("label"))
            pixels = batch["pixel_values"]
        else:
            pixels, labels = batch[0], batch[1]
        if labels is None:
            raise ValueError("every batch needs labels ('labels' or 'label')")
        yield pixels, torch.as_tensor(labels).long()


def _num_batches(data: Any, batch_size: int) -> int | None:
    try:
        return len(data) if isinstance(data, torch.utils.data.DataLoader) else -(-len(data) // batch_size)
    except TypeError:
        return None


def _progress(batches: Iterator[Any], description: str | None, total: int | None) -> Iterator[Any]:
    """`batches` behind a tqdm bar (the bar the Trainer shows too), or as they are without a description."""
    if description is None:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=description, total=total, unit="batch", leave=False)


def _load_cache(cache_path: str, key: Mapping[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not os.path.exists(cache_path):
        return None
    if cache_path.endswith(".npz"):
        with np.load(cache_path, allow_pickle=False) as saved:
            stored_key = str(saved["key"]) if "key" in saved else None
            features, labels = torch.from_numpy(saved["features"]), torch.from_numpy(saved["labels"])
    else:
        saved = torch.load(cache_path, map_location="cpu", weights_only=True)
        stored_key, features, labels = saved.get("key"), saved["features"], saved["labels"]
    if key is not None and stored_key != repr(sorted(key.items())):
        logger.warning("feature cache %s was made with other settings (%s): recomputing", cache_path, stored_key)
        return None
    logger.info("features read from %s", cache_path)
    return features.float(), labels.long()


def _save_cache(cache_path: str, features: torch.Tensor, labels: torch.Tensor, key: Mapping[str, Any] | None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    stored_key = repr(sorted(key.items())) if key is not None else ""
    if cache_path.endswith(".npz"):
        np.savez(cache_path, features=features.numpy(), labels=labels.numpy(), key=np.array(stored_key))
    else:
        torch.save({"features": features, "labels": labels, "key": stored_key}, cache_path)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset_or_loader: Any,
    *,
    batch_size: int = 256,
    last_n_layers: int = 1,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
    image_column: str = "image",
    label_column: str = "label",
    device: str | torch.device | None = None,
    num_workers: int = 0,
    cache_path: str | None = None,
    cache_key: Mapping[str, Any] | None = None,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a frozen encoder, computed once: (features (N, F) float32 on the CPU, labels (N,) long).

    `dataset_or_loader`: a DataLoader yielding {"pixel_values", "labels"} dicts or
    (pixel_values, labels) tuples, a `datasets.Dataset` with `image_column` / `label_column`
    (decoded with `transform`, default: the model's `ClassificationTransform` for evaluation),
    or a map-style dataset of such items. `last_n_layers`: see `encode`.
    `cache_path` (.pt or .npz): read when it exists and was made with the same `cache_key`,
    else written after the pass. The model is put in eval mode; no gradients are kept.
    `progress`: the description of a progress bar over the batches (None: no bar)."""
    if cache_path is not None:
        cached = _load_cache(cache_path, cache_key)
        if cached is not None:
            return cached
    if transform is None and hasattr(model, "config"):
        transform = ClassificationTransform(model.config.image_size, train=False)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    features, labels = [], []
    for pixels, y in _labelled_batches(dataset_or_loader, batch_size, transform, image_column, label_column, num_workers, progress):
        features.append(encode(model, pixels.to(device, non_blocking=True), last_n_layers).float().cpu())
        labels.append(y)
    if not features:
        raise ValueError("no examples to extract features from")
    out = torch.cat(features), torch.cat(labels)
    if cache_path is not None:
        _save_cache(cache_path, *out, cache_key)
    return out


def _labelled_batches(dataset_or_loader, batch_size, transform, image_column, label_column, num_workers, progress):
    """(pixels, labels) batches of `_batches`, with a progress bar when `progress` names it."""
    batches = _batches(
        dataset_or_loader,
        batch_size=batch_size,
        transform=transform,
        image_column=image_column,
        label_column=label_column,
        num_workers=num_workers,
    )
    return _progress(batches, progress, _num_batches(dataset_or_loader, batch_size))


def raw_pixel_features(
    dataset_or_loader: Any,
    *,
    image_size: int | None = None,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
    batch_size: int = 512,
    image_column: str = "image",
    label_column: str = "label",
    num_workers: int = 0,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-pixel baseline: each image's normalised pixels, flattened (N, C * H * W), and
    its labels. Images of a `datasets.Dataset` go through `transform` (default: the
    evaluation `ClassificationTransform` at `image_size`). `progress`: see `extract_features`."""
    if transform is None and image_size is not None:
        transform = ClassificationTransform(image_size, train=False)
    features, labels = [], []
    for pixels, y in _labelled_batches(dataset_or_loader, batch_size, transform, image_column, label_column, num_workers, progress):
        features.append(pixels.float().flatten(1))
        labels.append(y)
    return torch.cat(features), torch.cat(labels)


def feature_statistics(features: torch.Tensor) -> dict[str, float]:
    """Collapse indicators of features (N, F): `feature_std` (mean per-dimension std of the
    L2-normalised features, as the trainer logs it), `effective_rank` (RankMe of the raw
    features, as the trainer logs it) and `effective_rank_centered` (RankMe after removing
    the mean feature: mean-pooled features share a large common direction that alone gives
    the raw RankMe a value near 1)."""
    features = features.float()
    return {
        "feature_std": feature_std(features).item(),
        "effective_rank": effective_rank(features).item(),
        "effective_rank_centered": effective_rank(features - features.mean(dim=0)).item(),
        "dims": int(features.shape[1]),
    }
