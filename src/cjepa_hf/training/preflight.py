"""Checks before any training work: the data sources and evaluation names, and the columns the data was read with.

Each raises one clear error naming the value and what is allowed (numbers and their ranges are
checked by `CJEPATrainingArguments`; the output folder by `run_guard.hold_output_dir`).

- `check_data_source`: a source that looks like a local path (a data-file extension such as
  ``.parquet``, or a path separator) must exist: it is reported missing, not "unreachable on
  the Hub"; a folder must hold files.
- `check_evaluation_dataset`: the final judgement's dataset (loaded at the end of a run) is
  Fashion-MNIST with its files present, an existing folder, or a Hub dataset id whose builder
  resolves now, not after training.
- `check_columns`: the columns the training stream reads are the ones asked for; a missing
  column is never replaced by another silently (only a default name may fall back, e.g. to a
  webdataset's ``jpg`` / ``cls``, with a warning).
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

_FILE_EXTENSIONS = (".parquet", ".arrow", ".tar", ".tgz", ".tar.gz", ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _looks_local(source: str) -> bool:
    return source.lower().endswith(_FILE_EXTENSIONS) or source.startswith((".", "/", "~")) or source.count("/") > 1


def check_data_source(source: str, option: str = "--dataset_name") -> None:
    """Raise FileNotFoundError / ValueError for a local source that is missing or empty."""
    from ..data import is_fashion_mnist

    if not source:
        raise ValueError(f"{option} is empty: give fashion_mnist, a Hub dataset id, a folder or data files")
    if is_fashion_mnist(source):
        return
    path = os.path.expanduser(source)
    if glob.has_magic(path):
        if not glob.glob(path, recursive=True):
            raise FileNotFoundError(f"{option} {source!r}: no file matches this pattern (from {os.getcwd()})")
        return
    if os.path.isdir(path):
        if not any(files for _, _, files in os.walk(path)):
            raise ValueError(f"{option} {source!r} is an empty folder: it holds no image or data file")
        return
    if not os.path.exists(path) and _looks_local(source):
        raise FileNotFoundError(f"{option} {source!r} does not exist (a local path, looked for from {os.getcwd()})")


def check_evaluation_dataset(name: str | None, option: str = "--final_eval_dataset") -> None:
    """The labelled data set a run judges itself on at its end, checked at its start."""
    if not name:
        return
    from ..data import fashion_mnist_dir, is_fashion_mnist

    if is_fashion_mnist(name):
        folder = fashion_mnist_dir(name)
        missing = [f for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz") if not os.path.exists(os.path.join(folder, f))]
        if missing:
            raise FileNotFoundError(f"{option} {name!r}: the Fashion-MNIST files {missing} are not in {folder}")
        return
    check_data_source(name, option)
    if os.path.exists(os.path.expanduser(name)):
        return
    import datasets

    try:
        datasets.load_dataset_builder(name)
    except Exception as error:  # noqa: BLE001 - any failure to resolve it now would fail after training
        raise ValueError(
            f"{option} {name!r} cannot be loaded ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "it must be fashion_mnist, a local folder or a Hub dataset id reachable from here"
        ) from None


def check_columns(stream: Any, source: str, asked: dict[str, str | None], defaults: dict[str, str | None], **load: Any) -> None:
    """`stream` (a `cjepa_hf.data.PretrainImageStream`) reads `image_column` / `label_column`
    as resolved from the data. `asked`: the names the run was given; `defaults`: the arguments'
    defaults. A name that was chosen (not the default) and resolved to another column, or to
    none, is an error naming the data's columns; a default that fell back is a warning.
    `load`: `load_image_source`'s keyword arguments, to list the columns in the error."""
    for kind in ("image_column", "label_column"):
        wanted, used = asked.get(kind), getattr(stream, kind, None)
        if wanted is None or wanted == used:
            continue
        if wanted != defaults.get(kind):
            from ..data.sources import load_image_source

            features = load_image_source(source, **load).features
            columns = list(features) if features is not None else "unknown"
            problem = "is not an integer class label" if features is not None and wanted in features else "does not exist"
            raise ValueError(f"--{kind} {wanted!r} {problem} in {source!r}; its columns are {columns}")
        logger.warning("%s %r is not in %s: using %r instead", kind, wanted, source, used)


__all__ = ["check_columns", "check_data_source", "check_evaluation_dataset"]
