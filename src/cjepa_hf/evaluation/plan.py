"""What a pretraining run evaluates, decided from the data it trains on.

Evaluation follows the data: when `--dataset_name` replaces a recipe's data set, the
recipe's data-specific evaluation settings (`RECIPE_DATA_FIELDS`: its k-NN monitor set, its
final-judgement set and their sizes) are dropped (`drop_recipe_data_settings`), and
`plan_evaluation` fills them in from the user's own data:

- labelled data (class sub-folders, a label column): the k-NN monitor's memory bank and
  queries are a seeded sample of the user's images (`CarvedKNNMonitorSet`), the online
  probe trains on the user's classes, and the final judgement probes a part of the user's
  images and scores the rest (`cjepa_hf.judge.judge_encoder` carves it when the data has no
  test split), unless `--eval_dataset` / `--final_eval_dataset` name other labelled data;
- unlabelled data: all three are off, and the start-up summary says so.

`survey_data` says what was found (images, classes, the first image's size) without reading
the data set through; `start_up_lines` turns survey and plan into the lines a person reads
before the run starts, warnings included (warmup longer than the run, images up- or
downscaled to the model's input).
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
from collections.abc import Mapping
from typing import Any

import datasets

from ..data import is_fashion_mnist, load_image_source

# A recipe's settings that belong to its own data set: they never follow a --dataset_name
# that replaces it.
RECIPE_DATA_FIELDS = (
    "split",
    "image_column",
    "label_column",
    "eval_dataset",
    "eval_split",
    "eval_bank_size",
    "eval_query_size",
    "final_eval_dataset",
    "final_eval_train_samples",
    "final_eval_test_samples",
)
# The part of the user's labelled images the final judgement scores (the rest trains its probes).
HELD_OUT_FRACTION = 0.2
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def drop_recipe_data_settings(recipe: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the recipe without its data-specific settings, their names) when the command line's
    `dataset` replaces the recipe's; else (the recipe, []). Settings given on the command
    line stay: only the recipe's are dropped."""
    recipe = dict(recipe)
    if "dataset" not in given or given["dataset"] == recipe.get("dataset"):
        return recipe, []
    dropped = [name for name in RECIPE_DATA_FIELDS if name in recipe and name not in given]
    for name in dropped:
        del recipe[name]
    return recipe, dropped


@dataclasses.dataclass
class DataSurvey:
    """What a data source holds, as far as can be told without reading it through.

    num_images: None when unknown (a Hub stream); class_names: None when the data has no
    label column; image_size: (width, height) of the first image, None when unreadable."""

    source: str
    split: str
    kind: str
    num_images: int | None
    class_names: list[str] | None
    image_size: tuple[int, int] | None

    @property
    def labelled(self) -> bool:
        return bool(self.class_names) and len(self.class_names) >= 2

    @property
    def local(self) -> bool:
        return is_fashion_mnist(self.source) or bool(glob.glob(os.path.expanduser(self.source)))

    def describe(self) -> str:
        images = f"{self.num_images:,} images" if self.num_images is not None else "number of images not known (a stream)"
        if self.class_names is None:
            classes = "no labels"
        else:
            shown = ", ".join(self.class_names[:8]) + (", ..." if len(self.class_names) > 8 else "")
            classes = f"{len(self.class_names)} classes ({shown})"
        size = f"first image {self.image_size[0]} x {self.image_size[1]} px" if self.image_size else "image size not read"
        return f"{self.source} [{self.split}], {self.kind}: {images}, {classes}, {size}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.source,
            "split": self.split,
            "kind": self.kind,
            "images": self.num_images,
            "classes": self.class_names,
            "first_image_size": list(self.image_size) if self.image_size else None,
        }


def _kind(source: str) -> str:
    path = os.path.expanduser(source)
    if is_fashion_mnist(source):
        return "Fashion-MNIST IDX files"
    if os.path.isdir(path):
        names = [n.lower() for _, _, files in os.walk(path) for n in files]
        for ext, kind in ((".parquet", "parquet files"), (".arrow", "arrow files"), (".tar", "webdataset shards")):
            if any(n.endswith(ext) for n in names):
                return kind
        if "dataset_dict.json" in names or "state.json" in names:
            return "a saved data set"
        return "an image folder"
    if glob.glob(path):
        return "files"
    return "a Hub data set"


def _count_local(source: str, split: str, kind: str) -> int | None:
    """The number of records of a local source, from file listings and parquet footers."""
    path = os.path.expanduser(source)
    if kind == "an image folder":
        root = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) else path
        return sum(n.lower().endswith(_IMAGE_EXTENSIONS) for _, _, files in os.walk(root) for n in files)
    if kind in ("parquet files", "arrow files"):
        from ..data.sources import _files_for_split  # the files the training stream reads

        ext = ".parquet" if kind == "parquet files" else ".arrow"
        files = _files_for_split(path, ext, split)
        if ext == ".parquet":
            import pyarrow.parquet as pq

            return sum(pq.read_metadata(f).num_rows for f in files)
        return sum(len(datasets.Dataset.from_file(f)) for f in files)
    return None


