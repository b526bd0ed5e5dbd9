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


__all__ = ["load_results", "to_eval_result"]
