"""The offline accuracy metric of fine-tuning: `load_accuracy_metric` (an `evaluate` module, by default the one shipped in this package, `ACCURACY_METRIC_PATH`) and its numpy stand-in `NumpyAccuracy`.

`evaluate.load("accuracy")` needs the Hub; the module shipped under `cjepa_hf/metrics/accuracy`
loads offline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ACCURACY_METRIC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "metrics", "accuracy")


class NumpyAccuracy:
    """The `compute` of the `accuracy` metric without `evaluate`: {"accuracy": fraction correct}."""

    name = "accuracy"

    def compute(self, *, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions and references must have the same shape, got {predictions.shape} and {references.shape}")
        return {"accuracy": float((predictions == references).mean()) if predictions.size else 0.0}


def load_accuracy_metric(name_or_path: str | None = None) -> Any:
    """An object with `.compute(predictions=..., references=...) -> {"accuracy": float}`.

    `name_or_path`: an `evaluate` module (a Hub name such as "accuracy", or a local folder);
    default: the module shipped with this package, which loads offline. If `evaluate`
    cannot load it (no Hub, no such module), the shipped module is tried, then a numpy
    implementation; the fallback is logged."""
    candidates = [name_or_path or ACCURACY_METRIC_PATH]
    if candidates[0] != ACCURACY_METRIC_PATH:
        candidates.append(ACCURACY_METRIC_PATH)
    import evaluate  # here, not at the top: importing it takes seconds

    for candidate in candidates:
        try:
            return evaluate.load(candidate)
        except Exception as error:  # noqa: BLE001 - Hub unreachable, missing module, ...
            logger.warning("evaluate.load(%r) failed (%s: %s)", candidate, type(error).__name__, error)
    logger.warning("accuracy computed with numpy")
    return NumpyAccuracy()