def _first_image_size(source: str, split: str, image_column: str, token: Any) -> tuple[int, int] | None:
    """(width, height) of the first record's image, read from its header."""
    from PIL import Image

    try:
        stream = load_image_source(source, split=split, streaming=True, token=token)
        features = stream.features or {}
        column = image_column if image_column in features else next((n for n, f in features.items() if isinstance(f, datasets.Image)), None)
        if column is None:
            return None
        stream = stream.cast_column(column, datasets.Image(decode=False))
        value = next(iter(stream))[column]
        if isinstance(value, Mapping):
            opened = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
        else:
            opened = value
        return tuple(opened.size)
    except (OSError, StopIteration, ValueError, KeyError):  # the stream reports its own bad records later
        return None


def survey_data(stream: Any, source: str, split: str, *, image_column: str = "image", token: Any = None) -> DataSurvey:
    """What the training stream (`cjepa_hf.data.build_pretrain_dataset`'s) holds: its kind,
    the number of images (the stream's split info, else a local count), its class names (its
    label column's `ClassLabel`), and the first image's size."""
    from ..training.data_hooks import stream_num_examples

    kind = _kind(source)
    num = stream_num_examples(stream)
    if num is None and kind != "a Hub data set":
        num = _count_local(source, split, kind)
    class_names = None
    label_column = getattr(stream, "label_column", None)
    features = getattr(getattr(stream, "dataset", None), "features", None)
    if label_column is not None and features is not None and label_column in features:
        feature = features[label_column]
        class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else []
    return DataSurvey(source, split, kind, num, class_names, _first_image_size(source, split, image_column, token))


@dataclasses.dataclass
class EvaluationPlan:
    """What the run evaluates, and why (`notes`, lines for the start-up summary).

    monitor: {"dataset", "split", "bank_size", "query_size", "carved"} or None;
    final: {"dataset", "train_samples", "test_samples"} or None; online_probe: whether the
    training data gives the probe labels."""

    monitor: dict[str, Any] | None
    final: dict[str, Any] | None
    online_probe: bool
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"knn_monitor": self.monitor, "online_probe": self.online_probe, "final_judgement": self.final}


