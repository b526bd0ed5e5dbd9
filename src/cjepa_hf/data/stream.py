"""The training stream: `PretrainImageStream` (decoding and augmentation in the DataLoader workers, sharding across workers and processes, `resume_at`, `num_skipped`) and `build_pretrain_dataset`, which assembles it from a source.

Data flow (one record)::

    datasets stream (`cjepa_hf.data.sources.load_image_source`)
      -> raw record {"image": {"bytes", "path"}, "label"}   (image column cast to Image(decode=False))
      -> [shuffle buffer] -> [split_dataset_by_node] -> PretrainImageStream, in the DataLoader worker:
           decode (PIL, JPEG draft) -> to_rgb -> [pad_to] -> RandomResizedCrop
           -> training: uint8 crop (normalised on the device by the model, once per batch)
              evaluation: normalise in the worker
      -> {"pixel_values": (C, H, W) uint8 or float32, "label": int, "num_skipped": int}
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from .decoding import BAD_RECORDS, DEFAULT_MAX_IMAGE_PIXELS, BadRecord, BadRecordCounter, DecodeTransform
from .sources import DEFAULT_HUB_DATASET, _resolve_columns, load_image_source
from .transforms import OUTPUTS, EvalTransform, PretrainTransform, auto_pad_to, crop_pct_for_padding

logger = logging.getLogger(__name__)


def _mix_seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) % 2**63 for v in values]).generate_state(1, dtype=np.uint64)[0])


class PretrainImageStream(torch.utils.data.IterableDataset):
    """Decoded, augmented training examples from a raw `datasets.IterableDataset`.

    Yields ``{"pixel_values": (C, H, W) uint8 or float32 (the transform's output), "label": int (if a label column),
    "num_skipped": int}``. The wrapped `dataset` is already split for this process
    (`split_dataset_by_node`) and shuffled; when iterated inside a DataLoader worker it
    gives that worker its share of the shards. Decoding and augmentation happen here, in
    the worker. Crop randomness comes from a `torch.Generator` seeded from
    (seed, rank, worker id, epoch, record index): reproducible, different across workers,
    processes and epochs, and independent of the records before it, so a resumed stream
    crops exactly as the uninterrupted one. `set_epoch` reshuffles (shard order and buffer)
    and re-seeds the crops.

    `resume_at(epoch, records)` continues an interrupted epoch: worker w (of as many workers
    as `records` has entries) passes over its first `records[w]` records without decoding
    them. `CJEPATrainer` records those counts in its checkpoints.

    Bad records are skipped and counted (see `cjepa_hf.data.decoding`); one good example is
    held back so that bad records at the end of the stream ride on the last good one.
    `max_consecutive_bad` consecutive bad records (default 10,000) mean a misconfigured
    source (wrong column, wrong format), not a few bad files: that raises.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        decode_transform: DecodeTransform,
        *,
        image_column: str = "image",
        label_column: str | None = "label",
        seed: int = 0,
        rank: int = 0,
        counter: BadRecordCounter | None = None,
        max_consecutive_bad: int | None = 10_000,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.decode_transform = decode_transform
        self.image_column = image_column
        self.label_column = label_column
        self.seed = int(seed)
        self.rank = int(rank)
        self.counter = counter
        self.max_consecutive_bad = max_consecutive_bad
        self._resume: tuple[int, tuple[int, ...]] | None = None

    # -- datasets-like surface: Trainer / accelerate call set_epoch on the dataset
    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None  # a resumed epoch is skipped into once

    def resume_at(self, epoch: int, records: Sequence[int]) -> None:
        """Start at `epoch`, with worker w of len(records) workers (one entry: no workers)
        skipping its first records[w] records, good or bad, undecoded."""
        records = tuple(int(r) for r in records)
        if not records or any(r < 0 for r in records):
            raise ValueError(f"records must be one count >= 0 per DataLoader worker (or one without workers), got {records}")
        self.set_epoch(epoch)
        self._resume = (int(epoch), records)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    @property
    def num_shards(self) -> int:
        return self.dataset.num_shards

    n_shards = num_shards

    def shard(self, num_shards: int, index: int, contiguous: bool = True) -> PretrainImageStream:
        """This stream restricted to shard `index` of `num_shards` (see `datasets.IterableDataset.shard`)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.dataset = self.dataset.shard(num_shards=num_shards, index=index, contiguous=contiguous)
        return clone

    def _counter(self) -> BadRecordCounter:
        # Resolved at iteration time: in a worker, BAD_RECORDS is that worker's own copy.
        return self.counter if self.counter is not None else BAD_RECORDS

    def _records(self, worker: Any) -> Iterator[dict[str, Any]]:
        if worker is None or worker.num_workers <= self.dataset.num_shards:
            # datasets gives each DataLoader worker its own shards.
            yield from self.dataset
            return
        # Fewer shards than workers (a streaming imagefolder is ONE shard): every worker reads
        # the undecoded record stream (paths or bytes, in the same shuffled order, since
        # `iter` does not offset the shuffle RNG by worker) and keeps every num_workers-th
        # record, so decoding is still split across the workers.
        batches = self.dataset.iter(batch_size=64)
        records = (dict(zip(batch, values)) for batch in batches for values in zip(*batch.values()))
        yield from itertools.islice(records, worker.id, None, worker.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        num_workers = worker.num_workers if worker is not None else 1
        generator = torch.Generator()
        base_seed = _mix_seed(self.seed, self.rank, worker_id, self.epoch)
        counter = self._counter()
        pending: dict[str, Any] | None = None
        skipped = 0  # bad records since the last good example
        consecutive_bad = 0
        records: Iterator[dict[str, Any]] = self._records(worker)
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            counts = self._resume[1]
            if len(counts) != num_workers:
                raise ValueError(
                    f"resume_at was given record counts for {len(counts)} DataLoader worker(s) but this stream is "
                    f"read by {num_workers}; use the same dataloader_num_workers as the interrupted run"
                )
            start = counts[worker_id]
            records = itertools.islice(records, start, None)  # undecoded: cheap
        for index, record in enumerate(records, start):
            generator.manual_seed((base_seed + index * 0x9E3779B97F4A7C15) % 2**63)
            try:
                pixel_values = self.decode_transform(record.get(self.image_column), generator)
            except BadRecord as error:
                skipped += 1
                consecutive_bad += 1
                counter.record(error)
                if self.max_consecutive_bad is not None and consecutive_bad >= self.max_consecutive_bad:
                    raise RuntimeError(
                        f"{consecutive_bad} consecutive bad records in column {self.image_column!r} "
                        f"(last: {error}); the source or image_column is probably wrong. "
                        f"Bad records so far by reason: {dict(counter.by_reason)}"
                    ) from None
                continue
            consecutive_bad = 0
            example: dict[str, Any] = {"pixel_values": pixel_values}
            if self.label_column is not None:
                label = record.get(self.label_column)
                example["label"] = -1 if label is None else int(label)
            example["num_skipped"] = skipped
            skipped = 0
            if pending is not None:
                yield pending
            pending = example
        if pending is not None:
            pending["num_skipped"] += skipped
            yield pending
        elif skipped:
            logger.error(
                "a data stream (rank %d, worker %d) held %d records and all were bad: their count cannot travel in num_skipped",
                self.rank,
                worker_id,
                skipped,
            )

    def __repr__(self) -> str:
        return (
            f"PretrainImageStream(image_column={self.image_column!r}, label_column={self.label_column!r}, "
            f"num_shards={self.num_shards}, seed={self.seed}, rank={self.rank}, dataset={self.dataset!r})"
        )


def build_pretrain_dataset(
    source: str = DEFAULT_HUB_DATASET,
    *,
    image_size: int,
    patch_size: int,
    split: str = "train",
    image_column: str = "image",
    label_column: str | None = "label",
    streaming: bool = True,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    token: str | bool | None = None,
    train: bool = True,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str | None = None,
    eval_crop_pct: float = 0.875,
    pad_to: int | None = None,
    pad_fill: int = 0,
    num_shards: int = 64,
    max_consecutive_bad: int | None = 10_000,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    output: str | None = None,
) -> PretrainImageStream:
    """A streaming dataset of ``{"pixel_values", "label"?, "num_skipped"}`` for this process.

    Pipeline: raw records from `load_image_source` (see there for `source`) -> the image
    column cast to ``Image(decode=False)`` so that `datasets` never decodes -> (training
    only, `shuffle_buffer` > 0) `shuffle(seed, buffer_size=shuffle_buffer)`, which also
    shuffles the shard order and reshuffles at every `set_epoch` -> (world_size > 1)
    `split_dataset_by_node(ds, rank, world_size)`, by shards when their number is a
    multiple of world_size, else by example -> `PretrainImageStream`, which decodes,
    converts with `to_rgb`, pads to `pad_to` and applies the transform lazily where it is
    iterated, i.e. in the DataLoader workers.

    Memory: the shuffle buffer holds undecoded records, one buffer per DataLoader worker;
    ImageNet JPEGs average ~110 KB, so 10,000 of them take ~1.1 GB in every worker.

    Transforms: `PretrainTransform` (RandomResizedCrop(`scale`, `ratio`), bilinear like
    torchvision's default in the I-JEPA code) when `train`, else `EvalTransform`
    (shorter side to image_size / `eval_crop_pct`, centre crop, bicubic);
    `interpolation` overrides either. Records whose shorter side is < `patch_size` are bad
    records. `pad_to` defaults to `auto_pad_to`: Fashion-MNIST at an `image_size` at most two
    patches above 28 (e.g. 32 with patch 4) is padded to `image_size` with `pad_fill` (its
    black background) instead of being upscaled, and for evaluation the padded image is used
    as is (`crop_pct_for_padding`: no resize, no crop).
    `num_shards`: shards of a map-style source (Fashion-MNIST, ``streaming=False``), and
    the count below which a parquet source is resharded by row group.
    `output`: "uint8" ((C, H, W) uint8 pixels, a quarter of the bytes to collate, pin and copy;
    `CJEPAForPreTraining` and `CJEPAModel` normalise a uint8 batch on its device with
    `cjepa_hf.processing_cjepa.normalize_pixels`) or "float32" (normalised in the worker);
    default uint8 for training and float32 for evaluation (`train=False`), whose consumers
    (k-NN monitor, feature extraction) take normalised tensors.
    `max_image_pixels`: records of more pixels (read from the header, after JPEG draft
    scaling) are bad records (`too_large`), refused before decoding; see
    `DEFAULT_MAX_IMAGE_PIXELS` (64 MP) for the default; None lifts the cap.
    """
    if output is not None and output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS} or None (uint8 for training, float32 for evaluation), got {output!r}")
    if image_size % patch_size != 0:
        raise ValueError(f"image_size must be divisible by patch_size, got {image_size} and {patch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank={rank}, world_size={world_size}")
    ds = load_image_source(source, split=split, streaming=streaming, token=token, num_shards=num_shards)
    if ds.num_shards < num_shards:
        # Parquet can be split per row group: more shards, so more workers and processes
        # get whole shards instead of reading everything and keeping 1 record in N.
        try:
            ds = ds.reshard()
        except Exception as error:  # noqa: BLE001 - not every format can reshard
            logger.debug("cannot reshard %s: %s", source, error)
    image_column, label_column = _resolve_columns(ds.features, image_column, label_column)
    if ds.features is not None:
        if isinstance(ds.features.get(image_column), datasets.Image):
            ds = ds.cast_column(image_column, datasets.Image(decode=False))
        keep = [c for c in (image_column, label_column) if c is not None]
        if set(keep) != set(ds.features):
            ds = ds.select_columns(keep)
    if train and shuffle_buffer > 0:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    if world_size > 1:
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)

    if output is None:
        output = "uint8" if train else "float32"
    if pad_to is None:
        pad_to = auto_pad_to(source, image_size, patch_size)
    if train:
        transform: Callable[..., torch.Tensor] = PretrainTransform(image_size, scale, ratio, interpolation or "bilinear", output=output)
    else:
        crop_pct = crop_pct_for_padding(image_size, pad_to, eval_crop_pct)
        transform = EvalTransform(image_size, crop_pct=crop_pct, interpolation=interpolation or "bicubic", output=output)
    decode_transform = DecodeTransform(
        transform, min_size=patch_size, pad_to=pad_to, pad_fill=pad_fill, token=token, max_image_pixels=max_image_pixels
    )
    return PretrainImageStream(
        ds,
        decode_transform,
        image_column=image_column,
        label_column=label_column,
        seed=seed,
        rank=rank,
        max_consecutive_bad=max_consecutive_bad,
    )
