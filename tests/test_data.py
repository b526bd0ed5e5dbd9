"""Tests of `cjepa_hf.data`: transforms, mode conversion, streaming sources, sharding across
workers and processes, bad records, Fashion-MNIST."""

from __future__ import annotations

import os
import sys
import tempfile

# Offline, with a private cache, before `datasets` is imported (a conftest may have done it).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
if "datasets" not in sys.modules:
    os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="cjepa-test-hf-home-"))

import gzip
import io
import json
import logging
import math
import multiprocessing
import random
import tarfile

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from cjepa_hf import data
from cjepa_hf.masking import MaskCollator

IMAGE_SIZE = 32
PATCH = 8
MEAN = torch.tensor(data.IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(data.IMAGENET_STD).view(3, 1, 1)
FMNIST_ROOT = data.FASHION_MNIST_ROOT
has_fmnist = pytest.mark.skipif(
    not os.path.exists(os.path.join(FMNIST_ROOT, "t10k-labels-idx1-ubyte.gz")),
    reason="Fashion-MNIST IDX files missing: apt-get install dataset-fashion-mnist",
)


def unnormalize(pixel_values: torch.Tensor) -> torch.Tensor:
    """(3, H, W) normalised floats, or uint8 pixels (a training stream's), -> 0..255 float."""
    if pixel_values.dtype == torch.uint8:
        return pixel_values.float()
    return (pixel_values * STD + MEAN) * 255.0


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def noise_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_parquet(path: str, images: list, labels: list[int]) -> None:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).data.table
    # pyarrow directly: `Dataset.to_parquet` would stat image paths (a planted missing file).
    pq.write_table(table, path)


def collect(stream, num_workers: int = 0, batch_size: int = 8) -> tuple[list[int], int, list[torch.Tensor]]:
    """Labels, sum of num_skipped and pixel batches of one pass through a DataLoader."""
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=num_workers)
    labels, skipped, pixels = [], 0, []
    for batch in loader:
        labels += batch["label"].tolist()
        skipped += int(batch["num_skipped"].sum())
        pixels.append(batch["pixel_values"])
    return labels, skipped, pixels


@pytest.fixture(autouse=True)
def short_parquet_shutdown_sleep(monkeypatch):
    # datasets sleeps 5 s after interleaving parquet shards (apache/arrow#45214) at the end
    # of every pass; harmless once per epoch in training, but it dominates these tiny tests.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.1)


# ----------------------------------------------------------------------------- fixtures
NUM_SHARDS, PER_SHARD = 4, 24
NUM_IMAGES = NUM_SHARDS * PER_SHARD


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> str:
    """4 parquet shards of 24 noise PNGs of varied size; label = global image id."""
    root = tmp_path_factory.mktemp("parquet")
    rng = np.random.default_rng(0)
    for shard in range(NUM_SHARDS):
        ids = list(range(shard * PER_SHARD, (shard + 1) * PER_SHARD))
        images = [{"bytes": png_bytes(noise_image(rng, int(rng.integers(36, 64)), int(rng.integers(32, 48)))), "path": None} for _ in ids]
        write_parquet(str(root / f"train-{shard:05d}-of-{NUM_SHARDS:05d}.parquet"), images, ids)
    return str(root)


def colour_of(image_id: int) -> tuple[int, int, int]:
    return (8 * image_id, 250 - 8 * image_id, 60)


@pytest.fixture(scope="module")
def imagefolder_dir(tmp_path_factory) -> str:
    """2 class folders x 12 solid-colour images; the red level encodes the image id (8 * id)."""
    root = tmp_path_factory.mktemp("imagefolder")
    for image_id in range(24):
        folder = root / ("cat" if image_id < 12 else "dog")
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (48, 40), colour_of(image_id)).save(folder / f"{image_id:03d}.png")
    return str(root)


def ids_from_colour(pixels: list[torch.Tensor]) -> list[int]:
    levels = unnormalize(torch.cat(pixels))[:, 0].mean(dim=(1, 2))  # (N,) red level
    return [int(round(v / 8.0)) for v in levels.tolist()]


# Bad-record shards: (kind, id). Good ones must arrive, bad ones be counted.
GOOD_KINDS = ("rgb", "cmyk", "palette_transparent", "i16", "rgba_half", "palette")
BAD_KINDS = ("garbage", "truncated", "none", "tiny", "missing_file")


