"""The epoch and resume hooks the trainer calls on its data, as typed protocols (`isinstance` checks, no hasattr chains),
and what it asks of a dataset before training (its size, whether one batch fits).

- `EpochAwareDataset`: a stream whose order depends on the epoch (`set_epoch(epoch)`; the
  `cjepa_hf.data` streams, `datasets.IterableDataset`);
- `EpochAwareCollator`: a collator whose masks depend on (epoch, batch position)
  (`set_epoch(epoch, start_position)`; `cjepa_hf.masking.MaskCollator`);
- `SeekableStream`: a stream that can restart mid-epoch (`resume_at(epoch, records)`, records
  consumed per DataLoader worker; the `cjepa_hf.data` streams).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from datasets import IterableDataset as HFIterableDataset
from torch.utils.data import IterableDataset


@runtime_checkable
class EpochAwareDataset(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class EpochAwareCollator(Protocol):
    def set_epoch(self, epoch: int, start_position: int = 0) -> None: ...


@runtime_checkable
class SeekableStream(Protocol):
    def resume_at(self, epoch: int, records: Sequence[int]) -> None: ...


def is_stream(dataset: Any) -> bool:
    """An iterable (streaming) dataset: torch's or the datasets library's."""
    return isinstance(dataset, (IterableDataset, HFIterableDataset))


def stream_num_examples(dataset: Any) -> int | None:
    """The number of examples of a stream's split when its dataset info says (a `cjepa_hf.data`
    stream over a `datasets.IterableDataset`, or that dataset itself), else None."""
    inner = getattr(dataset, "dataset", dataset)
    splits = getattr(getattr(inner, "info", None), "splits", None) or {}
    split = getattr(inner, "split", None)
    if split is None and len(splits) == 1:
        split = next(iter(splits))
    entry = splits.get(str(split)) if split is not None else None
    return int(entry.num_examples) if entry is not None and entry.num_examples else None


def check_one_batch_fits(dataset: Any, per_device: int, world_size: int) -> None:
    """A finite dataset smaller than one global batch trains nothing (Trainer ends after 0 steps,
    exit status 0): refuse it before any work. Streams without a length pass."""
    try:
        size = len(dataset)
    except TypeError:
        return
    if size < per_device * world_size:
        raise ValueError(
            f"the training dataset has {size} example(s), fewer than one global batch: per_device_train_batch_size="
            f"{per_device} x {world_size} process(es) = {per_device * world_size}; lower per_device_train_batch_size or "
            "train on more data"
        )


def start_epoch(dataset: Any, collator: Any, epoch: int, start_position: int, records: list[int] | None) -> None:
    """Tell the data which epoch starts: the collator its (epoch, start position); a stream its
    epoch, or where to seek to (`records`, a pending resume) when it can."""
    if isinstance(collator, EpochAwareCollator):
        collator.set_epoch(epoch, start_position=start_position)
    if records is not None and isinstance(dataset, SeekableStream):
        dataset.resume_at(epoch, records)
    elif is_stream(dataset) and isinstance(dataset, EpochAwareDataset):
        dataset.set_epoch(epoch)


__all__ = [
    "EpochAwareCollator",
    "EpochAwareDataset",
    "SeekableStream",
    "check_one_batch_fits",
    "is_stream",
    "start_epoch",
    "stream_num_examples",
]
