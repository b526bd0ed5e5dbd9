"""Image data for C-JEPA pretraining: sources, transforms, bad-record handling, Fashion-MNIST.

Data flow (one record)::

    datasets stream (Hub id | imagefolder | parquet | arrow | webdataset tar | Fashion-MNIST IDX)
      -> raw record {"image": {"bytes", "path"}, "label"}   (image column cast to Image(decode=False))
      -> PretrainImageStream, inside the DataLoader worker:
           decode (PIL, JPEG draft) -> to_rgb -> [pad_to] -> RandomResizedCrop -> normalise
      -> {"pixel_values": (C, H, W) float32, "label": int, "num_skipped": int}

Augmentation is the paper's only one (PAPER.md section 4): RandomResizedCrop with scale
(0.3, 1.0), aspect ratio (3/4, 4/3) and ImageNet normalisation; no flip, no colour jitter.
PIL + torch only (torchvision cannot be installed beside the CPU torch, STACK.md).

Bad records (corrupt or truncated bytes, a missing image or file, an unconvertible mode, an
image smaller than a patch or larger than `max_image_pixels`) never stop a run: each is
skipped, logged (rate-limited) and counted, and the count travels with the data because
DataLoader workers cannot share a counter with the main process: every delivered example
carries ``num_skipped``, the number of bad records skipped since the previous good example
of the same stream (the last example of a stream also carries the bad records that
followed it). Summing ``num_skipped`` over
everything delivered gives the exact number of bad records.
"""

from __future__ import annotations

import glob
import gzip
import io
import itertools
import logging
import math
import os
import random
import re
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import datasets
from datasets.distributed import split_dataset_by_node

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_HUB_DATASET = "ILSVRC/imagenet-1k"
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
FASHION_MNIST_ENV = "CJEPA_FASHION_MNIST_DIR"


def fashion_mnist_root() -> str:
    """Where the Fashion-MNIST IDX files are: $CJEPA_FASHION_MNIST_DIR, else Debian's folder."""
    return os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_ROOT
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_MNIST_NAMES = ("fashion_mnist", "fashion-mnist")
# The largest image decoded, in pixels (width x height, after JPEG draft scaling), checked on
# the header before any pixel is decoded. 64 MP is above every photo of the usual datasets
# (ImageNet's largest is ~20 MP; 50 MP camera frames pass) and bounds the decode at 256 MB per
# DataLoader worker (RGBA, 4 bytes a pixel; ~2.5x that transiently while `to_rgb` composites
# and converts). PIL's own guard only refuses ~179 MP (2 x Image.MAX_IMAGE_PIXELS), and a
# 169 MP RGBA PNG of a few MB costs ~3 GB and ~10 s to decode and convert.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
_WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "image")
_WEBDATASET_LABEL_KEYS = ("cls", "label", "cls2")

_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}

RandomSource = torch.Generator | random.Random | None


