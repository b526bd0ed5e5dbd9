"""Evaluation of C-JEPA encoders: frozen features, linear probe, k-NN, and an offline accuracy metric.

The protocol (PAPER.md section 1: features come from the target encoder, mean-pooled):

    encoder (AutoModel: a pretraining checkpoint gives its EMA target encoder)
      -> extract_features: one batched no-grad pass over each split, optionally cached
           pooled features (N, D), or with last_n_layers=n the concatenation of the
           mean-pooled, layer-normed outputs of the last n blocks (N, n * D)
      -> train_linear_probe: standardised features, multinomial logistic regression in torch
           (full-batch L-BFGS or AdamW), weight decay picked on a held-out part of the TRAIN
           features, refit on all of them, scored once on the evaluation split
      -> knn_accuracy: cosine similarity of L2-normalised features, k nearest training
           examples, votes weighted by exp(similarity / T) as in DINO, or plain majority

Shapes: N examples, D encoder width, F feature size, C classes.

Accuracy for the fine-tuning script goes through `evaluate` with a metric module shipped in
this package (`ACCURACY_METRIC_PATH`), because `evaluate.load("accuracy")` needs the Hub.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps

from .data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    NormalizeToTensor,
    RandomResizedCrop,
    auto_pad_to,
    load_fashion_mnist,
    pad_to_size,
    to_rgb,
)
from .losses import effective_rank, feature_std
from .modeling_cjepa import build_image_processor

logger = logging.getLogger(__name__)

ACCURACY_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", "accuracy")
FASHION_MNIST_NAMES = ("fashion_mnist", "fashion-mnist", "zalando-datasets/fashion_mnist")
DEFAULT_WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
KNN_WEIGHTINGS = ("dino", "majority")
PROBE_OPTIMIZERS = ("lbfgs", "adamw")


# ============================================================================ accuracy metric


class NumpyAccuracy:
    """The `compute` of the `accuracy` metric without `evaluate`: {"accuracy": fraction correct}."""

    name = "accuracy"

    def compute(self, *, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions and references must have the same shape, got {predictions.shape} and {references.shape}"
            )
        return {"accuracy": float((predictions == references).mean()) if predictions.size else 0.0}


def load_accuracy_metric(name_or_path: str | None = None) -> Any:
    """An object with `.compute(predictions=..., references=...) -> {"accuracy": float}`.

    `name_or_path`: an `evaluate` module (a Hub name such as "accuracy", or a local folder);
    default: the module shipped with this package, which loads offline. If `evaluate`
    cannot load it (no Hub, `evaluate` not installed), the shipped module is tried, then a
    numpy implementation; the fallback is logged."""
    candidates = [name_or_path or ACCURACY_METRIC_PATH]
    if candidates[0] != ACCURACY_METRIC_PATH:
        candidates.append(ACCURACY_METRIC_PATH)
    try:
        import evaluate
    except ImportError as error:
        logger.warning("evaluate is not installed (%s): accuracy computed with numpy", error)
        return NumpyAccuracy()
    for candidate in candidates:
        try:
            return evaluate.load(candidate)
        except Exception as error:  # noqa: BLE001 - Hub unreachable, missing module, ...
            logger.warning("evaluate.load(%r) failed (%s: %s)", candidate, type(error).__name__, error)
    logger.warning("accuracy computed with numpy")
    return NumpyAccuracy()


# ============================================================================ labelled data


def is_fashion_mnist(name: str | None) -> bool:
    return name is not None and name.lower() in FASHION_MNIST_NAMES


def load_labelled_dataset(
    dataset_name: str | None = None,
    *,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> "datasets.DatasetDict":  # noqa: F821
    """A map-style `DatasetDict` of labelled images.

    - ``fashion_mnist``: the local IDX files (`cjepa_hf.data.load_fashion_mnist`), splits
      train (60k) and test (10k), label a ClassLabel of the 10 class names;
    - `train_dir` / `validation_dir`: image folders with one sub-folder per class (the
      ``imagefolder`` builder), splits train / validation;
    - otherwise a Hub dataset id, ``load_dataset(dataset_name, dataset_config_name)``.
    """
    import datasets

    if dataset_name is None and train_dir is None and validation_dir is None:
        raise ValueError("give a dataset: dataset_name (a Hub id or 'fashion_mnist'), or train_dir / validation_dir")
    if dataset_name is not None and (train_dir or validation_dir):
        raise ValueError(
            f"give either dataset_name or train_dir/validation_dir, got dataset_name={dataset_name!r}, "
            f"train_dir={train_dir!r}, validation_dir={validation_dir!r}"
        )
    if is_fashion_mnist(dataset_name):
        return datasets.DatasetDict({"train": load_fashion_mnist("train"), "test": load_fashion_mnist("test")})
    if dataset_name is not None:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, token=token)
    data_files = {}
    for split, folder in (("train", train_dir), ("validation", validation_dir)):
        if folder is not None:
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{split} image folder {folder!r} does not exist")
            data_files[split] = os.path.join(folder, "**")
    return datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)


def check_columns(dataset: "datasets.Dataset", image_column: str, label_column: str) -> None:  # noqa: F821
    for kind, column in (("image", image_column), ("label", label_column)):
        if column not in dataset.column_names:
            raise ValueError(
                f"{kind} column {column!r} not found; the dataset's columns are {dataset.column_names} "
                f"(set --{kind}_column_name)"
            )


def label_names(dataset: "datasets.Dataset", label_column: str) -> list[str]:  # noqa: F821
    """Class names, index = class id: the ClassLabel's names, else the sorted integer labels as strings."""
    import datasets

    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = sorted(set(dataset[label_column]))
    if not all(isinstance(v, (int, np.integer)) for v in values) or values != list(range(len(values))):
        raise ValueError(
            f"label column {label_column!r} is {feature}, not a ClassLabel, and its values are not 0..C-1 "
            f"(first values: {values[:5]}); cast it with dataset.class_encode_column({label_column!r})"
        )
    return [str(v) for v in values]


