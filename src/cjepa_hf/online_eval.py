"""Online evaluation during pretraining: a linear probe on detached features and a k-NN monitor.

Both watch the target (EMA) encoder, whose mean-pooled output is what users extract, and
neither changes the encoders' updates:

- `OnlineLinearProbe`: a linear head trained, at every training step, on the detached
  mean-pooled target features of the training batch and the labels the stream carries,
  with its own AdamW. Under several processes every process trains it on the gathered
  batch, so the copies stay identical without DDP. Its weights and optimizer state go into
  every checkpoint (resume stays exact) and never into the exported encoder.
- `KNNMonitorSet`: a labelled evaluation set split into a memory bank (its first
  `bank_size` examples) and queries (the next `query_size`). `CJEPATrainer.evaluate`
  encodes it, gathers the features of all processes and scores the queries with
  `cjepa_hf.evaluation.knn_accuracy`, the same k-NN as the offline evaluation, and the
  probe on the same query features.

The idea follows the online probes of solo-learn and stable-pretraining (a probe on
detached features, its own optimiser, logged as training goes).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

PROBE_WEIGHTS = "online_probe.safetensors"
PROBE_OPTIMIZER = "online_probe_optimizer.pt"


def infer_num_labels(dataset: Any) -> int | None:
    """Number of classes of a `cjepa_hf.data` stream's label column, from its `ClassLabel`
    feature; None when the stream has no label column or the feature does not say."""
    label_column = getattr(dataset, "label_column", None)
    inner = getattr(dataset, "dataset", None)
    features = getattr(inner, "features", None)
    if label_column is None or features is None or label_column not in features:
        return None
    return getattr(features[label_column], "num_classes", None)


class OnlineLinearProbe(nn.Module):
    """A linear classifier on detached features (B, D) with its own AdamW, behind a
    parameter-free batch normalisation (as linear probes of SSL encoders usually have: MAE's,
    for one): the target features' scale (a std of about 0.02 per dimension early in a
    small run) would otherwise make a learning rate of 1e-3 crawl. Training steps normalise
    with the batch's moments and move running ones (momentum 0.1); evaluation uses the
    running moments.

    `step(features, labels)` does one update and returns (loss, correct, used) as 0-dim tensors,
    without a host sync: a non-finite loss (e.g. the batch of a skipped non-finite training
    step) skips the update through fused AdamW's `found_inf`, so the probe is never poisoned,
    and counts nothing."""

    def __init__(self, dim: int, num_labels: int, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"the online probe needs at least 2 classes, got num_labels={num_labels}")
        if not lr > 0:
            raise ValueError(f"online_probe_lr must be > 0, got {lr!r}")
        self.head = nn.Linear(dim, num_labels)
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.lr, self.weight_decay = lr, weight_decay
        self.momentum, self.eps = 0.1, 1e-5
        self.optimizer: torch.optim.Optimizer | None = None

    def build_optimizer(self) -> torch.optim.Optimizer:
        """Built once the probe is on its device (fused AdamW needs the parameters there)."""
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)
        return self.optimizer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_labels) from features (B, D), normalised with the running moments."""
        features = features.float()
        return self.head((features - self.running_mean) * torch.rsqrt(self.running_var + self.eps))

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One AdamW step on (features (B, D), labels (B,)); returns (mean loss, number correct,
        1.0 if the batch was used else 0.0); a skipped batch gives (0, 0, 0)."""
        optimizer = self.optimizer or self.build_optimizer()
        features = features.detach()
        finite = torch.isfinite(features).all()
        # a zeroed batch keeps the loss finite for backward; found_inf then skips the update
        features = torch.where(finite, features, torch.zeros_like(features)).float()
        mean, var = features.mean(dim=0), features.var(dim=0, unbiased=False)
        with torch.no_grad():  # a skipped batch (weight 0) leaves the running moments as they are
            weight = self.momentum * finite.float()
            self.running_mean.lerp_(mean, weight)
            self.running_var.lerp_(var, weight)
        with torch.enable_grad():
            logits = self.head((features - mean) * torch.rsqrt(var + self.eps))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.found_inf = (~finite).float()
        optimizer.step()
        del optimizer.found_inf
        used = finite.float()
        correct = (logits.detach().argmax(dim=1) == labels).sum() * used
        return loss.detach() * used, correct, used

    @torch.no_grad()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return (self(features).argmax(dim=1) == labels).float().mean().item()

    # -- checkpoints --------------------------------------------------------------------
    def save(self, folder: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, os.path.join(folder, PROBE_WEIGHTS))
        torch.save((self.optimizer or self.build_optimizer()).state_dict(), os.path.join(folder, PROBE_OPTIMIZER))

    def load(self, folder: str) -> None:
        """Restore weights and optimizer state from a checkpoint; raises `FileNotFoundError`
        naming the missing file (a checkpoint of a run without the probe)."""
        from safetensors.torch import load_file

        for name in (PROBE_WEIGHTS, PROBE_OPTIMIZER):
            if not os.path.exists(os.path.join(folder, name)):
                raise FileNotFoundError(
                    f"checkpoint {folder!r} has no {name}: it was written without the online probe; resume with --online_probe false"
                )
        device = self.head.weight.device
        state = load_file(os.path.join(folder, PROBE_WEIGHTS), device=str(device))
        if set(state) != set(self.state_dict()):
            raise ValueError(
                f"{PROBE_WEIGHTS} in {folder!r} holds {sorted(state)}, this version's probe {sorted(self.state_dict())} "
                "(a checkpoint of an older version, whose probe had no normalisation); resume with --online_probe false"
            )
        if state["head.weight"].shape != self.head.weight.shape:
            raise ValueError(
                f"{PROBE_WEIGHTS} in {folder!r} has weight of shape {tuple(state['head.weight'].shape)}, "
                f"this run's probe has {tuple(self.head.weight.shape)} (feature size, classes differ)"
            )
        self.load_state_dict(state)
        optimizer = self.optimizer or self.build_optimizer()
        optimizer.load_state_dict(torch.load(os.path.join(folder, PROBE_OPTIMIZER), map_location=device, weights_only=True))


class KNNMonitorSet:
    """The labelled evaluation set of the k-NN monitor: the first `bank_size` examples of a
    source (any source `cjepa_hf.data.build_pretrain_dataset` accepts, in its stored order,
    decoded with the evaluation transform) are the memory bank, the next `query_size` the
    queries. Choose a split carved from the training images for model selection (e.g. the
    first examples of the train split), never the test split.

    Decoded images are kept in memory after the first pass when they take at most
    `cache_bytes` (Fashion-MNIST's 6,000 take 74 MB); larger sets are decoded at every
    evaluation."""

    def __init__(
        self,
        source: str,
        *,
        image_size: int,
        patch_size: int,
        split: str = "train",
        bank_size: int = 5000,
        query_size: int = 1000,
        image_column: str = "image",
        label_column: str | None = "label",
        streaming: bool | None = None,
        token: str | bool | None = None,
        cache_bytes: int = 1 << 30,
    ) -> None:
        for name, value in (("eval_bank_size", bank_size), ("eval_query_size", query_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        from .data import build_pretrain_dataset

        self.source, self.split = source, split
        self.bank_size, self.query_size = bank_size, query_size
        self.stream = build_pretrain_dataset(
            source,
            image_size=image_size,
            patch_size=patch_size,
            split=split,
            image_column=image_column,
            label_column=label_column,
            streaming=True if streaming is None else streaming,
            shuffle_buffer=0,
            train=False,
            token=token,
        )
        if self.stream.label_column is None:
            raise ValueError(f"the k-NN monitor needs labels, but {source!r} (split {split!r}) has no label column")
        self.num_labels = infer_num_labels(self.stream)
        self.cache_bytes = cache_bytes
        self._cache: list[tuple[torch.Tensor, int]] | None = None

    def __len__(self) -> int:
        return self.bank_size + self.query_size

    def _examples(self) -> Iterator[tuple[torch.Tensor, int]]:
        if self._cache is not None:
            yield from self._cache
            return
        kept, size, complete = [], 0, True
        for example in itertools.islice(iter(self.stream), len(self)):
            item = (example["pixel_values"], int(example["label"]))
            if complete:
                size += item[0].numel() * item[0].element_size()
                complete = size <= self.cache_bytes
                kept.append(item) if complete else kept.clear()
            yield item
        if complete:
            if len(kept) < len(self):
                raise ValueError(
                    f"the k-NN monitor asked for {self.bank_size} bank + {self.query_size} query examples, but "
                    f"{self.source!r} (split {self.split!r}) gave {len(kept)}"
                )
            self._cache = kept

    def batches(
        self, rank: int = 0, world_size: int = 1, batch_size: int = 256
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This process's share (every world_size-th example from `rank`) as batches of
        (positions (b,), pixel_values (b, C, H, W), labels (b,)); position < bank_size is
        the memory bank."""
        share = ((i, x, y) for i, (x, y) in enumerate(self._examples()) if i % world_size == rank)
        while chunk := list(itertools.islice(share, batch_size)):
            positions, pixels, labels = zip(*chunk)
            yield torch.tensor(positions), torch.stack(pixels), torch.tensor(labels)


__all__ = ["KNNMonitorSet", "OnlineLinearProbe", "PROBE_OPTIMIZER", "PROBE_WEIGHTS", "infer_num_labels"]