def planted_value(kind: str, rng: np.random.Generator):
    if kind == "rgb":
        return {"bytes": jpeg_bytes(noise_image(rng, 64, 48)), "path": None}
    if kind == "cmyk":
        return {"bytes": jpeg_bytes(Image.new("CMYK", (40, 40), (0, 0, 0, 0))), "path": None}
    if kind == "palette_transparent":
        image = Image.new("P", (40, 40), 0)
        image.putpalette([10, 20, 30] * 256)
        buf = io.BytesIO()
        image.save(buf, format="PNG", transparency=0)
        return {"bytes": buf.getvalue(), "path": None}
    if kind == "palette":
        image = Image.new("P", (40, 40), 0)
        image.putpalette([10, 20, 30] * 256)
        return {"bytes": png_bytes(image), "path": None}
    if kind == "i16":
        return {"bytes": png_bytes(Image.fromarray(np.full((40, 40), 257 * 200, dtype=np.uint16))), "path": None}
    if kind == "rgba_half":
        return {"bytes": png_bytes(Image.new("RGBA", (40, 40), (0, 0, 0, 128))), "path": None}
    if kind == "garbage":
        return {"bytes": np.random.default_rng(1).bytes(600), "path": None}
    if kind == "truncated":
        full = jpeg_bytes(noise_image(rng, 64, 48))
        return {"bytes": full[: len(full) // 2], "path": None}
    if kind == "none":
        return None
    if kind == "tiny":
        return {"bytes": png_bytes(Image.new("RGB", (2, 2), (1, 2, 3))), "path": None}
    if kind == "missing_file":
        return {"bytes": None, "path": "/nonexistent/cjepa/missing.jpg"}
    raise AssertionError(kind)


# Bad records at the start, in the middle and at the END of a shard (that count must ride
# on the last good example).
BAD_SHARDS = [
    ["garbage", "rgb", "cmyk", "truncated", "none", "palette_transparent", "tiny"],
    ["i16", "missing_file", "rgb", "rgba_half", "palette", "truncated"],
]
NUM_BAD = sum(kind in BAD_KINDS for shard in BAD_SHARDS for kind in shard)


@pytest.fixture(scope="module")
def bad_records_dir(tmp_path_factory) -> tuple[str, dict[int, str]]:
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(2)
    kinds: dict[int, str] = {}
    next_id = 0
    for shard, shard_kinds in enumerate(BAD_SHARDS):
        ids = list(range(next_id, next_id + len(shard_kinds)))
        next_id += len(shard_kinds)
        kinds.update(zip(ids, shard_kinds))
        write_parquet(str(root / f"train-{shard:05d}.parquet"), [planted_value(k, rng) for k in shard_kinds], ids)
    return str(root), kinds


# ----------------------------------------------------------------------------- transforms
def test_pretrain_transform_shape_dtype_and_normalisation_of_a_constant_image():
    transform = data.PretrainTransform(IMAGE_SIZE)
    value = (200, 30, 120)
    out = transform(Image.new("RGB", (50, 37), value), torch.Generator().manual_seed(0))
    assert out.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and out.dtype == torch.float32 and out.is_contiguous()
    expected = (torch.tensor(value, dtype=torch.float32).view(3, 1, 1) / 255.0 - MEAN) / STD
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=0)


def test_eval_transform_is_deterministic_and_normalises():
    transform = data.EvalTransform(224)
    assert transform.resize_to == 256
    rng = np.random.default_rng(3)
    image = noise_image(rng, 500, 375)
    a, b = transform(image), transform(image, torch.Generator().manual_seed(5))
    assert a.shape == (3, 224, 224)
    assert torch.equal(a, b)
    flat = transform(Image.new("RGB", (500, 375), (0, 255, 128)))
    expected = (torch.tensor([0.0, 255.0, 128.0]).view(3, 1, 1) / 255.0 - MEAN) / STD
    torch.testing.assert_close(flat, expected.expand_as(flat), atol=1e-5, rtol=0)


def test_eval_transform_geometry_resize_shorter_side_then_centre_crop():
    # A 400x300 image whose left half is black and right half white: resized to 341x256,
    # centre-cropped to 224 -> the black/white edge stays in the middle column.
    array = np.zeros((300, 400, 3), dtype=np.uint8)
    array[:, 200:] = 255
    out = unnormalize(data.EvalTransform(224, interpolation="bilinear")(Image.fromarray(array)))
    assert out[:, :, :100].max() < 1.0 and out[:, :, 124:].min() > 254.0


def test_random_resized_crop_area_and_aspect_distribution():
    generator = torch.Generator().manual_seed(0)
    width, height = 500, 375
    fractions, aspects = [], []
    for _ in range(3000):
        left, top, w, h = data.random_resized_crop_params(width, height, (0.3, 1.0), (3 / 4, 4 / 3), generator)
        assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
        fractions.append(w * h / (width * height))
        aspects.append(w / h)
    fractions, aspects = np.array(fractions), np.array(aspects)
    # Rounding of w and h moves the area by < 1 %.
    assert fractions.min() > 0.3 * 0.99 and fractions.max() <= 1.0
    assert fractions.min() < 0.32 and fractions.max() > 0.95  # the whole range is used
    assert 0.55 < fractions.mean() < 0.68  # uniform(0.3, 1) is 0.65; boxes that do not fit are redrawn
    assert aspects.min() > 0.74 and aspects.max() < 1.345
    # On a square image the log-uniform aspect is symmetric: half the boxes are wider than tall.
    square = [data.random_resized_crop_params(400, 400, generator=generator) for _ in range(3000)]
    wide = np.mean([w > h for _, _, w, h in square])
    tall = np.mean([w < h for _, _, w, h in square])
    assert abs(wide - tall) < 0.05 and wide > 0.4


def test_random_resized_crop_falls_back_to_a_centre_crop():
    # 1000x10: no box of 30 %+ area with aspect ratio <= 4/3 fits, all 10 tries fail.
    left, top, w, h = data.random_resized_crop_params(1000, 10, generator=torch.Generator().manual_seed(0))
    assert (w, h) == (13, 10) and top == 0 and left == (1000 - 13) // 2


def test_random_resized_crop_is_deterministic_given_the_generator():
    transform = data.PretrainTransform(IMAGE_SIZE)
    image = noise_image(np.random.default_rng(4), 80, 60)
    a = transform(image, torch.Generator().manual_seed(7))
    b = transform(image, torch.Generator().manual_seed(7))
    c = transform(image, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    r1 = transform(image, random.Random(3))
    r2 = transform(image, random.Random(3))
    assert torch.equal(r1, r2)


def test_draft_decodes_big_jpegs_at_a_reduced_scale_that_keeps_the_smallest_crop_sharp():
    transform = data.PretrainTransform(224)
    # Smallest crop: area 0.3, aspect 3/4 -> width sqrt(0.3 * 0.75) = 0.474 of the side.
    assert transform.draft_size == math.ceil(224 / math.sqrt(0.3 * 0.75))
    big = jpeg_bytes(noise_image(np.random.default_rng(5), 2000, 1500))
    image = data.decode_image(big, draft_size=transform.draft_size)
    assert image.size == (1000, 750)  # DCT scale 1/2; 1/4 would give 375 < 473
    small = data.decode_image(jpeg_bytes(noise_image(np.random.default_rng(5), 500, 375)), draft_size=473)
    assert small.size == (500, 375)


# ----------------------------------------------------------------------------- to_rgb
def test_to_rgb_converts_every_mode():
    grey = data.to_rgb(Image.new("L", (4, 4), 77))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (77, 77, 77)

    i16 = Image.fromarray(np.array([[0, 257 * 100], [65535, 257 * 255]], dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    assert np.array_equal(np.asarray(data.to_rgb(i16))[..., 0], [[0, 100], [255, 255]])
    i32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    assert np.asarray(data.to_rgb(i32))[..., 0].tolist() == [[0, 255]]
    i32_8bit = Image.fromarray(np.array([[0, 200]], dtype=np.int32), mode="I")
    assert np.asarray(data.to_rgb(i32_8bit))[..., 0].tolist() == [[0, 200]]

    assert data.to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert data.to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 255))).getpixel((0, 0)) == (0, 0, 0)

    rgba = Image.new("RGBA", (2, 2), (200, 10, 10, 0))
    rgba.putpixel((1, 1), (200, 10, 10, 255))
    out = data.to_rgb(rgba)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (200, 10, 10)
    assert data.to_rgb(Image.new("LA", (2, 2), (0, 255))).getpixel((0, 0)) == (0, 0, 0)

    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([10, 20, 30, 40, 50, 60] + [0, 0, 0] * 254)
    assert data.to_rgb(palette).getpixel((0, 0)) == (40, 50, 60)
    palette.info["transparency"] = 1
    assert data.to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)
    assert data.to_rgb(Image.new("RGB", (2, 2), (1, 2, 3))).getpixel((0, 0)) == (1, 2, 3)