def split_train_eval(
    dataset: "datasets.DatasetDict",  # noqa: F821
    *,
    eval_split: str | None = None,
    train_split: str = "train",
    train_val_split: float = 0.15,
    label_column: str | None = "label",
    seed: int = 0,
) -> tuple["datasets.Dataset", "datasets.Dataset", str]:  # noqa: F821
    """(train, eval, name of the eval set). `eval_split` when given; else the "validation"
    split when there is one; else a `train_val_split` fraction of the train split, stratified
    by class when the label is a ClassLabel (the name is then "train[held-out 15%]")."""
    import datasets

    if train_split not in dataset:
        raise ValueError(f"no split {train_split!r}; the dataset has {list(dataset)}")
    if eval_split is not None:
        if eval_split not in dataset:
            raise ValueError(f"no split {eval_split!r}; the dataset has {list(dataset)}")
        return dataset[train_split], dataset[eval_split], eval_split
    if "validation" in dataset:
        return dataset[train_split], dataset["validation"], "validation"
    if not 0.0 < train_val_split < 1.0:
        raise ValueError(f"train_val_split must lie in (0, 1) when there is no validation split, got {train_val_split}")
    train = dataset[train_split]
    stratify = (
        label_column
        if label_column in train.features and isinstance(train.features[label_column], datasets.ClassLabel)
        else None
    )
    try:
        parts = train.train_test_split(test_size=train_val_split, seed=seed, stratify_by_column=stratify)
    except ValueError:  # too few examples of some class to stratify
        parts = train.train_test_split(test_size=train_val_split, seed=seed)
    return parts["train"], parts["test"], f"{train_split}[held-out {train_val_split:.0%}]"


