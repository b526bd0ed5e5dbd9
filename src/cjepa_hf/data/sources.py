"""Sources of raw image records: `load_image_source` turns a Hub dataset id, an imagefolder, parquet, arrow or webdataset tar files, a `save_to_disk` folder or Fashion-MNIST into a `datasets.IterableDataset` of undecoded records.

`_resolve_columns` finds the image and label columns of what was loaded (webdataset keys
such as ``jpg`` / ``cls`` included).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence

import datasets

from .fashion_mnist import fashion_mnist_dir, is_fashion_mnist, load_fashion_mnist

logger = logging.getLogger(__name__)

DEFAULT_HUB_DATASET = "ILSVRC/imagenet-1k"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
_WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "image")
_WEBDATASET_LABEL_KEYS = ("cls", "label", "cls2")


def _builder_for_files(files: Sequence[str]) -> str:
    names = [f.lower() for f in files]
    if all(n.endswith(".parquet") for n in names):
        return "parquet"
    if all(n.endswith(".arrow") for n in names):
        return "arrow"
    if all(n.endswith((".tar", ".tgz", ".tar.gz")) for n in names):
        return "webdataset"
    if all(n.endswith(_IMAGE_EXTENSIONS) for n in names):
        return "imagefolder"
    raise ValueError(
        f"cannot tell the format of {len(files)} files ({sorted({os.path.splitext(n)[1] for n in names})}); "
        "expected .parquet, .arrow, .tar (webdataset) or image files"
    )


_DATA_EXTENSIONS = ((".parquet", "parquet"), (".arrow", "arrow"), (".tar", "webdataset"))
_SPLIT_NAMES = ("train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval")


def _files_for_split(path: str, extension: str, split: str) -> list[str]:
    """Files with `extension` under folder `path` that belong to `split`.

    A file belongs to a split when its relative path has the split's name as a token
    (``train-00000-of-00004.parquet``, ``validation/part-1.parquet``); when no file names
    any split, every file belongs to each split.
    """
    files = sorted(glob.glob(os.path.join(path, "**", f"*{extension}"), recursive=True))

    def tokens(file: str) -> set[str]:
        return set(re.split(r"[-_./\\]+", os.path.relpath(file, path).lower()))

    named = {name for file in files for name in tokens(file) & set(_SPLIT_NAMES)}
    if not named:
        return files
    chosen = [file for file in files if split.lower() in tokens(file)]
    if not chosen:
        raise ValueError(f"no {extension} file for split {split!r} under {path}; file names mention {sorted(named)}")
    return chosen


def _builder_for_dir(path: str) -> tuple[str, str | None]:
    """(builder, extension of its data files) for a local folder; imagefolder by default."""
    extensions = Counter()
    for _, _, names in os.walk(path):
        for name in names:
            extensions[os.path.splitext(name.lower())[1]] += 1
    for ext, builder in _DATA_EXTENSIONS:
        if extensions[ext]:
            return builder, ext
    return "imagefolder", None


def load_image_source(
    source: str,
    *,
    split: str = "train",
    streaming: bool = True,
    token: str | bool | None = None,
    num_shards: int = 64,
) -> datasets.IterableDataset:
    """The raw records of `source` as a `datasets.IterableDataset` (images not decoded yet).

    `source` is one of:

    - Fashion-MNIST (`is_fashion_mnist`): ``"fashion_mnist"`` or another of its names (IDX
      files under `fashion_mnist_root()`), or a folder holding ``{train,t10k}-images-idx3-ubyte.gz``
      (splits ``train`` / ``test``, ``validation`` -> test);
    - a `save_to_disk` folder (`Dataset` or `DatasetDict`);
    - a folder of parquet, arrow or webdataset ``.tar`` files (the files whose names mention
      `split`, or all of them when no file names a split);
    - any other folder: ``imagefolder`` (class sub-folders become labels, split sub-folders
      splits);
    - a file or glob of parquet / arrow / tar / image files;
    - otherwise a Hub dataset id such as ``"ILSVRC/imagenet-1k"`` (gated: pass `token`),
      loaded with ``load_dataset(source, split=split, streaming=streaming, token=token)``.

    With ``streaming=False`` (or a map-style source) the Arrow data is streamed in
    `num_shards` shards.
    """
    expanded = os.path.expanduser(source)
    if is_fashion_mnist(source):
        fmnist_split = "test" if split in ("test", "validation") else "train"
        return _streamed(load_fashion_mnist(fmnist_split, root=fashion_mnist_dir(source)), split, num_shards)
    if os.path.isdir(expanded) and os.path.exists(os.path.join(expanded, "dataset_dict.json")):
        ds = datasets.load_from_disk(expanded)[split]  # a DatasetDict.save_to_disk folder
    elif os.path.isdir(expanded) and os.path.exists(os.path.join(expanded, "state.json")):
        ds = datasets.load_from_disk(expanded)  # a Dataset.save_to_disk folder
    elif os.path.isdir(expanded):
        builder, extension = _builder_for_dir(expanded)
        if builder == "imagefolder":  # split and class names come from the folder names
            ds = datasets.load_dataset(builder, data_dir=expanded, split=split, streaming=streaming)
        else:
            files = _files_for_split(expanded, extension, split)
            ds = datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=streaming)
    elif os.path.isfile(expanded) or glob.has_magic(expanded):
        files = sorted(glob.glob(expanded, recursive=True))
        if not files:
            raise FileNotFoundError(f"no file matches {source!r}")
        ds = datasets.load_dataset(_builder_for_files(files), data_files={split: files}, split=split, streaming=streaming)
    elif source.startswith((".", "/", "~")) or source.count("/") > 1:  # a path, not "org/name"
        raise FileNotFoundError(f"{source!r} is neither an existing file, folder or glob, nor a Hub dataset id")
    else:
        ds = datasets.load_dataset(source, split=split, streaming=streaming, token=token)
    if isinstance(ds, datasets.Dataset):
        ds = _streamed(ds, split, min(num_shards, max(1, len(ds))))
    return ds


def _streamed(ds: datasets.Dataset, split: str, num_shards: int) -> datasets.IterableDataset:
    """A map-style dataset as an iterable one that still knows its size (`info.splits`), so a
    run can say how many epochs its steps are."""
    stream = ds.to_iterable_dataset(num_shards=num_shards)
    stream.info.splits = datasets.SplitDict({split: datasets.SplitInfo(name=split, num_examples=len(ds))})
    return stream


def _resolve_columns(features: datasets.Features | None, image_column: str, label_column: str | None) -> tuple[str, str | None]:
    if features is None:  # unknown schema (some streams): trust the caller
        return image_column, label_column
    if image_column not in features:
        candidates = [name for name, f in features.items() if isinstance(f, datasets.Image)]
        candidates += [name for name in _WEBDATASET_IMAGE_KEYS if name in features and name not in candidates]
        if not candidates:
            raise ValueError(f"image_column {image_column!r} not found; columns are {list(features)}")
        logger.info("image column %r not found, using %r", image_column, candidates[0])
        image_column = candidates[0]
    if label_column is not None and label_column not in features:
        fallback = next((name for name in _WEBDATASET_LABEL_KEYS if name in features), None)
        if fallback is not None:
            logger.info("label column %r not found, using %r", label_column, fallback)
        label_column = fallback
    if label_column is not None:
        feature = features[label_column]
        integer = isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "bool"))
        )
        if not integer:  # pretraining needs no label; a non-integer one is left out, not guessed
            logger.warning("label column %r is %s, not an integer class: yielding no label", label_column, feature)
            label_column = None
    return image_column, label_column