def test_pad_to_size_centres_on_the_fill_value():
    padded = data.pad_to_size(Image.new("L", (28, 28), 200), 32, fill=0)
    array = np.asarray(padded)
    assert padded.size == (32, 32)
    assert (array[2:30, 2:30] == 200).all() and array[:2].max() == 0 and array[:, 30:].max() == 0


# ----------------------------------------------------------------------------- streaming
def test_parquet_stream_through_two_workers_sees_every_example_once_and_reshuffles(parquet_dir):
    stream = data.build_pretrain_dataset(parquet_dir, image_size=IMAGE_SIZE, patch_size=PATCH, shuffle_buffer=16, seed=3)
    assert isinstance(stream, torch.utils.data.IterableDataset) and stream.num_shards == NUM_SHARDS
    epoch0, skipped, pixels = collect(stream, num_workers=2)
    assert sorted(epoch0) == list(range(NUM_IMAGES)) and skipped == 0
    assert all(p.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE) for p in pixels)

    stream.set_epoch(1)
    epoch1, _, _ = collect(stream, num_workers=2)
    assert sorted(epoch1) == list(range(NUM_IMAGES))
    assert epoch1 != epoch0

    # Same seed and epoch: the same order AND the same crops.
    stream.set_epoch(0)
    again, _, pixels_again = collect(stream, num_workers=2)
    assert again == epoch0
    assert all(torch.equal(a, b) for a, b in zip(pixels, pixels_again))

    # Persistent workers see set_epoch too (the epoch lives in shared memory).
    loader = torch.utils.data.DataLoader(stream, batch_size=8, num_workers=2, persistent_workers=True)
    orders = []
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        orders.append([label for batch in loader for label in batch["label"].tolist()])
    assert orders == [epoch0, epoch1]