def subsample(dataset: Any, max_samples: int | None, seed: int = 0) -> Any:
    """A random subset of at most `max_samples` examples (the same subset for the same seed)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    return dataset.shuffle(seed=seed).select(range(max_samples))


# ============================================================================ transforms


def default_pad_to(dataset_name: str | None, image_size: int, patch_size: int) -> int | None:
    """Fashion-MNIST (28 px) at an image size at most two patches larger is padded, not
    upscaled: the rule pretraining uses (`cjepa_hf.data`)."""
    if dataset_name is None or not is_fashion_mnist(dataset_name):
        return None
    return auto_pad_to("fashion_mnist", image_size, patch_size)


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
            self.eval_transform = EvalTransform(image_size, crop_pct=1.0 if pad_to == image_size else crop_pct, mean=mean, std=std)

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


PROCESSOR_FILE = "preprocessor_config.json"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"  # the Hub copy of the IDX files this package reads


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
    Without one, Fashion-MNIST by name is padded (`default_pad_to`) and anything else
    resized (`ClassificationTransform`, `eval_image_processor`)."""
    processor = load_model_image_processor(model_name_or_path, **from_pretrained_kwargs) if model_name_or_path else None
    if processor is None:
        pad_to = default_pad_to(dataset_name, config.image_size, config.patch_size)
        train = ClassificationTransform(config.image_size, train=True, pad_to=pad_to, scale=scale, hflip=hflip)
        return train, ClassificationTransform(config.image_size, train=False, pad_to=pad_to), eval_image_processor(config, pad_to)
    pad_to = processor_pad_to(processor, config.image_size)
    norm = {}
    if getattr(processor, "do_normalize", False):
        norm = dict(mean=tuple(processor.image_mean), std=tuple(processor.image_std))
    train = ClassificationTransform(config.image_size, train=True, pad_to=pad_to, scale=scale, hflip=hflip, **norm)
    return train, ProcessorTransform(processor), processor


