"""Labelled datasets for evaluation: `load_labelled_dataset` (Fashion-MNIST from its IDX files, image folders, or a Hub id), column checks, class names, the train / evaluation split and seeded subsampling."""

from __future__ import annotations

import os
from typing import Any

import datasets
import numpy as np

from ..data import fashion_mnist_dir, is_fashion_mnist, load_fashion_mnist


def load_labelled_dataset(
    dataset_name: str | None = None,
    *,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> datasets.DatasetDict:
    """A map-style `DatasetDict` of labelled images.

    - Fashion-MNIST (`cjepa_hf.data.is_fashion_mnist`: ``fashion_mnist``, its Hub id, or a
      folder of its IDX files): the local IDX files (`cjepa_hf.data.load_fashion_mnist`),
      splits train (60k) and test (10k), label a ClassLabel of the 10 class names;
    - `train_dir` / `validation_dir`: image folders with one sub-folder per class (the
      ``imagefolder`` builder), splits train / validation;
    - otherwise a Hub dataset id, ``load_dataset(dataset_name, dataset_config_name)``.
    """
    if dataset_name is None and train_dir is None and validation_dir is None:
        raise ValueError("give a dataset: dataset_name (a Hub id or 'fashion_mnist'), or train_dir / validation_dir")
    if dataset_name is not None and (train_dir or validation_dir):
        raise ValueError(
            f"give either dataset_name or train_dir/validation_dir, got dataset_name={dataset_name!r}, "
            f"train_dir={train_dir!r}, validation_dir={validation_dir!r}"
        )
    if is_fashion_mnist(dataset_name):
        root = fashion_mnist_dir(dataset_name)
        return datasets.DatasetDict({split: load_fashion_mnist(split, root=root) for split in ("train", "test")})
    if dataset_name is not None:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, token=token)
    data_files = {}
    for split, folder in (("train", train_dir), ("validation", validation_dir)):
        if folder is not None:
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{split} image folder {folder!r} does not exist")
            data_files[split] = os.path.join(folder, "**")
    return datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)


_SPLIT_FOLDER_NAMES = ("train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval")


def dataset_display_name(path: str) -> str:
    """How results and cards name a local data set: its folder (or file) name, never the whole
    path; a split folder ("my_images/train") is named by its parent ("my_images")."""
    parts = os.path.normpath(os.path.expanduser(str(path))).split(os.sep)
    parts = [p for p in parts if p not in ("", ".")]
    if len(parts) > 1 and parts[-1].lower() in _SPLIT_FOLDER_NAMES:
        return parts[-2]
    return parts[-1] if parts else str(path)


def check_columns(dataset: datasets.Dataset, image_column: str, label_column: str) -> None:
    for kind, column in (("image", image_column), ("label", label_column)):
        if column not in dataset.column_names:
            raise ValueError(
                f"{kind} column {column!r} not found; the dataset's columns are {dataset.column_names} (set --{kind}_column_name)"
            )


def label_names(dataset: datasets.Dataset, label_column: str) -> list[str]:
    """Class names, index = class id: the ClassLabel's names, else the sorted integer labels as strings."""
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
    dataset: datasets.DatasetDict,
    *,
    eval_split: str | None = None,
    train_split: str = "train",
    train_val_split: float = 0.15,
    label_column: str | None = "label",
    seed: int = 0,
) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """(train, eval, name of the eval set). `eval_split` when given; else the "validation"
    split when there is one; else a `train_val_split` fraction of the train split, stratified
    by class when the label is a ClassLabel (the name is then "train[held-out 15%]")."""
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
    stratify = label_column if label_column in train.features and isinstance(train.features[label_column], datasets.ClassLabel) else None
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