def test_parquet_stream_split_over_two_ranks_is_a_partition(parquet_dir):
    seen = []
    for rank in range(2):
        stream = data.build_pretrain_dataset(
            parquet_dir + "/*.parquet",
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
            shuffle_buffer=16,
            seed=1,
            rank=rank,
            world_size=2,
        )
        assert stream.num_shards == NUM_SHARDS // 2
        labels, _, _ = collect(stream, num_workers=2 if rank == 0 else 0)
        assert len(labels) == NUM_IMAGES // 2
        seen.append(set(labels))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(NUM_IMAGES))


def _run_rank(parquet_dir: str, rank: int, world_size: int, out_path: str) -> None:
    """One training process: its own rank's stream, 2 DataLoader workers, 2 epochs."""
    stream = data.build_pretrain_dataset(
        parquet_dir,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        shuffle_buffer=16,
        seed=0,
        rank=rank,
        world_size=world_size,
    )
    loader = torch.utils.data.DataLoader(stream, batch_size=5, num_workers=2)
    out = {}
    for epoch in range(2):
        stream.set_epoch(epoch)
        out[epoch] = [label for batch in loader for label in batch["label"].tolist()]
    with open(out_path, "w") as f:
        json.dump(out, f)


def test_parquet_stream_in_two_real_processes(parquet_dir, tmp_path):
    # Two OS processes, one per rank, as torchrun would start them; forked rather than
    # spawned so that they do not pay the torch/datasets/transformers imports again (~5 s each).
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_run_rank, args=(parquet_dir, rank, 2, str(tmp_path / f"rank{rank}.json"))) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0, f"rank process exited with {proc.exitcode}"
    results = [json.load(open(tmp_path / f"rank{rank}.json")) for rank in range(2)]
    for epoch in ("0", "1"):
        r0, r1 = results[0][epoch], results[1][epoch]
        assert len(r0) == len(r1) == NUM_IMAGES // 2
        assert sorted(r0 + r1) == list(range(NUM_IMAGES))  # each image exactly once per epoch
    assert results[0]["0"] != results[0]["1"]  # reshuffled across epochs


def test_imagefolder_stream_labels_from_folders_and_exactly_once(imagefolder_dir):
    expected = {i: (0 if i < 12 else 1) for i in range(24)}
    for rank, world_size, num_workers in ((0, 1, 2), (0, 2, 0), (1, 2, 2)):
        stream = data.build_pretrain_dataset(
            imagefolder_dir,
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
            shuffle_buffer=8,
            rank=rank,
            world_size=world_size,
        )
        labels, skipped, pixels = collect(stream, num_workers=num_workers, batch_size=4)
        ids = ids_from_colour(pixels)
        assert skipped == 0
        assert len(ids) == len(set(ids)) == 24 // world_size
        assert all(expected[i] == label for i, label in zip(ids, labels))
        if world_size == 1:
            assert sorted(ids) == list(range(24))
        else:
            other = data.build_pretrain_dataset(
                imagefolder_dir,
                image_size=IMAGE_SIZE,
                patch_size=PATCH,
                shuffle_buffer=8,
                rank=1 - rank,
                world_size=2,
            )
            _, _, other_pixels = collect(other)
            assert sorted(ids + ids_from_colour(other_pixels)) == list(range(24))