def probe_results(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The measured numbers of a `scripts/linear_probe.py` result as results for a model card
    (`cjepa_hf.hub.to_eval_result`, `scripts/push_to_hub.py --results`): linear-probe and
    k-NN top-1 accuracy, as fractions in [0, 1]. A baseline (random init, raw pixels) is not
    a measurement of the model: [] for those."""
    if result.get("method") != "encoder":
        return []
    dataset = result.get("dataset")
    if dataset is not None and is_fashion_mnist(dataset):
        dataset_fields = {"dataset": FASHION_MNIST_HUB_ID, "dataset_name": "Fashion-MNIST"}
    elif dataset is not None and not os.path.exists(dataset):
        dataset_fields = {"dataset": dataset, "dataset_name": dataset}
    else:  # an image folder: no Hub id to name
        dataset_fields = {"dataset": "imagefolder", "dataset_name": os.path.basename(os.path.normpath(str(dataset)))}
    common = {"task": "image-classification", **dataset_fields, "split": str(result.get("eval_split")), "metric": "accuracy"}
    layers = result.get("last_n_layers", 1)
    suffix = f", last {layers} blocks" if layers and layers > 1 else ""
    out = []
    if result.get("linear_probe"):
        out.append({**common, "protocol": "linear probe", "metric_name": f"linear probe top-1 accuracy{suffix}",
                    "value": float(result["linear_probe"]["accuracy"])})
    for weighting, value in (result.get("knn") or {}).items():
        out.append({**common, "protocol": "k-NN", "value": float(value),
                    "metric_name": f"k-NN top-1 accuracy (k={result.get('knn_k')}, {weighting}){suffix}"})
    return out


# ============================================================================ encoders


def load_encoder(
    name_or_path: str, *, random_init: bool = False, seed: int = 0, **from_pretrained_kwargs: Any
) -> nn.Module:
    """The frozen encoder to evaluate, in eval mode.

    `AutoModel.from_pretrained(name_or_path)`: a saved `CJEPAForPreTraining` (a pretraining
    checkpoint) gives its EMA target encoder, an exported encoder folder or Hub id the
    encoder itself. `random_init=True`: the same architecture (the folder's config) with
    freshly initialised weights (seeded): the random-features baseline."""
    from transformers import AutoConfig, AutoModel  # "cjepa" is registered by importing this package

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
        try:
            import datasets

            is_hf = isinstance(data, datasets.Dataset)
        except ImportError:  # pragma: no cover
            is_hf = False
        if is_hf:
            if transform is None:
                raise ValueError("a datasets.Dataset of images needs a transform (PIL image -> tensor)")
            check_columns(data, image_column, label_column)
            data = data.with_transform(batch_transform(transform, image_column, label_column))
            collate = collate_classification
        else:
            collate = None
        data = torch.utils.data.DataLoader(
            data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
        )
    for batch in data:
        if isinstance(batch, Mapping):
            labels = batch.get("labels", batch.get("label"))
            pixels = batch["pixel_values"]
        else:
            pixels, labels = batch[0], batch[1]
        if labels is None:
            raise ValueError("every batch needs labels ('labels' or 'label')")
        yield pixels, torch.as_tensor(labels).long()


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a frozen encoder, computed once: (features (N, F) float32 on the CPU, labels (N,) long).

    `dataset_or_loader`: a DataLoader yielding {"pixel_values", "labels"} dicts or
    (pixel_values, labels) tuples, a `datasets.Dataset` with `image_column` / `label_column`
    (decoded with `transform`, default: the model's `ClassificationTransform` for evaluation),
    or a map-style dataset of such items. `last_n_layers`: see `encode`.
    `cache_path` (.pt or .npz): read when it exists and was made with the same `cache_key`,
    else written after the pass. The model is put in eval mode; no gradients are kept."""
    if cache_path is not None:
        cached = _load_cache(cache_path, cache_key)
        if cached is not None:
            return cached
    if transform is None and hasattr(model, "config"):
        transform = ClassificationTransform(model.config.image_size, train=False)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    features, labels = [], []
    for pixels, y in _batches(
        dataset_or_loader, batch_size=batch_size, transform=transform, image_column=image_column,
        label_column=label_column, num_workers=num_workers,
    ):
        features.append(encode(model, pixels.to(device, non_blocking=True), last_n_layers).float().cpu())
        labels.append(y)
    if not features:
        raise ValueError("no examples to extract features from")
    out = torch.cat(features), torch.cat(labels)
    if cache_path is not None:
        _save_cache(cache_path, *out, cache_key)
    return out


def raw_pixel_features(
    dataset_or_loader: Any,
    *,
    image_size: int | None = None,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
    batch_size: int = 512,
    image_column: str = "image",
    label_column: str = "label",
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-pixel baseline: each image's normalised pixels, flattened (N, C * H * W), and
    its labels. Images of a `datasets.Dataset` go through `transform` (default: the
    evaluation `ClassificationTransform` at `image_size`)."""
    if transform is None and image_size is not None:
        transform = ClassificationTransform(image_size, train=False)
    features, labels = [], []
    for pixels, y in _batches(
        dataset_or_loader, batch_size=batch_size, transform=transform, image_column=image_column,
        label_column=label_column, num_workers=num_workers,
    ):
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


# ============================================================================ linear probe


def standardize(train_x: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, ...]:
    """Standardise every tensor with the per-feature mean and std of `train_x` (N, F)."""
    mean = train_x.mean(dim=0)
    std = train_x.std(dim=0).clamp_min(eps)
    return tuple((x - mean) / std for x in (train_x, *others))


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == y).float().mean().item() if len(y) else float("nan")


def fit_logistic_regression(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    *,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
) -> nn.Linear:
    """Multinomial logistic regression: minimise mean cross-entropy + weight_decay / 2 * ||W||^2
    over (N, F) features. "lbfgs": full-batch L-BFGS (strong Wolfe line search, at most
    `max_iter` iterations) from zero weights; "adamw": AdamW (decoupled weight decay) for
    `epochs` over shuffled mini-batches, cosine learning rate."""
    if optimizer not in PROBE_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {PROBE_OPTIMIZERS}, got {optimizer!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    x, y = x.float(), y.long()
    linear = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(
            linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
            tolerance_grad=1e-6, tolerance_change=1e-9,
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return linear.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs * steps_per_epoch, 1))
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(linear(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return linear.requires_grad_(False)


def train_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    holdout_fraction: float = 0.2,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    epochs: int = 100,
    lr: float = 1e-3,
    num_classes: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear probe on frozen features: train_x (N, F), train_y (N,), val_x (M, F), val_y (M,).

    The features are standardised with the training statistics. Each weight decay in
    `weight_decays` is fit on (1 - holdout_fraction) of the TRAINING examples and scored on
    the rest (a seeded random split); the best one (ties: the larger weight decay) is refit
    on all training examples and scored once on (val_x, val_y), the evaluation split, which
    is never used for the choice.

    Returns {"accuracy": on val, "train_accuracy", "weight_decay": the chosen one,
    "holdout_accuracy": {weight decay: accuracy}, "num_train", "num_holdout", "num_eval",
    "num_features", "optimizer", "classifier": an `nn.Linear` that takes the RAW features
    (standardisation folded in)}."""
    if train_x.dim() != 2 or val_x.dim() != 2 or train_x.shape[1] != val_x.shape[1]:
        raise ValueError(f"features must be (N, F) with the same F, got {tuple(train_x.shape)} and {tuple(val_x.shape)}")
    if len(train_x) != len(train_y) or len(val_x) != len(val_y):
        raise ValueError(
            f"features and labels must have the same length, got {len(train_x)}/{len(train_y)} and {len(val_x)}/{len(val_y)}"
        )
    if not weight_decays:
        raise ValueError("weight_decays must name at least one value")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}")
    train_x, val_x = train_x.float(), val_x.float()
    train_y, val_y = train_y.long(), val_y.long()
    num_classes = num_classes or int(max(train_y.max(), val_y.max()).item()) + 1
    fit_kwargs = dict(optimizer=optimizer, max_iter=max_iter, epochs=epochs, lr=lr, seed=seed)

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_x), generator=generator)
    num_holdout = max(1, int(round(holdout_fraction * len(train_x))))
    if num_holdout >= len(train_x):
        raise ValueError(f"{len(train_x)} training examples are too few to hold out {holdout_fraction:.0%} of them")
    hold_idx, fit_idx = order[:num_holdout], order[num_holdout:]
    fit_x, hold_x = standardize(train_x[fit_idx], train_x[hold_idx])
    holdout_accuracy = {}
    for wd in weight_decays:
        linear = fit_logistic_regression(fit_x, train_y[fit_idx], num_classes, wd, **fit_kwargs)
        holdout_accuracy[float(wd)] = _accuracy(linear(hold_x), train_y[hold_idx])
    best_wd = max(holdout_accuracy, key=lambda wd: (holdout_accuracy[wd], wd))

    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    std_train, std_val = (train_x - mean) / std, (val_x - mean) / std
    linear = fit_logistic_regression(std_train, train_y, num_classes, best_wd, **fit_kwargs)
    result = {
        "accuracy": _accuracy(linear(std_val), val_y),
        "train_accuracy": _accuracy(linear(std_train), train_y),
        "weight_decay": best_wd,
        "holdout_accuracy": {f"{wd:g}": acc for wd, acc in holdout_accuracy.items()},
        "num_train": len(train_x),
        "num_holdout": num_holdout,
        "num_eval": len(val_x),
        "num_features": int(train_x.shape[1]),
        "optimizer": optimizer,
    }
    # Fold the standardisation in: W ((x - m) / s) + b = (W / s) x + (b - W (m / s)).
    folded = nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        folded.weight.copy_(linear.weight / std)
        folded.bias.copy_(linear.bias - linear.weight @ (mean / std))
    result["classifier"] = folded.requires_grad_(False)
    return result


