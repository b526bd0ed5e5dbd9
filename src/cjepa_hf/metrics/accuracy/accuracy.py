"""Top-1 accuracy as a local `evaluate` module: `evaluate.load(<this folder>)` works offline.

It computes what the Hub's `accuracy` metric computes (the fraction of predictions equal to
their reference, optionally weighted), with numpy only, so that fine-tuning and its tests do
not need the Hub (`evaluate.load("accuracy")` downloads the module from there).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Accuracy: the proportion of correct predictions, (TP + TN) / (TP + TN + FP + FN)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): ground-truth class ids.
    normalize (`bool`, default True): False returns the number of correct predictions.
    sample_weight (`list` of `float`, optional): per-example weights.
Returns:
    accuracy (`float` or `int`): in [0, 1] when normalize=True, else the (weighted) count.
Example:
    >>> metric = evaluate.load("src/cjepa_hf/metrics/accuracy")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions and references must have the same shape, got {predictions.shape} and {references.shape}")
        correct = (predictions == references).astype(np.float64)
        if sample_weight is not None:
            correct = correct * np.asarray(sample_weight, dtype=np.float64)
        if normalize:
            total = np.sum(sample_weight) if sample_weight is not None else len(correct)
            value = float(correct.sum() / total) if total else 0.0
        else:
            value = float(correct.sum()) if sample_weight is not None else int(correct.sum())
        return {"accuracy": value}
