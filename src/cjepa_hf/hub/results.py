"""Measured results -> `huggingface_hub.EvalResult` (the card's results table and its
model-index), and the results files scripts write. A result is a measured, finite number:
nothing is ever filled in for one that was not measured."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult

# One result as passed in (results.json) -> EvalResult field. Short names or EvalResult's own.
_RESULT_ALIASES = {
    "task": "task_type",
    "dataset": "dataset_type",
    "split": "dataset_split",
    "config": "dataset_config",
    "metric": "metric_type",
    "value": "metric_value",
}
_RESULT_FIELDS = {f.name for f in dataclasses.fields(EvalResult)}
_RESULT_REQUIRED = ("task_type", "dataset_type", "metric_type", "metric_value")
# Accuracy in every card and model-index is a fraction in [0, 1] (what Trainer's
# `eval_accuracy`, `evaluate`'s accuracy and scripts/linear_probe.py report), never percent.
_FRACTION_METRICS = ("accuracy", "top-1 accuracy", "top-5 accuracy", "top1_accuracy", "top5_accuracy")


def is_fraction_metric(metric_type: str) -> bool:
    """Whether a metric is an accuracy, held as a fraction in the model-index (percent in prose)."""
    return str(metric_type).lower() in _FRACTION_METRICS


def to_eval_result(result: Mapping[str, Any]) -> EvalResult:
    """One measured result -> `EvalResult`.

    Keys: task (e.g. "image-classification"), dataset (Hub id), metric (e.g. "accuracy"),
    value (a finite number), optional dataset_name, split, config, metric_name,
    task_name, protocol ("linear probe", "fine-tune", "k-NN", ...: prefixed to the
    metric name), source_name / source_url, or any `EvalResult` field under its own name."""
    if not isinstance(result, Mapping):
        raise ValueError(f"a result must be a mapping, got {result!r}")
    fields: dict[str, Any] = {}
    protocol = None
    for key, value in result.items():
        if key == "protocol":
            protocol = value
            continue
        name = _RESULT_ALIASES.get(key, key)
        if name not in _RESULT_FIELDS:
            allowed = sorted({*_RESULT_ALIASES, *_RESULT_FIELDS, "protocol"})
            raise ValueError(f"unknown result key {key!r} in {dict(result)!r}; allowed keys: {', '.join(allowed)}")
        fields[name] = value
    missing = [k for k in _RESULT_REQUIRED if fields.get(k) is None]
    if missing:
        raise ValueError(f"result {dict(result)!r} lacks {missing} (task, dataset, metric and value are required)")
    value = fields["metric_value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"a result value must be a finite measured number, got {value!r} in {dict(result)!r}")
    if str(fields["metric_type"]).lower() in _FRACTION_METRICS and not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{fields['metric_type']} must be a fraction in [0, 1] (e.g. 0.8125, not 81.25): cards and model-index "
            f"use fractions throughout, as Trainer and scripts/linear_probe.py report them; got {value!r} in {dict(result)!r}"
        )
    fields.setdefault("dataset_name", fields["dataset_type"])
    if protocol and not fields.get("metric_name"):
        fields["metric_name"] = f"{protocol} {fields['metric_type']}"
    return EvalResult(**fields)


def hub_dataset_id(dataset: str) -> str:
    """The Hub id of a data set a run names: Fashion-MNIST's local files -> its Hub id; any
    other name as it is (a local path stays a path, which the card never links)."""
    from ..data import FASHION_MNIST_HUB_ID, is_fashion_mnist

    return FASHION_MNIST_HUB_ID if is_fashion_mnist(dataset) else dataset


def local_dataset_name(dataset: str) -> str:
    """How a card names a local data set: its folder or file name, never the whole path
    (`cjepa_hf.evaluation.dataset_display_name`)."""
    from ..evaluation.labelled import dataset_display_name

    return dataset_display_name(dataset)


def judgement_results(evaluation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The results (`to_eval_result` form, fractions) of a `cjepa_hf.judge.judge_encoder`
    judgement: the trained encoder's linear-probe and k-NN top-1. A data set that is not on
    the Hub is named by its folder name, with the dataset type "imagefolder"."""
    from .cards import is_hub_id

    protocol = evaluation["protocol"]
    dataset = hub_dataset_id(protocol["dataset"])
    on_hub = is_hub_id(dataset)
    return [
        {
            "task": "image-classification",
            "dataset": dataset if on_hub else "imagefolder",
            "dataset_name": dataset if on_hub else local_dataset_name(dataset),
            "split": protocol["test_split"],
            "metric": "accuracy",
            "value": evaluation["trained"][key],
            "protocol": name,
        }
        for key, name in (("linear_top1", "linear probe"), ("knn_top1", "k-NN"))
    ]


def judgement_text(evaluation: Mapping[str, Any]) -> str:
    """The card's section on a judgement: the protocol and the three-row table (percent)."""
    from ..judge import judgement_table

    protocol = evaluation["protocol"]
    dataset = hub_dataset_id(protocol["dataset"])
    from .cards import is_hub_id

    name = dataset if is_hub_id(dataset) else local_dataset_name(dataset)
    return (
        f"## How it compares with its random initialisation and raw pixels\n\nMeasured at the end of this run on "
        f"{name} ({protocol['test_samples']} {protocol['test_split']} images; probes trained on "
        f"{protocol['train_samples']} {protocol['train_split']} images; k-NN k={protocol['knn_k']}, "
        f"T={protocol['knn_temperature']}), top-1 accuracy in percent:\n\n{judgement_table(evaluation)}\n"
    )


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A results file: a JSON list of result dicts, or {"results": [...]}, which is also what
    `scripts/linear_probe.py --output` writes for an encoder (its "results" key)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, Mapping):
        data = data.get("results")
    if not isinstance(data, list):
        raise ValueError(
            f"{os.fspath(path)!r} must hold a JSON list of results or {{'results': [...]}} (scripts/linear_probe.py "
            "--output writes one for an encoder; a baseline's output has none)"
        )
    return data


__all__ = [
    "hub_dataset_id",
    "is_fraction_metric",
    "judgement_results",
    "judgement_text",
    "load_results",
    "local_dataset_name",
    "to_eval_result",
]