# ============================================================================ k-NN


@torch.no_grad()
def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    weighting: str = "dino",
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Class predictions (M,) for test_x (M, F) from its k nearest training examples (N, F)
    by cosine similarity (both sides L2-normalised).

    weighting "dino": each neighbour votes exp(similarity / temperature) for its class
    (Wu et al. 2018, DINO's k-NN eval); "majority": one vote each, ties broken by the summed
    similarity. k is capped at N."""
    if weighting not in KNN_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {KNN_WEIGHTINGS}, got {weighting!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test features differ in size: {train_x.shape[1]} vs {test_x.shape[1]}")
    train_y = train_y.long()
    num_classes = num_classes or int(train_y.max().item()) + 1
    k = min(k, len(train_x))
    train_n = F.normalize(train_x.float(), dim=1)
    predictions = []
    for start in range(0, len(test_x), batch_size):
        test_n = F.normalize(test_x[start : start + batch_size].float(), dim=1)
        sims, idx = (test_n @ train_n.T).topk(k, dim=1)  # (b, k)
        neighbours = train_y.to(idx.device)[idx]  # (b, k)
        if weighting == "dino":
            weights = (sims / temperature).exp()
        else:  # one vote each; the similarity, far below 1 vote in total, only breaks ties
            weights = 1.0 + sims / (2.0 * k)
        votes = torch.zeros(len(idx), num_classes, dtype=weights.dtype, device=weights.device).scatter_add_(1, neighbours, weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    *,
    weighting: str = "dino",
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of `knn_predict` on (test_x, test_y)."""
    if len(test_x) != len(test_y):
        raise ValueError(f"test features and labels differ in length: {len(test_x)} vs {len(test_y)}")
    num_classes = num_classes or int(max(train_y.max(), test_y.max()).item()) + 1
    predictions = knn_predict(
        train_x, train_y, test_x, k=k, temperature=temperature, weighting=weighting,
        num_classes=num_classes, batch_size=batch_size,
    )
    return (predictions == test_y.long()).float().mean().item()


# ============================================================================ the whole protocol


def evaluate_features(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    knn_weightings: Iterable[str] = KNN_WEIGHTINGS,
    probe: bool = True,
    **probe_kwargs: Any,
) -> dict[str, Any]:
    """Linear probe and k-NN on one pair of feature sets; JSON-ready (no classifier).

    Returns {"linear_probe": train_linear_probe(...) without "classifier" (None when
    probe=False), "knn": {weighting: accuracy}, "knn_k", "knn_temperature",
    "feature_stats": feature_statistics(test_x)}."""
    num_classes = int(max(train_y.max(), test_y.max()).item()) + 1
    result: dict[str, Any] = {"linear_probe": None}
    if probe:
        lp = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, **probe_kwargs)
        lp.pop("classifier")
        result["linear_probe"] = lp
    result["knn"] = {
        w: knn_accuracy(train_x, train_y, test_x, test_y, k, temperature, weighting=w, num_classes=num_classes)
        for w in knn_weightings
    }
    result["knn_k"], result["knn_temperature"] = k, temperature
    result["feature_stats"] = feature_statistics(test_x)
    return result


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are written as given (format them before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = [
    "ACCURACY_METRIC_PATH",
    "DEFAULT_WEIGHT_DECAYS",
    "ClassificationTransform",
    "FASHION_MNIST_HUB_ID",
    "NumpyAccuracy",
    "ProcessorTransform",
    "batch_transform",
    "check_columns",
    "collate_classification",
    "default_pad_to",
    "encode",
    "eval_image_processor",
    "evaluate_features",
    "extract_features",
    "feature_statistics",
    "fit_logistic_regression",
    "is_fashion_mnist",
    "load_model_image_processor",
    "model_transforms",
    "probe_results",
    "processor_pad_to",
    "knn_accuracy",
    "knn_predict",
    "label_names",
    "load_accuracy_metric",
    "load_encoder",
    "load_labelled_dataset",
    "markdown_table",
    "raw_pixel_features",
    "split_train_eval",
    "standardize",
    "subsample",
    "train_linear_probe",
]