def test_webdataset_tar_shards(tmp_path):
    rng = np.random.default_rng(6)
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard:04d}.tar", "w") as tar:
            for i in range(5):
                key = f"s{shard}_{i:03d}"
                for name, payload in (
                    (f"{key}.jpg", jpeg_bytes(noise_image(rng, 40, 40))),
                    (f"{key}.cls", str(shard * 5 + i).encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    stream = data.build_pretrain_dataset(str(tmp_path), image_size=IMAGE_SIZE, patch_size=PATCH)
    assert stream.image_column == "jpg" and stream.label_column == "cls"
    labels, skipped, _ = collect(stream, num_workers=2)
    assert sorted(labels) == list(range(10)) and skipped == 0


def test_hub_source_goes_to_load_dataset_streaming(monkeypatch, parquet_dir):
    calls = []
    real_load = datasets.load_dataset

    def fake_load_dataset(path, *args, **kwargs):
        if path == "parquet":
            return real_load(path, *args, **kwargs)
        calls.append((path, kwargs))
        return real_load("parquet", data_dir=parquet_dir, split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    stream = data.build_pretrain_dataset(
        data.DEFAULT_HUB_DATASET, image_size=IMAGE_SIZE, patch_size=PATCH, token="hf_dummy", shuffle_buffer=4
    )
    assert calls == [("ILSVRC/imagenet-1k", {"split": "train", "streaming": True, "token": "hf_dummy"})]
    assert next(iter(stream))["pixel_values"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)


def test_missing_local_path_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.build_pretrain_dataset(str(tmp_path / "nope" / "*.parquet"), image_size=IMAGE_SIZE, patch_size=PATCH)
    with pytest.raises(FileNotFoundError):
        data.build_pretrain_dataset("./no/such/folder", image_size=IMAGE_SIZE, patch_size=PATCH)


# ----------------------------------------------------------------------------- bad records
def _good_ids(kinds: dict[int, str]) -> list[int]:
    return sorted(i for i, k in kinds.items() if k in GOOD_KINDS)


def test_bad_records_are_skipped_counted_and_good_odd_modes_delivered(bad_records_dir, caplog):
    root, kinds = bad_records_dir
    data.BAD_RECORDS.reset()
    stream = data.build_pretrain_dataset(root, image_size=IMAGE_SIZE, patch_size=PATCH, train=False)
    with caplog.at_level(logging.WARNING, logger="cjepa_hf.data"):
        examples = list(stream)
    labels = [e["label"] for e in examples]
    assert sorted(labels) == _good_ids(kinds)
    assert sum(e["num_skipped"] for e in examples) == NUM_BAD
    # Not shuffled (train=False), one stream over both shards: the count rides on the next
    # good example, and the bad records at the very end on the last good example.
    by_id = {e["label"]: e for e in examples}
    skipped_before, pending, last_good = {}, 0, None
    for image_id, kind in enumerate(kind for shard in BAD_SHARDS for kind in shard):
        if kind in BAD_KINDS:
            pending += 1
        else:
            skipped_before[image_id], pending, last_good = pending, 0, image_id
    skipped_before[last_good] += pending
    assert [e["label"] for e in examples] == sorted(skipped_before)  # stream order
    assert {i: e["num_skipped"] for i, e in by_id.items()} == skipped_before

    assert data.BAD_RECORDS.count == NUM_BAD
    assert data.BAD_RECORDS.by_reason == {
        "undecodable": 1,
        "truncated": 2,
        "missing": 1,
        "too_small": 1,
        "missing_file": 1,
    }
    assert any("bad records skipped so far" in r.getMessage() for r in caplog.records)

    # The odd modes arrive converted to RGB with the right values.
    def rgb(image_id: int) -> torch.Tensor:
        return unnormalize(by_id[image_id]["pixel_values"]).mean(dim=(1, 2))

    ids = {k: i for i, k in kinds.items()}
    torch.testing.assert_close(rgb(ids["i16"]), torch.full((3,), 200.0), atol=0.05, rtol=0)
    torch.testing.assert_close(rgb(ids["palette_transparent"]), torch.full((3,), 255.0), atol=0.05, rtol=0)
    torch.testing.assert_close(rgb(ids["palette"]), torch.tensor([10.0, 20.0, 30.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(rgb(ids["rgba_half"]), torch.full((3,), 127.0), atol=0.55, rtol=0)
    torch.testing.assert_close(rgb(ids["cmyk"]), torch.full((3,), 255.0), atol=2.0, rtol=0)


def test_bad_records_counted_through_dataloader_workers(bad_records_dir):
    root, kinds = bad_records_dir
    for epoch in range(2):
        stream = data.build_pretrain_dataset(root, image_size=IMAGE_SIZE, patch_size=PATCH, shuffle_buffer=4)
        stream.set_epoch(epoch)
        labels, skipped, _ = collect(stream, num_workers=2, batch_size=3)
        assert sorted(labels) == _good_ids(kinds)
        assert skipped == NUM_BAD


def test_a_source_that_is_all_bad_raises_instead_of_spinning(tmp_path):
    write_parquet(str(tmp_path / "bad.parquet"), [None] * 6, list(range(6)))
    stream = data.build_pretrain_dataset(str(tmp_path), image_size=IMAGE_SIZE, patch_size=PATCH, max_consecutive_bad=5, train=False)
    with pytest.raises(RuntimeError, match="5 consecutive bad records"):
        list(stream)


# ----------------------------------------------------------------------------- Fashion-MNIST
@has_fmnist
def test_fashion_mnist_loader():
    train = data.load_fashion_mnist("train")
    test = data.load_fashion_mnist("test")
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.features["label"].names == list(data.FASHION_MNIST_CLASSES)
    assert isinstance(train.features["image"], datasets.Image)
    first = train[0]
    assert first["label"] == 9 and train.features["label"].int2str(9) == "Ankle boot"
    assert first["image"].size == (28, 28) and first["image"].mode == "L"
    with gzip.open(os.path.join(FMNIST_ROOT, "train-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)[: 28 * 28].reshape(28, 28)
    assert np.array_equal(np.asarray(first["image"]), raw)
    for split in (train, test):
        labels = np.asarray(split["label"])
        assert labels.min() == 0 and labels.max() == 9
        assert np.array_equal(np.bincount(labels), np.full(10, len(split) // 10))  # balanced classes


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("train", root=str(tmp_path))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(8)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(8)))
    with pytest.raises(ValueError, match="magic"):
        data.load_fashion_mnist("test", root=str(tmp_path))


@has_fmnist
def test_fashion_mnist_pads_28_to_32_for_evaluation_and_streams_for_training():
    stream = data.build_pretrain_dataset("fashion_mnist", image_size=32, patch_size=4, split="test", train=False)
    first = next(iter(stream))
    with gzip.open(os.path.join(FMNIST_ROOT, "t10k-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)[: 28 * 28].reshape(28, 28)
    with gzip.open(os.path.join(FMNIST_ROOT, "t10k-labels-idx1-ubyte.gz")) as f:
        raw_label = f.read()[8]
    assert first["label"] == raw_label
    pixels = unnormalize(first["pixel_values"])  # (3, 32, 32), 0..255
    assert pixels.shape == (3, 32, 32)
    torch.testing.assert_close(pixels[:, 2:30, 2:30], torch.tensor(raw, dtype=torch.float32).expand(3, 28, 28), atol=1e-3, rtol=0)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert pixels[:, border].abs().max() < 1e-3  # 2-pixel border of the black background

    # A folder of IDX files is recognised as Fashion-MNIST too (and padded the same way).
    from_folder = data.build_pretrain_dataset(FMNIST_ROOT, image_size=32, patch_size=4, split="test", train=False)
    assert torch.equal(next(iter(from_folder))["pixel_values"], first["pixel_values"])

    train = data.build_pretrain_dataset(
        "fashion_mnist", image_size=32, patch_size=4, split="test", shuffle_buffer=256, seed=0, rank=1, world_size=2
    )
    assert train.num_shards == 32
    labels, skipped, pixels = collect(train.shard(num_shards=8, index=0), num_workers=2, batch_size=64)
    # shards 0..7 of 64 (157 rows each), half of them on rank 1
    assert 4 * 156 <= len(labels) <= 4 * 157 and skipped == 0
    assert pixels[0].shape[1:] == (3, 32, 32)


def test_stream_feeds_the_mask_collator_and_the_skip_count_survives_collation(bad_records_dir, tiny_config):
    root, kinds = bad_records_dir
    stream = data.build_pretrain_dataset(root, image_size=tiny_config.image_size, patch_size=tiny_config.patch_size, shuffle_buffer=4)
    loader = torch.utils.data.DataLoader(stream, batch_size=2, collate_fn=MaskCollator(tiny_config), num_workers=2)
    batches = list(loader)
    assert sum(int(b["num_skipped"]) for b in batches) == NUM_BAD  # the 2x2 image is below patch 4 too
    assert sorted(int(label) for b in batches for label in b["labels"]) == _good_ids(kinds)
    first = batches[0]
    assert first["pixel_values"].shape[1:] == (3, tiny_config.image_size, tiny_config.image_size)
    assert first["context_indices"].dtype == torch.long and first["target_indices"].ndim == 3


def test_arrow_save_to_disk_folders_and_split_files(tmp_path):
    rng = np.random.default_rng(7)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    images = [noise_image(rng, 40, 36) for _ in range(6)]
    train = datasets.Dataset.from_dict({"image": images, "label": list(range(6))}, features=features)
    train.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    saved = data.build_pretrain_dataset(str(tmp_path / "saved"), image_size=IMAGE_SIZE, patch_size=PATCH)
    assert sorted(e["label"] for e in saved) == list(range(6))

    folder = tmp_path / "splits"
    folder.mkdir()
    write_parquet(str(folder / "train-00000-of-00001.parquet"), images[:4], [0, 1, 2, 3])
    write_parquet(str(folder / "validation-00000-of-00001.parquet"), images[4:], [4, 5])
    for split, expected in (("train", [0, 1, 2, 3]), ("validation", [4, 5])):
        stream = data.build_pretrain_dataset(str(folder), image_size=IMAGE_SIZE, patch_size=PATCH, split=split)
        assert sorted(e["label"] for e in stream) == expected
    with pytest.raises(ValueError, match="no .parquet file for split 'test'"):
        data.build_pretrain_dataset(str(folder), image_size=IMAGE_SIZE, patch_size=PATCH, split="test")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_at_continues_an_epoch_without_repeats_or_losses(bad_records_dir, tiny_config, num_workers):
    """Records per worker counted as CJEPATrainer counts them (batch size + num_skipped,
    to the batch's data_worker); a fresh stream resumed there delivers exactly the rest of
    the epoch, and with one reader the very same examples, crops included."""
    root, kinds = bad_records_dir

    def stream():
        s = data.build_pretrain_dataset(
            root, image_size=tiny_config.image_size, patch_size=tiny_config.patch_size, shuffle_buffer=4, seed=5
        )
        s.set_epoch(1)
        return s

    def loader(s):
        return torch.utils.data.DataLoader(s, batch_size=2, collate_fn=MaskCollator(tiny_config), num_workers=num_workers)

    full = list(loader(stream()))
    assert sum(int(b["num_skipped"]) for b in full) == NUM_BAD
    taken = 3
    records = [0] * max(num_workers, 1)
    for batch in full[:taken]:
        records[int(batch["data_worker"])] += len(batch["labels"]) + int(batch["num_skipped"])
    resumed_stream = stream()
    resumed_stream.resume_at(1, records)
    rest = list(loader(resumed_stream))
    seen = [int(x) for b in full[:taken] + rest for x in b["labels"]]
    assert sorted(seen) == _good_ids(kinds)  # nothing repeated, nothing lost
    assert sum(int(b["num_skipped"]) for b in full[:taken] + rest) == NUM_BAD
    if num_workers == 0:
        assert [b["labels"].tolist() for b in rest] == [b["labels"].tolist() for b in full[taken:]]
        assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(rest, full[taken:]))
    # The skip applies to the resumed epoch only; a wrong worker count is an error.
    resumed_stream.set_epoch(2)
    assert resumed_stream._resume is None
    with pytest.raises(ValueError, match="one count >= 0 per DataLoader worker"):
        resumed_stream.resume_at(1, [])
    if num_workers == 2:
        wrong = stream()
        wrong.resume_at(1, [1, 1, 1])
        with pytest.raises(ValueError, match="for 3 DataLoader worker"):
            list(loader(wrong))


# ----------------------------------------------------------------------------- huge images
def _blank_png(width: int, height: int, color_type: int = 6) -> bytes:
    """A complete, valid PNG of `width` x `height` zero pixels (RGBA for colour type 6),
    written without ever holding the pixels: rows of zeros are compressed as a stream, so
    a 169 MP RGBA image is ~3 MB of bytes and well under a second to build."""
    import struct
    import zlib

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)

    bands = {0: 1, 2: 3, 6: 4}[color_type]
    row = bytes(1 + bands * width)  # filter byte 0, then the zero pixels
    compressor = zlib.compressobj(1)
    rows_per_piece = max(1, (8 << 20) // len(row))
    parts = []
    for start in range(0, height, rows_per_piece):
        parts.append(compressor.compress(row * min(rows_per_piece, height - start)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _peak_rss_growth_mb(fn) -> float:
    """Run `fn()` in a forked child; return how much the child's peak RSS grew, in MB.
    (The child starts with the parent's pages, so its peak before `fn` is the parent's size
    now; PIL allocates outside Python's allocator, which tracemalloc would not see.)"""
    import resource

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no torch, only PIL and the header check
        status = 1
        try:
            os.close(read)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            fn()
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            os.write(write, str((after - before) / 1024).encode())  # ru_maxrss is in KB on Linux
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and text, "the child process failed"
    return float(text)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + ru_maxrss in KB: Linux")
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns above 89 MP; we refuse at 64
def test_huge_image_is_a_bad_record_refused_on_its_header_in_little_time_and_memory():
    import time

    big = _blank_png(13_000, 13_000)  # 169 MP RGBA: under PIL's bomb limit (~179 MP), 676 MB decoded
    assert len(big) < 4_000_000 and data.DEFAULT_MAX_IMAGE_PIXELS < 13_000 * 13_000 < 2 * Image.MAX_IMAGE_PIXELS
    outcome = {}

    def decode() -> None:
        try:
            data.decode_image(big)
        except data.BadRecord as error:
            outcome["error"] = error

    start = time.perf_counter()
    decode()
    elapsed = time.perf_counter() - start
    error = outcome["error"]
    assert error.reason == "too_large"
    assert "13000x13000" in error.detail and f"max_image_pixels={data.DEFAULT_MAX_IMAGE_PIXELS}" in error.detail
    assert elapsed < 0.5, f"refusing a huge image took {elapsed:.2f} s: it was decoded"
    growth = _peak_rss_growth_mb(decode)
    assert growth < 64, f"peak RSS grew by {growth:.0f} MB while refusing a huge image"

    # The cap is on what would be decoded: the same header under a higher cap gets decoded.
    small = _blank_png(600, 500, color_type=0)
    assert data.decode_image(small, max_image_pixels=300_000).size == (600, 500)
    with pytest.raises(data.BadRecord, match=r"600x500 image .*max_image_pixels=299999"):
        data.decode_image(small, max_image_pixels=299_999)
    assert data.decode_image(small, max_image_pixels=None).size == (600, 500)
    with pytest.raises(ValueError, match="max_image_pixels must be a positive number of pixels or None, got 0"):
        data.decode_image(small, max_image_pixels=0)


def test_max_image_pixels_applies_after_jpeg_draft_scaling():
    big = jpeg_bytes(noise_image(np.random.default_rng(5), 2000, 1500))  # 3 MP, drafted to 1000 x 750
    assert data.decode_image(big, draft_size=473, max_image_pixels=1000 * 750).size == (1000, 750)
    with pytest.raises(data.BadRecord, match="2000x1500"):
        data.decode_image(big, max_image_pixels=1000 * 750)  # no draft: decoded at full size


def test_too_large_records_are_counted_as_bad_through_build_pretrain_dataset(tmp_path):
    images = [Image.new("RGB", (64, 64), (i, i, i)) for i in range(4)] + [Image.new("RGB", (128, 128))] * 2
    write_parquet(str(tmp_path / "mixed.parquet"), [png_bytes(im) for im in images], list(range(6)))
    data.BAD_RECORDS.reset()
    stream = data.build_pretrain_dataset(str(tmp_path), image_size=IMAGE_SIZE, patch_size=PATCH, train=False, max_image_pixels=64 * 64)
    examples = list(stream)
    assert sorted(e["label"] for e in examples) == [0, 1, 2, 3]
    assert sum(e["num_skipped"] for e in examples) == 2
    assert data.BAD_RECORDS.by_reason == {"too_large": 2}
    default = data.build_pretrain_dataset(str(tmp_path), image_size=IMAGE_SIZE, patch_size=PATCH, train=False)
    assert default.decode_transform.max_image_pixels == data.DEFAULT_MAX_IMAGE_PIXELS == 64_000_000


def test_fashion_mnist_location_comes_from_the_environment(tmp_path, monkeypatch):
    import shutil

    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(os.path.join(FMNIST_ROOT, name), tmp_path / name)
    monkeypatch.setenv("CJEPA_FASHION_MNIST_DIR", str(tmp_path))
    assert data.fashion_mnist_root() == str(tmp_path)
    assert len(data.load_fashion_mnist("test")) == 10_000
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        data.load_fashion_mnist("train")  # only the test files were copied: the variable is really used
    monkeypatch.delenv("CJEPA_FASHION_MNIST_DIR")
    assert data.fashion_mnist_root() == "/usr/share/datasets/fashion-mnist"


def test_one_fashion_mnist_test_and_one_padding_rule(tmp_path):
    """`is_fashion_mnist` is the one test, for pretraining sources and evaluation dataset
    names; `auto_pad_to` the one padding rule built on it (28 -> image_size when that adds at
    most one patch a side)."""
    for name in ("fashion_mnist", "fashion-mnist", "Fashion_MNIST", data.FASHION_MNIST_HUB_ID):
        assert data.is_fashion_mnist(name) and data.fashion_mnist_dir(name) == data.fashion_mnist_root()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    assert data.is_fashion_mnist(str(tmp_path)) and data.fashion_mnist_dir(str(tmp_path)) == str(tmp_path)
    for other in (None, "mnist", "ILSVRC/imagenet-1k", str(tmp_path / "missing")):
        assert not data.is_fashion_mnist(other) and data.auto_pad_to(other, 32, 4) is None
    assert data.auto_pad_to("fashion_mnist", 32, 4) == 32 and data.auto_pad_to(str(tmp_path), 36, 4) == 36
    assert data.auto_pad_to("fashion_mnist", 64, 4) is None and data.auto_pad_to("fashion_mnist", 24, 4) is None
    assert data.crop_pct_for_padding(32, 32, 0.875) == 1.0 and data.crop_pct_for_padding(32, None, 0.875) == 0.875


def test_normalisation_constants_match_the_model_image_processor(tiny_config):
    from cjepa_hf import build_image_processor

    processor = build_image_processor(tiny_config)
    assert tuple(processor.image_mean) == data.IMAGENET_MEAN and tuple(processor.image_std) == data.IMAGENET_STD


def test_a_map_style_source_keeps_its_size_when_streamed():
    stream = data.build_pretrain_dataset("fashion_mnist", image_size=32, patch_size=4)
    assert stream.dataset.info.splits["train"].num_examples == 60_000  # the start-up summary counts epochs with it
