"""Throughput of the input pipeline: mask sampling and image decoding + augmentation.

    python scripts/benchmark_data.py --output outputs/benchmark_data.json
    python scripts/benchmark_data.py --image-dir /path/to/jpegs --output bench.json

Figures (all single-threaded, `torch.set_num_threads(1)`, as in one DataLoader worker):
  mask_samples_per_s                 multi-block masks at 224 px / patch 16 (196 patches), batch 256,
                                     `MaskCollator(CJEPAConfig()).masks_for` (samples, not batches)
  collate_samples_per_s              the whole `MaskCollator.__call__` (stack 256 images + masks)
  pipeline_images_per_s_per_worker   `build_pretrain_dataset(<folder>)` iterated in one process:
                                     file read, JPEG decode, to_rgb, RandomResizedCrop to 224,
                                     normalise, bad-record bookkeeping (the work of one worker)
  transform_images_per_s             the same on JPEG bytes already in memory (no datasets, no I/O)
  decode_images_per_s                JPEG decode only
  large_jpeg_images_per_s_draft      2048x1536 JPEGs, with / without JPEG draft (DCT-domain
  large_jpeg_images_per_s_no_draft   downscaling) before the crop
The synthetic images are 500x375 JPEGs of ~100 KB (ImageNet's are typically 500x375, ~110 KB
on average) with smooth colour fields, edges and grain, so that their file size and decode
cost resemble photos'.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, features

from .. import data
from ..configuration_cjepa import CJEPAConfig
from ..masking import MaskCollator
from .report import write_json


def photo_like(rng: np.random.Generator, width: int = 500, height: int = 375) -> Image.Image:
    """A JPEG-friendly 'photo': low-frequency colour field + mid-frequency detail + shapes + grain."""

    def field(h: int, w: int) -> np.ndarray:
        small = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)

    array = 0.65 * field(4, 5) + 0.35 * field(int(rng.integers(20, 60)), int(rng.integers(30, 80)))
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 15))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    grain = rng.normal(0, 9, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8))


def write_images(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:04d}.jpg"
        photo_like(rng, *size).save(path, format="JPEG", quality=95)
        paths.append(path)
    return paths


def timed(fn, min_seconds: float, min_repeats: int = 1) -> tuple[float, int]:
    """Seconds per call (calls repeated until min_seconds), number of calls."""
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= min_repeats:
            return elapsed / calls, calls


def bench_masks(batch_size: int, min_seconds: float) -> dict:
    config = CJEPAConfig()  # 224 px, patch 16, 4 target blocks, paper scales
    collator = MaskCollator(config)
    position = iter(range(10**9))
    per_batch, calls = timed(lambda: collator.masks_for(next(position), batch_size), min_seconds)
    examples = [{"pixel_values": torch.zeros(3, 224, 224), "label": 0, "num_skipped": 0} for _ in range(batch_size)]
    per_collate, collate_calls = timed(lambda: collator(examples), min_seconds / 2)
    return {
        "mask_batch_size": batch_size,
        "mask_ms_per_batch": per_batch * 1e3,
        "mask_samples_per_s": batch_size / per_batch,
        "mask_batches_timed": calls,
        "collate_ms_per_batch": per_collate * 1e3,
        "collate_samples_per_s": batch_size / per_collate,
    }


def bench_pipeline(image_dir: Path, min_seconds: float) -> dict:
    files = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no .jpg/.jpeg files under {image_dir}")
    blobs = [p.read_bytes() for p in files]
    sizes = [Image.open(io.BytesIO(b)).size for b in blobs[:50]]

    stream = data.build_pretrain_dataset(
        str(image_dir), image_size=224, patch_size=16, shuffle_buffer=1000, seed=0, max_consecutive_bad=None
    )

    def one_pass() -> int:
        return sum(1 for _ in stream)

    per_pass, passes = timed(one_pass, min_seconds)
    images_per_pass = one_pass()

    transform = data.DecodeTransform(data.PretrainTransform(224), min_size=16)
    generator = torch.Generator().manual_seed(0)
    per_transform, _ = timed(lambda: [transform(b, generator) for b in blobs], min_seconds)

    def decode_all() -> None:
        for b in blobs:
            Image.open(io.BytesIO(b)).load()

    per_decode, _ = timed(decode_all, min_seconds / 2)

    rng = np.random.default_rng(1)
    large = []
    for _ in range(8):
        buf = io.BytesIO()
        photo_like(rng, 2048, 1536).save(buf, format="JPEG", quality=90)
        large.append(buf.getvalue())
    no_draft = data.DecodeTransform(_NoDraft(data.PretrainTransform(224)), min_size=16)
    per_large_draft, _ = timed(lambda: [transform(b, generator) for b in large], min_seconds / 2)
    per_large_plain, _ = timed(lambda: [no_draft(b, generator) for b in large], min_seconds / 2)

    return {
        "pipeline_images_per_s_per_worker": images_per_pass / per_pass,
        "pipeline_passes_timed": passes,
        "transform_images_per_s": len(blobs) / per_transform,
        "decode_images_per_s": len(blobs) / per_decode,
        "large_jpeg_images_per_s_draft": len(large) / per_large_draft,
        "large_jpeg_images_per_s_no_draft": len(large) / per_large_plain,
        "num_images": len(blobs),
        "mean_jpeg_kb": float(np.mean([len(b) for b in blobs]) / 1024),
        "typical_size": f"{sizes[0][0]}x{sizes[0][1]}",
    }


def write_path_source(images: list[Path], folder: Path, rows: int, num_shards: int = 64) -> Path:
    """A parquet source of `rows` records in `num_shards` files whose image column references
    `images` (cycled) by path: a stream as long as the timing needs at no disk cost, in as many
    shards as a DataLoader has workers to share (ImageNet on the Hub is parquet too; there the
    JPEG bytes sit in the rows instead). Returns the folder, for `build_pretrain_dataset`."""
    import datasets
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"image": datasets.Image(decode=False)})
    for shard in range(num_shards):
        records = [{"path": str(images[i % len(images)]), "bytes": None} for i in range(shard, rows, num_shards)]
        table = datasets.Dataset.from_dict({"image": records}, features=features).data.table  # schema holds the features
        pq.write_table(table, folder / f"train-{shard:05d}-of-{num_shards:05d}.parquet")
    return folder


def loader_throughput(
    source: Path,
    config: CJEPAConfig,
    batch_size: int,
    num_workers: int,
    device: torch.device | str = "cpu",
    min_seconds: float = 10.0,
    warmup_batches: int = 2,
    min_batches: int = 4,
    shuffle_buffer: int = 1000,
) -> dict:
    """Images per second the trainer's input pipeline delivers with `num_workers` DataLoader workers.

    The pipeline is training's own: `build_pretrain_dataset(source)` (a folder of images or a
    source from `write_path_source`; in the workers: file read, JPEG decode
    with draft, to_rgb, RandomResizedCrop to config.image_size, normalise, in the workers),
    batched by `CJEPATrainer.get_train_dataloader()` (the stream's DataLoader: `MaskCollator`
    samples the multi-block masks in the workers, pinned memory on CUDA), and each batch copied to
    `device` (non_blocking). The clock starts after `warmup_batches` batches (worker start-up) and
    stops once `min_seconds` have passed (and at least `min_batches` batches) or the stream ends.
    The main process does nothing else: in training it also drives the GPU step."""
    from ..modeling_cjepa import CJEPAForPreTraining
    from ..training import CJEPATrainer, CJEPATrainingArguments

    device = torch.device(device)
    stream = data.build_pretrain_dataset(
        str(source),
        image_size=config.image_size,
        patch_size=config.patch_size,
        shuffle_buffer=shuffle_buffer,
        seed=0,
        max_consecutive_bad=None,
    )
    # The trainer only lends its DataLoader: a tiny model of the same image grid.
    tiny = CJEPAConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        predictor_hidden_size=32,
        predictor_num_hidden_layers=1,
        predictor_num_attention_heads=4,
        projector_dims=(32, 32),
    )
    with tempfile.TemporaryDirectory(prefix="cjepa-bench-loader-") as tmp:
        args = CJEPATrainingArguments(
            output_dir=tmp,
            use_cpu=device.type == "cpu",
            report_to="none",
            max_steps=1,
            per_device_train_batch_size=batch_size,
            dataloader_num_workers=num_workers,
            online_probe=False,
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = CJEPATrainer(model=CJEPAForPreTraining(tiny), args=args, train_dataset=stream, data_collator=MaskCollator(config, seed=0))
        loader = trainer.get_train_dataloader()
        pinned = bool(loader.pin_memory)
        images, batches, start, elapsed = 0, 0, None, 0.0
        setup_start = time.perf_counter()
        first_batch_s = None
        for batch in loader:
            on_device = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            del on_device
            batches += 1
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - setup_start
            if batches == warmup_batches:
                start = time.perf_counter()
            elif start is not None:
                images += batch["pixel_values"].shape[0]
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds and batches - warmup_batches >= min_batches:
                    break
        del loader, trainer
    if start is None or images == 0:
        raise RuntimeError(
            f"the stream of {source} gave {batches} batch(es) of {batch_size}: too few to time after {warmup_batches} "
            "warm-up batches; give it more images"
        )
    rate = images / elapsed
    return {
        "images_per_s": rate,
        "images_per_s_per_worker": rate / max(num_workers, 1),
        "num_workers": num_workers,
        "batch_size": batch_size,
        "image_size": config.image_size,
        "batches_timed": batches - warmup_batches,
        "seconds_timed": elapsed,
        "first_batch_s": first_batch_s,
        "stream_exhausted": elapsed < min_seconds,
        "pin_memory": pinned,
        "device": str(device),
        "num_shards": stream.num_shards,
        "pipeline": "build_pretrain_dataset(source) -> CJEPATrainer.get_train_dataloader() (decoding and MaskCollator in the "
        "workers) -> .to(device, non_blocking=True)",
    }


def gpu_decode_throughput(blobs: list[bytes], device: torch.device | str, repeats: int = 5) -> dict:
    """JPEG decoding on the GPU (`torchvision.io.decode_jpeg(..., device=device)`, batched): images
    per second, decode only (no crop, resize or normalisation). Raises ImportError without
    torchvision and RuntimeError without CUDA."""
    from torchvision.io import decode_jpeg

    device = torch.device(device)
    if device.type != "cuda":
        raise RuntimeError(f"GPU JPEG decoding needs a CUDA device, got {device}")
    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    decode_jpeg(encoded, device=device)  # warm-up: nvJPEG handles
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        decode_jpeg(encoded, device=device)
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {
        "images_per_s": repeats * len(encoded) / elapsed,
        "images_per_batch": len(encoded),
        "what": "torchvision.io.decode_jpeg on the GPU, one batched call per repeat, decode only",
    }


class _NoDraft:
    """The same transform without a draft size (full-resolution JPEG decode)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    draft_size = None

    def __call__(self, image, generator=None):
        return self.transform(image, generator)


def environment() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import datasets
    import PIL

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "datasets": datasets.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="JSON file for the figures")
    parser.add_argument("--image-dir", default=None, help="folder of JPEGs (default: ~200 synthetic ones in a temp dir)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256, help="mask sampling batch size")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time each figure for at least this long")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
    results.update(bench_masks(args.batch_size, args.min_seconds))
    with tempfile.TemporaryDirectory(prefix="cjepa-bench-") as tmp:
        image_dir = Path(args.image_dir) if args.image_dir else Path(tmp) / "images"
        if not args.image_dir:
            write_images(image_dir, args.num_images, (500, 375), seed=0)
        results.update(bench_pipeline(image_dir, args.min_seconds))
    results["environment"] = environment()

    rows = [(k, v) for k, v in results.items() if k not in ("environment", "command")]
    width = max(len(k) for k, _ in rows)
    print(f"{'figure':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value:,.1f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for key, value in results["environment"].items():
        print(f"{key:<{width}}  {value}")
    write_json(results, args.output)
    return results