# ----------------------------------------------------------------------------- bad records
class BadRecord(Exception):
    """A record that cannot become a training image. `reason` is a short category
    (`missing`, `missing_file`, `io_error`, `undecodable`, `truncated`, `too_small`,
    `too_large`, `unsupported_mode`, `transform_error`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BadRecordCounter:
    """Per-process count of skipped records, by reason, with a rate-limited warning.

    In DataLoader workers each worker has its own copy (the count reaches the main process
    only through the ``num_skipped`` field); with ``num_workers=0`` the module-level
    `BAD_RECORDS` sees every bad record of the process.
    """

    def __init__(self, warn_interval_s: float = 30.0) -> None:
        self.warn_interval_s = warn_interval_s
        self.count = 0
        self.by_reason: Counter[str] = Counter()
        self._last_warning = -math.inf
        self._lock = threading.Lock()

    def record(self, error: BadRecord) -> None:
        with self._lock:
            self.count += 1
            self.by_reason[error.reason] += 1
            now = time.monotonic()
            warn = self.count == 1 or now - self._last_warning >= self.warn_interval_s
            if warn:
                self._last_warning = now
            count = self.count
        if warn:
            worker = torch.utils.data.get_worker_info()
            where = f"dataloader worker {worker.id} (pid {os.getpid()})" if worker else f"pid {os.getpid()}"
            logger.warning(
                "skipped a bad image record (%s); %d bad records skipped so far in %s: %s",
                error, count, where, dict(self.by_reason),
            )

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.by_reason.clear()
            self._last_warning = -math.inf

    def __getstate__(self) -> dict:  # picklable for spawned workers: the lock is not
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BadRecordCounter(count={self.count}, by_reason={dict(self.by_reason)})"


BAD_RECORDS = BadRecordCounter()


# ----------------------------------------------------------------------------- image modes
def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Gray levels of a 16-bit, 32-bit integer or float image mapped to 0..255."""
    array = array.astype(np.float32)
    if mode.startswith("I;16"):
        array = array / 257.0
    elif mode == "I":  # 32-bit container: 16-bit data (PNG) when it exceeds 8 bits
        array = np.clip(array, 0, 65535) / 257.0 if array.max(initial=0) > 255 else array
    elif mode == "F":
        array = array * 255.0 if array.max(initial=0) <= 1.0 else array
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB.

    L/1 -> grey replicated; I;16*, I, F -> scaled to 8 bits then grey (16-bit: v / 257);
    CMYK, YCbCr, ... -> PIL conversion; RGBA, LA, PA and palette images with transparency
    -> composited on white; other palette images -> their colours.
    """
    mode = image.mode
    if mode in ("RGB", "L") and "transparency" in image.info:  # PNG tRNS colour key
        return _composite_on_white(image)
    if mode == "RGB":
        return image
    if mode in ("L", "1"):
        return image.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if mode in ("P", "PA"):
        if mode == "PA" or "transparency" in image.info:
            return _composite_on_white(image)
        return image.convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La"):
        return _composite_on_white(image)
    return image.convert("RGB")


def pad_to_size(image: Image.Image, size: int, fill: int = 0) -> Image.Image:
    """Centre `image` on a canvas at least `size` x `size` filled with `fill` (grey level);
    sides already >= size are left alone. Used to pad 28x28 Fashion-MNIST to 32x32."""
    width, height = image.size
    new_w, new_h = max(width, size), max(height, size)
    if (new_w, new_h) == (width, height):
        return image
    color = fill if image.mode in ("L", "1", "I", "F") or image.mode.startswith("I;") else (fill,) * len(image.getbands())
    canvas = Image.new(image.mode, (new_w, new_h), color)
    canvas.paste(image, ((new_w - width) // 2, (new_h - height) // 2))
    return canvas


# ----------------------------------------------------------------------------- randomness
def _uniform(generator: RandomSource, low: float, high: float) -> float:
    if isinstance(generator, random.Random):
        return generator.uniform(low, high)
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(generator: RandomSource, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    if isinstance(generator, random.Random):
        return generator.randint(low, high)
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def random_resized_crop_params(
    width: int,
    height: int,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: RandomSource = None,
    max_tries: int = 10,
) -> tuple[int, int, int, int]:
    """Crop box (left, top, crop_width, crop_height) of torchvision's RandomResizedCrop.

    The area fraction is uniform in `scale`, the aspect ratio (w / h) log-uniform in
    `ratio`; after `max_tries` boxes that do not fit, a centre crop with the aspect ratio
    clamped to `ratio`. `generator` is a `torch.Generator`, a `random.Random` or None
    (torch's global RNG, which DataLoader seeds per worker).
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(max_tries):
        target_area = area * _uniform(generator, scale[0], scale[1])
        aspect = math.exp(_uniform(generator, log_lo, log_hi))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = _randint(generator, 0, height - crop_h)
            left = _randint(generator, 0, width - crop_w)
            return left, top, crop_w, crop_h
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


class NormalizeToTensor:
    """uint8 HWC RGB PIL image -> float32 (C, H, W) tensor, (x / 255 - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must have the same length and std > 0, got mean={mean}, std={std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # One fused multiply-add in float32: x * a + b with a = 1 / (255 std), b = -mean / std.
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32).view(-1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        channels = len(image.getbands())
        # One copy out of PIL into a writable buffer; the float conversion is the second.
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(height, width, channels).permute(2, 0, 1)  # (C, H, W) view
        out = torch.empty(pixels.shape, dtype=torch.float32)
        out.copy_(pixels)
        return out.mul_(self._scale).add_(self._shift)


def _resample(interpolation: str) -> Image.Resampling:
    try:
        return _RESAMPLING[interpolation]
    except KeyError:
        raise ValueError(f"interpolation must be one of {sorted(_RESAMPLING)}, got {interpolation!r}") from None


class RandomResizedCrop:
    """PIL RandomResizedCrop (torchvision's algorithm): crop and resize to `size` x `size`
    in one `Image.resize(box=...)` call."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = interpolation
        self._resample = _resample(interpolation)

    def get_params(self, width: int, height: int, generator: RandomSource = None) -> tuple[int, int, int, int]:
        return random_resized_crop_params(width, height, self.scale, self.ratio, generator)

    @property
    def draft_size(self) -> int:
        """A JPEG may be decoded at a reduced scale as long as both sides stay >= this: then
        even the smallest crop (area scale[0], aspect ratio[0] or ratio[1]) is >= `size`."""
        return math.ceil(self.size / math.sqrt(self.scale[0] * min(self.ratio[0], 1 / self.ratio[1])))

    def __call__(self, image: Image.Image, generator: RandomSource = None) -> Image.Image:
        left, top, crop_w, crop_h = self.get_params(*image.size, generator=generator)
        return image.resize((self.size, self.size), self._resample, box=(left, top, left + crop_w, top + crop_h))


class PretrainTransform:
    """Training augmentation of the paper: RandomResizedCrop(scale=(0.3, 1)) + ImageNet
    normalisation. RGB PIL image -> float32 (3, size, size).

    Bilinear by default, as torchvision's RandomResizedCrop in the I-JEPA reference code
    (PIL's bilinear antialiases when downscaling); it is also ~2x faster than bicubic."""

    def __init__(
        self,
        image_size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.image_size = int(image_size)
        self.crop = RandomResizedCrop(image_size, scale, ratio, interpolation)
        self.normalize = NormalizeToTensor(mean, std)

    @property
    def draft_size(self) -> int:
        return self.crop.draft_size

    def __call__(self, image: Image.Image, generator: RandomSource = None) -> torch.Tensor:
        return self.normalize(self.crop(image, generator))


class EvalTransform:
    """Evaluation preprocessing: shorter side resized to `image_size / crop_pct`, centre crop
    `image_size`, ImageNet normalisation. Deterministic; `generator` is accepted and ignored
    so both transforms share one call signature."""

    def __init__(
        self,
        image_size: int,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must lie in (0, 1], got {crop_pct}")
        self.image_size = int(image_size)
        self.crop_pct = float(crop_pct)
        self.resize_to = int(math.floor(image_size / crop_pct))
        self.interpolation = interpolation
        self._resample = _resample(interpolation)
        self.normalize = NormalizeToTensor(mean, std)

    @property
    def draft_size(self) -> int:
        return self.resize_to

    def __call__(self, image: Image.Image, generator: RandomSource = None) -> torch.Tensor:
        width, height = image.size
        short = min(width, height)
        if short != self.resize_to:
            new_w = self.resize_to if width == short else int(round(width * self.resize_to / short))
            new_h = self.resize_to if height == short else int(round(height * self.resize_to / short))
            image = image.resize((new_w, new_h), self._resample)
            width, height = new_w, new_h
        size = self.image_size
        left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
        if (left, top, width, height) != (0, 0, size, size):
            image = image.crop((left, top, left + size, top + size))
        return self.normalize(image)


# ----------------------------------------------------------------------------- decoding
def _open_path(path: str, token: str | bool | None) -> Image.Image:
    if os.path.exists(path):
        return Image.open(path)
    if "://" not in path:
        raise BadRecord("missing_file", path)
    from datasets.download.download_config import DownloadConfig
    from datasets.utils.file_utils import xopen

    try:
        with xopen(path, "rb", download_config=DownloadConfig(token=token)) as f:
            data = f.read()
    except FileNotFoundError as error:
        raise BadRecord("missing_file", f"{path}: {error}") from None
    return Image.open(io.BytesIO(data))


def decode_image(
    value: Any,
    *,
    draft_size: int | None = None,
    min_size: int = 1,
    token: str | bool | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode one image-column value into a loaded PIL image (EXIF orientation applied).

    `value` may be a `{"bytes", "path"}` dict (an `Image(decode=False)` column), raw bytes,
    a path, a PIL image or an HWC/HW uint8 array. A JPEG whose sides both exceed
    2 x `draft_size` is decoded at a reduced scale (DCT scaling, several times faster) that
    keeps both sides >= `draft_size`. Raises `BadRecord` for a missing value or file,
    undecodable or truncated bytes, an image whose shorter side is < `min_size`, or
    (`too_large`) one of more than `max_image_pixels` pixels (width x height at the scale it
    would be decoded, so after JPEG draft scaling). That size comes from the header, which is
    all `Image.open` reads: an oversized image is refused before any pixel is decoded.
    `max_image_pixels=None` lifts the cap (PIL's own decompression-bomb guard still applies).
    """
    if max_image_pixels is not None and (isinstance(max_image_pixels, bool) or int(max_image_pixels) < 1):
        raise ValueError(f"max_image_pixels must be a positive number of pixels or None, got {max_image_pixels!r}")
    if value is None:
        raise BadRecord("missing", "image is None")
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
            if data is not None:
                image = Image.open(io.BytesIO(data))
            elif path:
                image = _open_path(path, token)
            else:
                raise BadRecord("missing", "image has neither bytes nor path")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, os.PathLike)):
            image = _open_path(os.fspath(value), token)
        elif isinstance(value, (np.ndarray, torch.Tensor)):
            image = Image.fromarray(np.asarray(value))
        else:
            raise BadRecord("undecodable", f"unsupported image value of type {type(value).__name__}")
    except BadRecord:
        raise
    except UnidentifiedImageError as error:
        raise BadRecord("undecodable", str(error)) from None
    except FileNotFoundError as error:
        raise BadRecord("missing_file", str(error)) from None
    except OSError as error:  # unreadable file, directory, remote read failure
        raise BadRecord("io_error", f"{type(error).__name__}: {error}") from None
    except Exception as error:  # noqa: BLE001 - any failure to open is a bad record
        raise BadRecord("undecodable", f"{type(error).__name__}: {error}") from None

    width, height = image.size
    if min(width, height) < min_size:
        raise BadRecord("too_small", f"{width}x{height} image, the shorter side must be >= {min_size}")
    if draft_size and image.format == "JPEG" and min(width, height) >= 2 * draft_size:
        image.draft("RGB", (draft_size, draft_size))
        width, height = image.size  # the scale the pixels will be decoded at
    if max_image_pixels is not None and width * height > max_image_pixels:
        # Refused on the header alone: load() would allocate width x height x bands bytes.
        raise BadRecord(
            "too_large",
            f"{width}x{height} image ({width * height / 1e6:.1f} MP), at most max_image_pixels="
            f"{max_image_pixels} ({max_image_pixels / 1e6:.1f} MP) are decoded",
        )
    try:
        image.load()
    except Exception as error:  # noqa: BLE001 - truncated data, broken streams, bad headers
        reason = "truncated" if "truncated" in str(error).lower() else "undecodable"
        raise BadRecord(reason, f"{type(error).__name__}: {error}") from None
    try:
        orientation = image.getexif().get(0x0112)  # EXIF Orientation
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels bad
        pass
    return image


class DecodeTransform:
    """A raw image-column value -> normalised tensor, raising `BadRecord` for anything that
    cannot become a training image. Picklable (it runs inside DataLoader workers)."""

    def __init__(
        self,
        transform: Callable[..., torch.Tensor],
        *,
        min_size: int = 1,
        pad_to: int | None = None,
        pad_fill: int = 0,
        token: str | bool | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if max_image_pixels is not None and (isinstance(max_image_pixels, bool) or int(max_image_pixels) < 1):
            raise ValueError(f"max_image_pixels must be a positive number of pixels or None, got {max_image_pixels!r}")
        self.transform = transform
        self.min_size = int(min_size)
        self.max_image_pixels = max_image_pixels
        self.pad_to = pad_to
        self.pad_fill = pad_fill
        self.token = token

    def __call__(self, value: Any, generator: RandomSource = None) -> torch.Tensor:
        image = decode_image(
            value, draft_size=getattr(self.transform, "draft_size", None), min_size=self.min_size, token=self.token,
            max_image_pixels=self.max_image_pixels,
        )
        try:
            image = to_rgb(image)
        except Exception as error:  # noqa: BLE001
            raise BadRecord("unsupported_mode", f"mode {image.mode}: {error}") from None
        if self.pad_to:
            image = pad_to_size(image, self.pad_to, self.pad_fill)
        try:
            return self.transform(image, generator)
        except Exception as error:  # noqa: BLE001
            raise BadRecord("transform_error", f"{type(error).__name__}: {error}") from None


# ----------------------------------------------------------------------------- the stream
def _mix_seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) % 2**63 for v in values]).generate_state(1, dtype=np.uint64)[0])


class PretrainImageStream(torch.utils.data.IterableDataset):
    """Decoded, augmented training examples from a raw `datasets.IterableDataset`.

    Yields ``{"pixel_values": (C, H, W) float32, "label": int (if a label column),
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

    Bad records are skipped and counted (see the module docstring); one good example is
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

    def shard(self, num_shards: int, index: int, contiguous: bool = True) -> "PretrainImageStream":
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
                "a data stream (rank %d, worker %d) held %d records and all were bad: their count cannot "
                "travel in num_skipped",
                self.rank, worker_id, skipped,
            )

    def __repr__(self) -> str:
        return (
            f"PretrainImageStream(image_column={self.image_column!r}, label_column={self.label_column!r}, "
            f"num_shards={self.num_shards}, seed={self.seed}, rank={self.rank}, dataset={self.dataset!r})"
        )


# ----------------------------------------------------------------------------- Fashion-MNIST
def _read_idx(path: str, expected_magic: int) -> np.ndarray:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Fashion-MNIST file not found: {path}. Install the IDX files with "
            "`apt-get install dataset-fashion-mnist` (they go to /usr/share/datasets/fashion-mnist), "
            "or point $CJEPA_FASHION_MNIST_DIR (or root=) at a folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz."
        )
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: IDX magic number must be {expected_magic:#010x}, got {magic:#010x}")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape):
        raise ValueError(f"{path}: header says shape {shape} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _png_gray8(images: np.ndarray) -> list[bytes]:
    """8-bit greyscale PNG files of (N, H, W) uint8 images, written with an uncompressed
    (stored) deflate block: ~100x faster than PIL's encoder for 70k tiny images, still a
    standard PNG any decoder reads."""
    n, height, width = images.shape
    rows = np.zeros((n, height, width + 1), dtype=np.uint8)  # filter byte 0 before each row
    rows[:, :, 1:] = images
    raw_len = height * (width + 1)
    if raw_len > 0xFFFF:
        raise ValueError(f"images of {width}x{height} are too big for a single stored deflate block")

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    tail = chunk(b"IEND", b"")
    # zlib header (no compression), one final stored block: BFINAL=1, LEN, NLEN.
    block_head = b"\x78\x01\x01" + struct.pack("<HH", raw_len, raw_len ^ 0xFFFF)
    out = []
    for raw in rows.reshape(n, raw_len):
        payload = raw.tobytes()
        out.append(head + chunk(b"IDAT", block_head + payload + struct.pack(">I", zlib.adler32(payload))) + tail)
    return out


def load_fashion_mnist(split: str = "train", root: str | None = None) -> datasets.Dataset:
    """Fashion-MNIST from its gzipped IDX files as an in-memory `datasets.Dataset`.

    Features: ``{"image": Image() (28x28 PNG, mode L), "label": ClassLabel(FASHION_MNIST_CLASSES)}``.
    60,000 train / 10,000 test rows; builds in about a second. `root`: default
    `fashion_mnist_root()` ($CJEPA_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist).
    """
    root = root or fashion_mnist_root()
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = _read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), 0x00000803)
    labels = _read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), 0x00000801)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"Fashion-MNIST {split}: label {labels.max()} outside 0..9")
    import pyarrow as pa

    pngs = _png_gray8(images)
    image_column = pa.StructArray.from_arrays(
        [pa.array(pngs, type=pa.binary()), pa.nulls(len(pngs), type=pa.string())], names=["bytes", "path"]
    )
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES))})
    table = pa.table({"image": image_column, "label": pa.array(labels.astype(np.int64))})
    table = table.cast(features.arrow_schema)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), split=datasets.NamedSplit(split))


