"""Probes on frozen features: the linear probe (multinomial logistic regression, weight decay chosen on held-out training features), weighted k-NN, `evaluate_features` (both at once) and the reporting helpers (`markdown_table`, `probe_results`).

Shapes: N training examples, M evaluation examples, F feature size, C classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import FASHION_MNIST_HUB_ID, is_fashion_mnist
from .features import feature_statistics
from .labelled import dataset_display_name

DEFAULT_WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
KNN_WEIGHTINGS = ("dino", "majority")
PROBE_OPTIMIZERS = ("lbfgs", "adamw")


# ============================================================================ linear probe


def _moments(train_x: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std (at least `eps`) of `train_x` (N, F)."""
    return train_x.mean(dim=0), train_x.std(dim=0).clamp_min(eps)


def standardize(train_x: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, ...]:
    """Standardise every tensor with the per-feature mean and std of `train_x` (N, F)."""
    mean, std = _moments(train_x, eps)
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
            linear.parameters(),
            lr=1.0,
            max_iter=max_iter,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-6,
            tolerance_change=1e-9,
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
    progress: str | None = None,
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
    (standardisation folded in)}. `progress`: the description of a progress bar over the
    fits (one per weight decay, then the refit); None: no bar."""
    if train_x.dim() != 2 or val_x.dim() != 2 or train_x.shape[1] != val_x.shape[1]:
        raise ValueError(f"features must be (N, F) with the same F, got {tuple(train_x.shape)} and {tuple(val_x.shape)}")
    if len(train_x) != len(train_y) or len(val_x) != len(val_y):
        raise ValueError(f"features and labels must have the same length, got {len(train_x)}/{len(train_y)} and {len(val_x)}/{len(val_y)}")
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
    bar = None
    if progress is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(weight_decays) + 1, desc=progress, unit="fit", leave=False)
    for wd in weight_decays:
        linear = fit_logistic_regression(fit_x, train_y[fit_idx], num_classes, wd, **fit_kwargs)
        holdout_accuracy[float(wd)] = _accuracy(linear(hold_x), train_y[hold_idx])
        if bar is not None:
            bar.update()
    best_wd = max(holdout_accuracy, key=lambda wd: (holdout_accuracy[wd], wd))

    mean, std = _moments(train_x)
    std_train, std_val = (train_x - mean) / std, (val_x - mean) / std
    linear = fit_logistic_regression(std_train, train_y, num_classes, best_wd, **fit_kwargs)
    if bar is not None:
        bar.update()
        bar.close()
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
        train_x,
        train_y,
        test_x,
        k=k,
        temperature=temperature,
        weighting=weighting,
        num_classes=num_classes,
        batch_size=batch_size,
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
        w: knn_accuracy(train_x, train_y, test_x, test_y, k, temperature, weighting=w, num_classes=num_classes) for w in knn_weightings
    }
    result["knn_k"], result["knn_temperature"] = k, temperature
    result["feature_stats"] = feature_statistics(test_x)
    return result


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are written as given (format them before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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
        dataset_fields = {"dataset": "imagefolder", "dataset_name": dataset_display_name(str(dataset))}
    common = {"task": "image-classification", **dataset_fields, "split": str(result.get("eval_split")), "metric": "accuracy"}
    layers = result.get("last_n_layers", 1)
    suffix = f", last {layers} blocks" if layers and layers > 1 else ""
    out = []
    if result.get("linear_probe"):
        out.append(
            {
                **common,
                "protocol": "linear probe",
                "metric_name": f"linear probe top-1 accuracy{suffix}",
                "value": float(result["linear_probe"]["accuracy"]),
            }
        )
    for weighting, value in (result.get("knn") or {}).items():
        out.append(
            {
                **common,
                "protocol": "k-NN",
                "value": float(value),
                "metric_name": f"k-NN top-1 accuracy (k={result.get('knn_k')}, {weighting}){suffix}",
            }
        )
    return out