def monitor_sizes(num_images: int | None, bank_size: int, query_size: int) -> tuple[int, int] | None:
    """(bank, queries) for a k-NN monitor carved from `num_images` training images: at most the
    asked sizes, the queries a fifth of the images; None when there are too few (under 10)."""
    if num_images is None:
        return bank_size, query_size
    if num_images < 10:
        return None
    queries = min(query_size, max(2, num_images // 5))
    return min(bank_size, num_images - queries), queries


def plan_evaluation(survey: DataSurvey, data_args: Any, eval_args: Any, training_args: Any, *, follows_data: bool) -> EvaluationPlan:
    """The evaluation of a run, and the arguments changed to match it (in place).

    follows_data: the command line's dataset replaced the recipe's (`drop_recipe_data_settings`
    dropped the recipe's evaluation sets); then a missing k-NN monitor set or judgement set is
    the user's own data when it is labelled, and evaluation is off when it is not. Otherwise
    the arguments are used as given."""
    notes: list[str] = []
    wants_monitor = training_args.eval_strategy != "no" or training_args.eval_on_start
    monitor, final = None, None
    if follows_data and eval_args.eval_dataset is None and wants_monitor:
        sizes = monitor_sizes(survey.num_images, eval_args.eval_bank_size, eval_args.eval_query_size) if survey.labelled else None
        if sizes is not None:
            eval_args.eval_dataset, eval_args.eval_split = survey.source, survey.split
            eval_args.eval_bank_size, eval_args.eval_query_size = sizes
            monitor = {"dataset": survey.source, "split": survey.split, "bank_size": sizes[0], "query_size": sizes[1], "carved": True}
        else:
            why = "has no labels" if not survey.labelled else f"has only {survey.num_images} images"
            notes.append(f"k-NN monitor off: {survey.source} {why}")
            from transformers.trainer_utils import IntervalStrategy

            training_args.eval_strategy, training_args.eval_on_start, training_args.do_eval = IntervalStrategy.NO, False, False
    elif eval_args.eval_dataset and not wants_monitor:
        notes.append(f"k-NN monitor off: --eval_strategy no and --eval_on_start false (its set {eval_args.eval_dataset} is not used)")
    elif eval_args.eval_dataset:
        monitor = {
            "dataset": eval_args.eval_dataset,
            "split": eval_args.eval_split,
            "bank_size": eval_args.eval_bank_size,
            "query_size": eval_args.eval_query_size,
            "carved": False,
        }
    if follows_data and eval_args.final_eval_dataset is None:
        if not survey.labelled:
            notes.append(f"final judgement off: {survey.source} has no labels")
        elif not survey.local:
            notes.append(f"final judgement off: {survey.source} is a stream; give --final_eval_dataset to judge the encoder")
        elif survey.num_images is not None and survey.num_images < 10:
            notes.append(f"final judgement off: {survey.source} has only {survey.num_images} images")
        else:
            eval_args.final_eval_dataset = survey.source
    if eval_args.final_eval_dataset:
        final = {
            "dataset": eval_args.final_eval_dataset,
            "train_samples": eval_args.final_eval_train_samples,
            "test_samples": eval_args.final_eval_test_samples,
        }
    probe = bool(training_args.online_probe) and (survey.labelled or bool(training_args.online_probe_num_labels))
    if not probe and training_args.online_probe:
        notes.append(f"online probe off: {survey.source} has no labels")
    return EvaluationPlan(monitor, final, probe, notes)


def build_knn_monitor(plan: EvaluationPlan, config: Any, data_args: Any, *, seed: int = 0) -> Any:
    """The `KNNMonitorSet` of `plan.monitor`. One carved from the training images reads them in
    a seeded shuffled order: a folder's stored order is grouped by class, and its first
    examples would give a bank and queries of different classes."""
    from ..online_eval import KNNMonitorSet

    m = plan.monitor
    monitor = KNNMonitorSet(
        m["dataset"],
        image_size=config.image_size,
        patch_size=config.patch_size,
        split=m["split"],
        bank_size=m["bank_size"],
        query_size=m["query_size"],
        image_column=data_args.image_column,
        label_column=data_args.label_column or "label",
        token=data_args.token,
    )
    if m["carved"]:
        # A local folder's records are paths (cheap to hold, and its order is class by class):
        # shuffle widely. A remote stream is read, not listed: shuffle no more than it gives.
        local = os.path.exists(os.path.expanduser(m["dataset"]))
        buffer = max(len(monitor), 50_000) if local else len(monitor)
        monitor.stream.dataset = monitor.stream.dataset.shuffle(seed=seed, buffer_size=buffer)
    return monitor


def start_up_lines(survey: DataSurvey, plan: EvaluationPlan, config: Any, training_args: Any) -> tuple[list[str], list[str]]:
    """(information lines, warnings) of the start-up summary: the data found, what is
    evaluated on what, and where one setting makes another meaningless."""
    info = [f"data: {survey.describe()}"]
    if plan.monitor:
        m = plan.monitor
        own = " (a seeded sample of the training images, seen without labels in pretraining)" if m["carved"] else ""
        when = f"every {training_args.eval_steps} steps" if training_args.eval_strategy != "no" else "at the start only"
        info.append(f"k-NN monitor: {m['dataset']} [{m['split']}], bank {m['bank_size']:,}, queries {m['query_size']:,}{own}, {when}")
    else:
        info.append("k-NN monitor: off")
    info.append(
        f"online probe: on, the {len(survey.class_names)} classes of {survey.source}"
        if plan.online_probe and survey.class_names
        else f"online probe: {'on' if plan.online_probe else 'off'}"
    )
    if plan.final:
        carved = os.path.expanduser(plan.final["dataset"]) == os.path.expanduser(survey.source) and not is_fashion_mnist(survey.source)
        how = (
            f" (probes on {1 - HELD_OUT_FRACTION:.0%} of its labelled images, scored on the other {HELD_OUT_FRACTION:.0%} unless it has a test split)"
            if carved
            else " (test split)"
        )
        info.append(f"final judgement: {plan.final['dataset']}{how}")
    else:
        info.append("final judgement: off")
    info.extend(plan.notes)
    warnings_: list[str] = []
    warmup, steps = training_args.warmup_steps, training_args.max_steps
    if steps > 0 and warmup >= 1 and warmup >= steps:
        warnings_.append(
            f"warmup_steps {warmup:g} >= max_steps {steps}: the learning rate never leaves its warmup "
            f"(pass --warmup_steps below {steps}, or a fraction such as 0.1)"
        )
    if survey.image_size is not None:
        width, height = survey.image_size
        size = config.image_size
        if min(width, height) > size:
            warnings_.append(
                f"images are {width} x {height} px, the model's input is {size} x {size}: they are downscaled "
                f"(pass --config_overrides image_size={min(width, height) - min(width, height) % config.patch_size} to train at their size)"
            )
        elif max(width, height) < size and not (is_fashion_mnist(survey.source) and size - max(width, height) <= 2 * config.patch_size):
            warnings_.append(
                f"images are {width} x {height} px, the model's input is {size} x {size}: they are upscaled "
                f"(pass --config_overrides image_size=... no larger than the images)"
            )
    return info, warnings_


__all__ = [
    "HELD_OUT_FRACTION",
    "build_knn_monitor",
    "RECIPE_DATA_FIELDS",
    "DataSurvey",
    "EvaluationPlan",
    "drop_recipe_data_settings",
    "monitor_sizes",
    "plan_evaluation",
    "start_up_lines",
    "survey_data",
]
