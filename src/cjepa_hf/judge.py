"""Judge a pretrained encoder against its own random initialisation and raw pixels.

One protocol, used by `scripts/pretrain.py` at the end of a run and by the sweep's final
evaluation: features of a labelled data set's train split (a seeded subset) and test split,
then a linear probe (weight decay chosen on a held-out part of the TRAIN features,
`cjepa_hf.evaluation.train_linear_probe`) and a weighted k-NN
(`cjepa_hf.evaluation.knn_accuracy`), for three feature sets:

- ``trained``: the pretrained (target) encoder, mean-pooled;
- ``random_init``: the same architecture with the exact weights the run started from;
- ``raw_pixels``: the normalised pixels, flattened.

A self-supervised encoder is only useful where it beats the last two.

The raw-pixel scores depend on the protocol only (data, subsets, image size, padding, k-NN
settings, seed), not on the run: they are computed once and kept in `cache_dir` (default
$HF_HOME/cjepa_hf/judge), keyed by the protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import torch
import torch.nn as nn

from .evaluation import (
    ClassificationTransform,
    evaluate_features,
    extract_features,
    load_labelled_dataset,
    markdown_table,
    raw_pixel_features,
    split_train_eval,
    subsample,
)
from .evaluation.plan import HELD_OUT_FRACTION

logger = logging.getLogger(__name__)

FEATURE_SETS = ("trained", "random_init", "raw_pixels")


def judge_encoder(
    encoder: nn.Module,
    initial_encoder: nn.Module,
    *,
    dataset: str = "fashion_mnist",
    train_split: str = "train",
    test_split: str = "test",
    image_size: int,
    pad_to: int | None = None,
    train_samples: int | None = 10_000,
    test_samples: int | None = None,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    seed: int = 0,
    batch_size: int = 512,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Linear-probe and k-NN top-1 (fractions) of the three feature sets on `dataset`.

    A data set without `test_split` (a user's image folder of class sub-folders) is judged on
    a stratified, seeded `HELD_OUT_FRACTION` of its `train_split`, the probes trained on the
    rest; the protocol's test_split then reads e.g. "train[held-out 20%]". Each phase is
    logged, and feature extraction shows a progress bar.

    Returns {"trained" | "random_init" | "raw_pixels": {"linear_top1", "knn_top1",
    "effective_rank_centered", "dims"}, "protocol": {...}, "seconds": {phase: wall time}}."""
    start = time.time()
    protocol = {
        "dataset": dataset,
        "train_split": train_split,
        "test_split": test_split,
        "train_samples": train_samples,
        "test_samples": test_samples,
        "image_size": image_size,
        "pad_to": pad_to,
        "knn_k": knn_k,
        "knn_temperature": knn_temperature,
        "seed": seed,
    }
    cache = _raw_pixel_cache(protocol, cache_dir)
    logger.info("final judgement on %s: loading the labelled images", dataset)
    data = load_labelled_dataset(dataset)
    if train_split not in data:
        raise ValueError(f"{dataset!r} has no split {train_split!r}; it has {sorted(data)}")
    if test_split in data:
        train_part, test_part = data[train_split], data[test_split]
    else:  # a user's folder: hold out part of its labelled images
        train_part, test_part, test_split = split_train_eval(
            data, train_split=train_split, eval_split=None, train_val_split=HELD_OUT_FRACTION, seed=seed
        )
        protocol["test_split"] = test_split
    transform = ClassificationTransform(image_size, train=False, pad_to=pad_to)
    train = subsample(train_part, train_samples, seed=seed)
    test = subsample(test_part, test_samples, seed=seed)
    train_pix, train_y = raw_pixel_features(train, transform=transform, batch_size=batch_size, progress="judgement: decoding train images")
    test_pix, test_y = raw_pixel_features(test, transform=transform, batch_size=batch_size, progress="judgement: decoding test images")
    shape = (-1, 3, image_size, image_size)

    seconds = {"data": time.time() - start}

    def features(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, what: str) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels.view(shape), labels), batch_size=batch_size)
        return extract_features(model, loader, progress=f"judgement: features of the {what}")[0]

    tick = time.time()
    sets = {
        "trained": (
            features(encoder, train_pix, train_y, "trained encoder (train)"),
            features(encoder, test_pix, test_y, "trained encoder (test)"),
        ),
        "random_init": (
            features(initial_encoder, train_pix, train_y, "random initialisation (train)"),
            features(initial_encoder, test_pix, test_y, "random initialisation (test)"),
        ),
    }
    seconds["features"] = time.time() - tick
    result: dict[str, Any] = {}
    if os.path.exists(cache):
        with open(cache) as f:
            result["raw_pixels"] = json.load(f)
    else:
        sets["raw_pixels"] = (train_pix, test_pix)
    for name, (train_x, test_x) in sets.items():
        tick = time.time()
        logger.info("final judgement: linear probe and k-NN on the %s features (%d train, %d test)", name, len(train_y), len(test_y))
        scores = evaluate_features(
            train_x,
            train_y,
            test_x,
            test_y,
            k=knn_k,
            temperature=knn_temperature,
            knn_weightings=("dino",),
            seed=seed,
            progress=f"judgement: linear probe on the {name} features",
        )
        result[name] = {
            "linear_top1": scores["linear_probe"]["accuracy"],
            "knn_top1": scores["knn"]["dino"],
            "effective_rank_centered": scores["feature_stats"]["effective_rank_centered"],
            "dims": scores["feature_stats"]["dims"],
        }
        seconds[f"probes_{name}"] = time.time() - tick
    if "raw_pixels" in sets:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache + ".tmp", "w") as f:
            json.dump(result["raw_pixels"], f)
        os.replace(cache + ".tmp", cache)
    result["protocol"] = {
        **protocol,
        "train_samples": len(train_y),
        "test_samples": len(test_y),
        "linear_probe": "L-BFGS logistic regression on standardised features, weight decay chosen on 20% of the train features",
    }
    seconds["total"] = time.time() - start
    result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return result


def _raw_pixel_cache(protocol: dict[str, Any], cache_dir: str | None) -> str:
    if cache_dir is None:
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        cache_dir = os.path.join(home, "cjepa_hf", "judge")
    key = hashlib.sha1(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"raw_pixels-{key}.json")


def judgement_table(result: dict[str, Any]) -> str:
    """The three-row markdown table of `judge_encoder`'s result, in percent."""
    titles = {"trained": "trained encoder", "random_init": "its random initialisation", "raw_pixels": "raw pixels"}
    rows = [
        [titles[name], f"{100 * result[name]['knn_top1']:.2f}", f"{100 * result[name]['linear_top1']:.2f}", result[name]["dims"]]
        for name in FEATURE_SETS
    ]
    return markdown_table(["features", "k-NN top-1 %", "linear top-1 %", "dims"], rows)


__all__ = ["FEATURE_SETS", "judge_encoder", "judgement_table"]