# ----------------------------------------------------------------------------- sources
def _builder_for_files(files: Sequence[str]) -> str:
    names = [f.lower() for f in files]
    if all(n.endswith(".parquet") for n in names):
        return "parquet"
    if all(n.endswith(".arrow") for n in names):
        return "arrow"
    if all(n.endswith((".tar", ".tgz", ".tar.gz")) for n in names):
        return "webdataset"
    if all(n.endswith(_IMAGE_EXTENSIONS) for n in names):
        return "imagefolder"
    raise ValueError(
        f"cannot tell the format of {len(files)} files ({sorted({os.path.splitext(n)[1] for n in names})}); "
        "expected .parquet, .arrow, .tar (webdataset) or image files"
    )


def _is_idx_dir(path: str) -> bool:
    """A folder holding (Fashion-)MNIST-style gzipped IDX files."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f"{prefix}-images-idx3-ubyte.gz")) for prefix in ("train", "t10k")
    )


def _is_fashion_mnist(source: str) -> bool:
    return source in _FASHION_MNIST_NAMES or _is_idx_dir(os.path.expanduser(source))


_DATA_EXTENSIONS = ((".parquet", "parquet"), (".arrow", "arrow"), (".tar", "webdataset"))
_SPLIT_NAMES = ("train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval")


def _files_for_split(path: str, extension: str, split: str) -> list[str]:
    """Files with `extension` under folder `path` that belong to `split`.

    A file belongs to a split when its relative path has the split's name as a token
    (``train-00000-of-00004.parquet``, ``validation/part-1.parquet``); when no file names
    any split, every file belongs to each split.
    """
    files = sorted(glob.glob(os.path.join(path, "**", f"*{extension}"), recursive=True))

    def tokens(file: str) -> set[str]:
        return set(re.split(r"[-_./\\]+", os.path.relpath(file, path).lower()))

    named = {name for file in files for name in tokens(file) & set(_SPLIT_NAMES)}
    if not named:
        return files
    chosen = [file for file in files if split.lower() in tokens(file)]
    if not chosen:
        raise ValueError(f"no {extension} file for split {split!r} under {path}; file names mention {sorted(named)}")
    return chosen


def _builder_for_dir(path: str) -> tuple[str, str | None]:
    """(builder, extension of its data files) for a local folder; imagefolder by default."""
    extensions = Counter()
    for _, _, names in os.walk(path):
        for name in names:
            extensions[os.path.splitext(name.lower())[1]] += 1
    for ext, builder in _DATA_EXTENSIONS:
        if extensions[ext]:
            return builder, ext
    return "imagefolder", None


def load_image_source(
    source: str,
    *,
    split: str = "train",
    streaming: bool = True,
    token: str | bool | None = None,
    num_shards: int = 64,
) -> datasets.IterableDataset:
    """The raw records of `source` as a `datasets.IterableDataset` (images not decoded yet).

    `source` is one of:

    - ``"fashion_mnist"`` (IDX files under `fashion_mnist_root()`) or a folder holding
      ``{train,t10k}-images-idx3-ubyte.gz`` (splits ``train`` / ``test``, ``validation`` -> test);
    - a `save_to_disk` folder (`Dataset` or `DatasetDict`);
    - a folder of parquet, arrow or webdataset ``.tar`` files (the files whose names mention
      `split`, or all of them when no file names a split);
    - any other folder: ``imagefolder`` (class sub-folders become labels, split sub-folders
      splits);
    - a file or glob of parquet / arrow / tar / image files;
    - otherwise a Hub dataset id such as ``"ILSVRC/imagenet-1k"`` (gated: pass `token`),
      loaded with ``load_dataset(source, split=split, streaming=streaming, token=token)``.

    With ``streaming=False`` (or a map-style source) the Arrow data is streamed in
    `num_shards` shards.
    """
    expanded = os.path.expanduser(source)
    if _is_fashion_mnist(source):
        root = fashion_mnist_root() if source in _FASHION_MNIST_NAMES else expanded
        fmnist_split = "test" if split in ("test", "validation") else "train"
        return load_fashion_mnist(fmnist_split, root=root).to_iterable_dataset(num_shards=num_shards)
    if os.path.isdir(expanded) and os.path.exists(os.path.join(expanded, "dataset_dict.json")):
        ds = datasets.load_from_disk(expanded)[split]  # a DatasetDict.save_to_disk folder
    elif os.path.isdir(expanded) and os.path.exists(os.path.join(expanded, "state.json")):
        ds = datasets.load_from_disk(expanded)  # a Dataset.save_to_disk folder
    elif os.path.isdir(expanded):
        builder, extension = _builder_for_dir(expanded)
        if builder == "imagefolder":  # split and class names come from the folder names
            ds = datasets.load_dataset(builder, data_dir=expanded, split=split, streaming=streaming)
        else:
            files = _files_for_split(expanded, extension, split)
            ds = datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=streaming)
    elif os.path.isfile(expanded) or glob.has_magic(expanded):
        files = sorted(glob.glob(expanded, recursive=True))
        if not files:
            raise FileNotFoundError(f"no file matches {source!r}")
        ds = datasets.load_dataset(_builder_for_files(files), data_files={split: files}, split=split, streaming=streaming)
    elif source.startswith((".", "/", "~")) or source.count("/") > 1:  # a path, not "org/name"
        raise FileNotFoundError(f"{source!r} is neither an existing file, folder or glob, nor a Hub dataset id")
    else:
        ds = datasets.load_dataset(source, split=split, streaming=streaming, token=token)
    if isinstance(ds, datasets.Dataset):
        ds = ds.to_iterable_dataset(num_shards=min(num_shards, max(1, len(ds))))
    return ds


def _resolve_columns(
    features: datasets.Features | None, image_column: str, label_column: str | None
) -> tuple[str, str | None]:
    if features is None:  # unknown schema (some streams): trust the caller
        return image_column, label_column
    if image_column not in features:
        candidates = [name for name, f in features.items() if isinstance(f, datasets.Image)]
        candidates += [name for name in _WEBDATASET_IMAGE_KEYS if name in features and name not in candidates]
        if not candidates:
            raise ValueError(f"image_column {image_column!r} not found; columns are {list(features)}")
        logger.info("image column %r not found, using %r", image_column, candidates[0])
        image_column = candidates[0]
    if label_column is not None and label_column not in features:
        fallback = next((name for name in _WEBDATASET_LABEL_KEYS if name in features), None)
        if fallback is not None:
            logger.info("label column %r not found, using %r", label_column, fallback)
        label_column = fallback
    if label_column is not None:
        feature = features[label_column]
        integer = isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "bool"))
        )
        if not integer:  # pretraining needs no label; a non-integer one is left out, not guessed
            logger.warning("label column %r is %s, not an integer class: yielding no label", label_column, feature)
            label_column = None
    return image_column, label_column


def auto_pad_to(source: str, image_size: int, patch_size: int) -> int | None:
    """The size to pad `source`'s images to, or None to resize them: Fashion-MNIST (28 x 28)
    is padded to `image_size` (not upscaled) when that adds at most one patch on each side."""
    if _is_fashion_mnist(source) and 0 <= image_size - 28 <= 2 * patch_size:
        return image_size
    return None


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
    records. Fashion-MNIST at an `image_size` at most two patches above 28 (e.g. 32 with
    patch 4) is padded to `image_size` with `pad_fill` (its black background) instead of
    being upscaled, and for evaluation the padded image is used as is (no resize, no crop).
    `num_shards`: shards of a map-style source (Fashion-MNIST, ``streaming=False``), and
    the count below which a parquet source is resharded by row group.
    `max_image_pixels`: records of more pixels (read from the header, after JPEG draft
    scaling) are bad records (`too_large`), refused before decoding; see
    `DEFAULT_MAX_IMAGE_PIXELS` (64 MP) for the default; None lifts the cap.
    """
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

    if pad_to is None:
        pad_to = auto_pad_to(source, image_size, patch_size)
    if train:
        transform: Callable[..., torch.Tensor] = PretrainTransform(
            image_size, scale, ratio, interpolation or "bilinear"
        )
    else:
        crop_pct = 1.0 if pad_to == image_size else eval_crop_pct
        transform = EvalTransform(image_size, crop_pct=crop_pct, interpolation=interpolation or "bicubic")
    decode_transform = DecodeTransform(
        transform, min_size=patch_size, pad_to=pad_to, pad_fill=pad_fill, token=token, max_image_pixels=max_image_pixels
    )
    return PretrainImageStream(
        ds, decode_transform, image_column=image_column, label_column=label_column, seed=seed, rank=rank,
        max_consecutive_bad=max_consecutive_bad,
    )


