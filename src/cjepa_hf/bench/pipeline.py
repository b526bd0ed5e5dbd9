"""Throughput of the input pipeline, per stage and per core: what the GPU would see.

    python scripts/benchmark_data.py --output docs/benchmarks/data_pipeline.json
    python scripts/benchmark_data.py --photo-dir <folder of photos> --output bench.json
    python scripts/benchmark_data.py --image-dir /path/to/jpegs --output bench.json

Everything runs in one process on one thread (`torch.set_num_threads(1)`), as in one DataLoader
worker, and times the library's own code: `build_pretrain_dataset`, `DecodeTransform`,
`PretrainTransform`, `MaskCollator`.

Whole pipeline, per core (the headline), both paths in the same run, alternated:
  pipeline_images_per_s_per_core           the uint8 path (`build_pretrain_dataset(output="uint8")`,
                                           training's default): records from a parquet source naming
                                           the JPEGs (read from the page cache), decode, RandomResizedCrop
                                           to uint8 (C, 224, 224), `MaskCollator` (stack + masks) in
                                           batches of 256, pin (see `pin_mode`)
  pipeline_baseline_images_per_s_per_core  the float path (`output="float32"`: PIL box resize and
                                           normalisation in the worker, float32 batches), otherwise
                                           the same
  pipeline_speedup                         their ratio
  cores_for_5000_images_per_s, verdict_16_cores
                                           the cores the uint8 path needs for 5,000 images/s (the
                                           ViT-B/16 step's goal on one H100/H200), and whether the GPU
                                           machine's 16 cores (15 workers + the main process) feed it
  pin_mode                                 "pin_memory" with CUDA; without it pinning cannot run, and a
                                           copy of the batch into a new tensor (the copy that pinning
                                           does) stands in for it
Per stage, per image (`profile`, ms): decode (`decode_image`: open, JPEG draft rule, load),
to_rgb, crop box, resize (PIL box resize: the float path; torch's uint8 kernel: the uint8 path),
conversion to a tensor, normalisation, collate (per image of a batch of 256) and pin, for each
path; `decode_half_scale` is the JPEG decode at DCT scale 1/2 (PIL `draft`), to show what a
reduced-scale decode would save.

Image sets: `synthetic` (500x375 JPEGs of ~100 KB, quality 95, smooth colour fields, shapes and
grain, so that file size and decode cost resemble photos'), and with --photo-dir, `photos`: real
photographs re-encoded at ImageNet's common sizes (500x375, 375x500, 500x333, 500x500; quality 90,
4:2:0, baseline), `write_photo_set`. The headline keys come from the photos when given (the
synthetic set's are under `synthetic`), else from the synthetic set.

Also: mask_samples_per_s (multi-block masks at 224 px / patch 16, batch 256) and the large-JPEG
draft figures (2048x1536, with / without the header-based draft).
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
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

STEP_GOAL_IMAGES_PER_S = 5000  # ViT-B/16 at 224 px on one H100/H200, ~45% MFU (docs/PERFORMANCE.md)
GPU_MACHINE_CORES = 16
# ImageNet's commonest sizes (width, height): most of its photos are 500 px on the long side.
IMAGENET_SHAPES = ((500, 375), (375, 500), (500, 333), (500, 500))


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


def write_photo_set(photo_dir: Path, folder: Path, shapes=IMAGENET_SHAPES, quality: int = 90) -> list[Path]:
    """Every photo (.jpg/.jpeg/.png) under `photo_dir` at each of `shapes` (centre crop to the
    aspect ratio, Lanczos resize), saved as baseline 4:2:0 JPEGs of `quality` in `folder`.
    ImageNet's training JPEGs are mostly 500 px on the long side, quality ~90, ~110 KB."""
    sources = sorted(p for p in Path(photo_dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not sources:
        raise SystemExit(f"no .jpg/.jpeg/.png photos under {photo_dir}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sources:
        photo = data.to_rgb(Image.open(source))
        for width, height in shapes:
            w, h = photo.size
            scale = min(w / width, h / height)
            cw, ch = round(width * scale), round(height * scale)
            box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
            path = folder / f"{source.stem}_{width}x{height}.jpg"
            photo.resize((width, height), Image.Resampling.LANCZOS, box=box).save(
                path, format="JPEG", quality=quality, subsampling="4:2:0", progressive=False
            )
            paths.append(path)
    return paths


# Every figure is in CPU seconds of this process (all its threads), not wall-clock seconds: on a
# shared machine the other processes' load then does not count as the pipeline's time (it still
# costs caches and memory bandwidth, so a loaded machine reads somewhat slow). One CPU second is
# one core fully used: images per CPU second is images/s per core.
clock = time.process_time


def timed(fn, min_seconds: float, min_repeats: int = 1) -> tuple[float, int]:
    """CPU seconds per call (calls repeated until min_seconds of CPU time), number of calls."""
    fn()  # warm-up
    calls, start = 0, clock()
    while True:
        fn()
        calls += 1
        elapsed = clock() - start
        if elapsed >= min_seconds and calls >= min_repeats:
            return elapsed / calls, calls


def bench_masks(batch_size: int, min_seconds: float) -> dict:
    config = CJEPAConfig()  # 224 px, patch 16, 4 target blocks, paper scales
    collator = MaskCollator(config)
    position = iter(range(10**9))
    per_batch, calls = timed(lambda: collator.masks_for(next(position), batch_size), min_seconds)
    return {
        "mask_batch_size": batch_size,
        "mask_ms_per_batch": per_batch * 1e3,
        "mask_samples_per_s": batch_size / per_batch,
        "mask_batches_timed": calls,
    }


def pin(batch: dict, device: torch.device | None) -> tuple[dict, str]:
    """What the DataLoader's pin thread does to a batch: `pin_memory()` with CUDA; without it a
    copy into a new tensor of the same size stands in (the copy pinning does, not the
    page-locking). Returns the batch and the mode used."""
    if device is not None and device.type == "cuda":
        return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}, "pin_memory"
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}, "copy (no CUDA: pinning stand-in)"


def profile_stages(blobs: list[bytes], image_size: int, batch_size: int, min_seconds: float, device=None) -> dict:
    """CPU milliseconds per image of each stage of both paths on JPEG bytes in memory (see the module
    docstring), with the library's functions, one stage at a time on the previous stage's output."""
    pretrain = data.PretrainTransform(image_size)
    crop = pretrain.crop
    draft = pretrain.draft_size

    def per_image(fn, items) -> float:
        seconds, _ = timed(lambda: [fn(x) for x in items], min_seconds)
        return 1e3 * seconds / len(items)

    out: dict = {}
    out["decode"] = per_image(lambda b: data.decode_image(b, draft_size=draft), blobs)
    images = [data.decode_image(b, draft_size=draft) for b in blobs]
    out["to_rgb"] = per_image(data.to_rgb, images)
    images = [data.to_rgb(im) for im in images]

    def half_scale(b: bytes) -> None:
        im = Image.open(io.BytesIO(b))
        im.draft("RGB", (im.size[0] // 2, im.size[1] // 2))
        im.load()

    out["decode_half_scale"] = per_image(half_scale, blobs)
    generator = torch.Generator().manual_seed(0)
    out["crop_box"] = per_image(lambda im: crop.get_params(*im.size, generator=generator), images)
    boxes = [crop.get_params(*im.size, generator=generator) for im in images]
    pairs = list(zip(images, boxes))
    out["resize_pil_float_path"] = per_image(lambda p: crop.resize(*p), pairs)
    crops = [crop.resize(*p) for p in pairs]
    out["resize_torch_uint8_path"] = per_image(lambda p: data.resized_crop_uint8(p[0], p[1], image_size), pairs)
    out["to_tensor_float_path"] = per_image(data.pil_to_tensor, crops)
    tensors = [data.pil_to_tensor(c) for c in crops]
    out["normalise_float_path"] = per_image(data.normalize_pixels, tensors)
    uint8 = [data.resized_crop_uint8(im, box, image_size) for im, box in pairs]
    floats = [data.normalize_pixels(t, memory_format=torch.contiguous_format) for t in tensors]
    collator = MaskCollator(CJEPAConfig(image_size=image_size), seed=0)
    for name, examples in (("float_path", floats), ("uint8_path", uint8)):
        batch_examples = [{"pixel_values": t, "num_skipped": 0} for t in itertools.islice(itertools.cycle(examples), batch_size)]
        collate_s, _ = timed(lambda ex=batch_examples: collator(ex), min_seconds)
        out[f"collate_{name}"] = 1e3 * collate_s / batch_size
        batch = collator(batch_examples)
        pin_s, _ = timed(lambda b=batch: pin(b, device), min_seconds)
        out[f"pin_{name}"] = 1e3 * pin_s / batch_size
        out[f"batch_mib_{name}"] = batch["pixel_values"].numel() * batch["pixel_values"].element_size() / 2**20
    out["pin_mode"] = pin({}, device)[1]
    float_stages = ("decode", "to_rgb", "crop_box", "resize_pil_float_path", "to_tensor_float_path", "normalise_float_path")
    uint8_stages = ("decode", "to_rgb", "crop_box", "resize_torch_uint8_path")
    out["sum_float_path"] = sum(out[k] for k in float_stages) + out["collate_float_path"] + out["pin_float_path"]
    out["sum_uint8_path"] = sum(out[k] for k in uint8_stages) + out["collate_uint8_path"] + out["pin_uint8_path"]
    return {"profile_ms_per_image": out}


def whole_pipeline(source: Path, image_size: int, batch_size: int, min_seconds: float, rounds: int = 3, device=None) -> dict:
    """Images per CPU second (per core) of the whole pipeline, both paths: `build_pretrain_dataset`
    (output "uint8" and "float32") iterated, `MaskCollator` per `batch_size`, then `pin`. The
    two paths alternate for `rounds` rounds of at least min_seconds / rounds each, so that load
    from other processes falls on both; the rate is images / seconds over all rounds."""
    config = CJEPAConfig(image_size=image_size)
    totals = {"uint8": [0, 0.0], "float32": [0, 0.0]}
    walls = {"uint8": 0.0, "float32": 0.0}
    pin_mode = None
    for _ in range(rounds):
        for output in ("float32", "uint8"):
            stream = data.build_pretrain_dataset(
                str(source), image_size=image_size, patch_size=16, shuffle_buffer=1000, seed=0, max_consecutive_bad=None, output=output
            )
            collator = MaskCollator(config, seed=0)
            records = iter(stream)
            next(records)  # warm-up: the source opened, the first file read
            images, elapsed, start, wall = 0, 0.0, clock(), time.perf_counter()
            while elapsed < min_seconds / rounds:
                examples = list(itertools.islice(records, batch_size))
                if len(examples) < batch_size:
                    raise RuntimeError(f"the source {source} ran out within a round: write it with more rows")
                _, pin_mode = pin(collator(examples), device)
                images += len(examples)
                elapsed = clock() - start
            walls[output] += time.perf_counter() - wall
            del records
            totals[output][0] += images
            totals[output][1] += elapsed
    new = totals["uint8"][0] / totals["uint8"][1]
    old = totals["float32"][0] / totals["float32"][1]
    cores = math.ceil(STEP_GOAL_IMAGES_PER_S / new)
    workers = GPU_MACHINE_CORES - 1  # the main process drives the GPU
    rate16 = workers * new
    verdict = (
        f"{GPU_MACHINE_CORES} cores ({workers} workers + the main process) give {rate16:,.0f} images/s at "
        f"{new:,.0f} per core: {'enough' if rate16 >= STEP_GOAL_IMAGES_PER_S else 'NOT enough'} for "
        f"{STEP_GOAL_IMAGES_PER_S:,} images/s ({100 * (rate16 / STEP_GOAL_IMAGES_PER_S - 1):+.0f}% headroom); "
        f"{cores} cores at this rate are needed"
    )
    return {
        "pipeline_images_per_s_per_core": new,
        "pipeline_baseline_images_per_s_per_core": old,
        "pipeline_speedup": new / old,
        "pipeline_images_per_wall_s": totals["uint8"][0] / walls["uint8"],
        "pipeline_baseline_images_per_wall_s": totals["float32"][0] / walls["float32"],
        "pipeline_images_timed": totals["uint8"][0],
        "pipeline_baseline_images_timed": totals["float32"][0],
        "pipeline_batch_size": batch_size,
        "cores_for_5000_images_per_s": cores,
        "cores_for_5000_images_per_s_baseline": math.ceil(STEP_GOAL_IMAGES_PER_S / old),
        "feeds_5000_with_16_cores": rate16 >= STEP_GOAL_IMAGES_PER_S,
        "verdict_16_cores": verdict,
        "pin_mode": pin_mode,
    }


def bench_image_set(files: list[Path], work: Path, args: argparse.Namespace, device=None) -> dict:
    """The profile and the whole-pipeline figures of one set of JPEG files."""
    blobs = [p.read_bytes() for p in files]
    sizes = [Image.open(io.BytesIO(b)).size for b in blobs]
    out = {
        "num_images": len(blobs),
        "mean_jpeg_kb": float(np.mean([len(b) for b in blobs]) / 1024),
        "sizes": {f"{w}x{h}": sizes.count((w, h)) for w, h in sorted(set(sizes))},
    }
    out.update(profile_stages(blobs, args.image_size, args.batch_size, args.min_seconds / 4, device))
    # Rows enough that no timed round reaches the end of the stream (datasets pauses there).
    source = write_path_source(files, work, rows=args.rows, num_shards=4)
    out.update(whole_pipeline(source, args.image_size, args.batch_size, args.min_seconds, device=device))
    return out


def bench_large_jpegs(min_seconds: float) -> dict:
    rng = np.random.default_rng(1)
    large = []
    for _ in range(8):
        buf = io.BytesIO()
        photo_like(rng, 2048, 1536).save(buf, format="JPEG", quality=90)
        large.append(buf.getvalue())
    transform = data.DecodeTransform(data.PretrainTransform(224, output="uint8"), min_size=16)
    no_draft = data.DecodeTransform(_NoDraft(data.PretrainTransform(224, output="uint8")), min_size=16)
    generator = torch.Generator().manual_seed(0)
    per_large_draft, _ = timed(lambda: [transform(b, generator) for b in large], min_seconds / 2)
    per_large_plain, _ = timed(lambda: [no_draft(b, generator) for b in large], min_seconds / 2)
    return {
        "large_jpeg_images_per_s_draft": len(large) / per_large_draft,
        "large_jpeg_images_per_s_no_draft": len(large) / per_large_plain,
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
    output: str | None = None,
) -> dict:
    """Images per second the trainer's input pipeline delivers with `num_workers` DataLoader workers.

    The pipeline is training's own: `build_pretrain_dataset(source, output=output)` (a folder of
    images or a source from `write_path_source`; in the workers: file read, JPEG decode with
    draft, to_rgb, RandomResizedCrop to config.image_size: uint8 crops by default, training's
    path, or normalised floats with output="float32"), batched by
    `CJEPATrainer.get_train_dataloader()` (the stream's DataLoader: `MaskCollator` samples the
    multi-block masks in the workers, pinned memory on CUDA), each batch copied to `device`
    (non_blocking) and a uint8 batch normalised there (`normalize_pixels`, as the model does).
    The clock starts after `warmup_batches` batches (worker start-up) and stops once
    `min_seconds` have passed (and at least `min_batches` batches) or the stream ends.
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
        output=output,
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
            if on_device["pixel_values"].dtype == torch.uint8:
                on_device["pixel_values"] = data.normalize_pixels(on_device["pixel_values"])
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
        "pixel_dtype": str(stream.decode_transform.transform.output),
        "device": str(device),
        "num_shards": stream.num_shards,
        "pipeline": "build_pretrain_dataset(source) -> CJEPATrainer.get_train_dataloader() (decoding and MaskCollator in the "
        "workers) -> .to(device, non_blocking=True) -> normalize_pixels (uint8 batches)",
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
    parser.add_argument(
        "--image-dir", default=None, help="folder of JPEGs to use as the synthetic set (default: synthetic ones in a temp dir)"
    )
    parser.add_argument("--photo-dir", default=None, help="folder of photos: re-encoded at ImageNet's sizes for the 'photos' set")
    parser.add_argument("--num-images", type=int, default=200, help="synthetic JPEGs to write")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256, help="collate / pin / mask batch size")
    parser.add_argument("--rows", type=int, default=20_000, help="records in each set's stream (cycling its files)")
    parser.add_argument("--min-seconds", type=float, default=12.0, help="seconds of whole-pipeline timing per path and set")
    args = parser.parse_args(argv)
    for name in ("num_images", "batch_size", "rows", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.min_seconds <= 0:
        parser.error(f"--min-seconds must be > 0, got {args.min_seconds}")
    if args.image_size % 16:
        parser.error(f"--image-size must be a multiple of the patch size 16, got {args.image_size}")

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device("cuda") if torch.cuda.is_available() else None
    results: dict = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
    results["load_average_before"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results.update(bench_masks(args.batch_size, args.min_seconds / 4))
    with tempfile.TemporaryDirectory(prefix="cjepa-bench-") as tmp:
        tmp = Path(tmp)
        if args.image_dir:
            synthetic = sorted(p for p in Path(args.image_dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
            if not synthetic:
                raise SystemExit(f"no .jpg/.jpeg files under {args.image_dir}")
        else:
            synthetic = write_images(tmp / "synthetic", args.num_images, (500, 375), seed=0)
        sets = {"synthetic": synthetic}
        if args.photo_dir:
            sets["photos"] = write_photo_set(Path(args.photo_dir), tmp / "photos")
        for name, files in sets.items():
            results[name] = bench_image_set(files, tmp / f"{name}-stream", args, device)
        results.update(bench_large_jpegs(args.min_seconds / 4))
    headline = "photos" if "photos" in results else "synthetic"
    results["headline_set"] = headline
    for key in (
        "pipeline_images_per_s_per_core",
        "pipeline_baseline_images_per_s_per_core",
        "pipeline_speedup",
        "cores_for_5000_images_per_s",
        "feeds_5000_with_16_cores",
        "verdict_16_cores",
    ):
        results[key] = results[headline][key]
    results["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results["environment"] = environment()
    print_summary(results)
    write_json(results, args.output)
    return results


def print_summary(results: dict) -> None:
    sets = [k for k in ("synthetic", "photos") if k in results]
    stages = list(results[sets[0]]["profile_ms_per_image"])
    print(f"{'ms per image':<28}" + "".join(f"{name:>12}" for name in sets))
    for stage in stages:
        values = [results[name]["profile_ms_per_image"][stage] for name in sets]
        print(f"{stage:<28}" + "".join(f"{v:>12.3f}" if isinstance(v, float) else f"{v!s:>12}" for v in values))
    for key in (
        "pipeline_baseline_images_per_s_per_core",
        "pipeline_images_per_s_per_core",
        "pipeline_speedup",
        "cores_for_5000_images_per_s",
    ):
        print(f"{key:<40}" + "".join(f"{results[name][key]:>12,.2f}" for name in sets))
    print(f"verdict ({results['headline_set']}): {results['verdict_16_cores']}")
    print(
        f"mask_samples_per_s {results['mask_samples_per_s']:,.0f}; large JPEGs {results['large_jpeg_images_per_s_draft']:.0f}/s with draft, "
        f"{results['large_jpeg_images_per_s_no_draft']:.0f}/s without"
    )
    print(
        f"load average (1 min): {results['load_average_before']} before, {results['load_average_after']} after, on {os.cpu_count()} cores"
    )