def pretrain_dataloader(
    dataset: torch.utils.data.IterableDataset,
    collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
    batch_size: int = 64,
    num_workers: int = 4,
    seed: int = 0,
    *,
    drop_last: bool = True,
    pin_memory: bool = False,
    prefetch_factor: int | None = 4,
    persistent_workers: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over a stream from `build_pretrain_dataset` (`CJEPATrainer` builds its
    own in real runs). The stream reads its epoch when a pass starts, so it works with
    either kind of worker; the default, non-persistent workers, is what
    `masking.MaskCollator` needs to see its own `set_epoch`. With `drop_last`, the examples
    of a last partial batch, and the `num_skipped` they carry, are not delivered."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        persistent_workers=persistent_workers and num_workers > 0,
    )


__all__ = [
    "BAD_RECORDS",
    "DEFAULT_HUB_DATASET",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BadRecord",
    "BadRecordCounter",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DecodeTransform",
    "EvalTransform",
    "NormalizeToTensor",
    "PretrainImageStream",
    "PretrainTransform",
    "RandomResizedCrop",
    "auto_pad_to",
    "build_pretrain_dataset",
    "decode_image",
    "load_fashion_mnist",
    "load_image_source",
    "pad_to_size",
    "pretrain_dataloader",
    "random_resized_crop_params",
    "to_rgb",
]
