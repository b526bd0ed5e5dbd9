"""Decoding and bad records: `decode_image` (any image-column value -> loaded PIL image), `to_rgb`, `DecodeTransform`, and `BadRecord` / `BadRecordCounter` for the records that cannot become a training image.

Bad records (corrupt or truncated bytes, a missing image or file, an unconvertible mode, an
image smaller than a patch or larger than `max_image_pixels`) never stop a run: each is
skipped, logged (rate-limited) and counted, and the count travels with the data because
DataLoader workers cannot share a counter with the main process: every delivered example
carries ``num_skipped``, the number of bad records skipped since the previous good example
of the same stream (the last example of a stream also carries the bad records that
followed it). Summing ``num_skipped`` over everything delivered gives the exact number of
bad records (`cjepa_hf.data.stream.PretrainImageStream` does that bookkeeping).
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from .transforms import RandomSource, pad_to_size

logger = logging.getLogger(__name__)

# The largest image decoded, in pixels of 8-bit RGB (width x height after JPEG draft scaling,
# x bands x bytes per band / 3 when that is more: `decode_image`), checked on the header before
# any pixel is decoded. 64 MP is above every photo of the usual datasets (ImageNet's largest is
# ~20 MP; 50 MP camera frames pass) and bounds the decode at 192 MB per DataLoader worker (an
# RGBA image: 48 MP; ~2.5x that transiently while `to_rgb` composites and converts). PIL's own guard only refuses ~179 MP (2 x Image.MAX_IMAGE_PIXELS), and a
# 169 MP RGBA PNG of a few MB costs ~3 GB and ~10 s to decode and convert.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000


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
                error,
                count,
                where,
                dict(self.by_reason),
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


# ----------------------------------------------------------------------------- decoding
def _check_max_image_pixels(max_image_pixels: int | None) -> None:
    if max_image_pixels is not None and (isinstance(max_image_pixels, bool) or int(max_image_pixels) < 1):
        raise ValueError(f"max_image_pixels must be a positive number of pixels or None, got {max_image_pixels!r}")


def _bytes_per_pixel(mode: str) -> int:
    """Bytes a decoded pixel of `mode` takes: bands x bytes per band (RGBA 4, I;16 2, F 4)."""
    try:
        info = ImageMode.getmode(mode)
    except KeyError:
        return 4  # an unknown mode: assume the widest common one
    return len(info.bands) * int(info.typestr[-1])


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
    would be decoded, so after JPEG draft scaling, counted in bytes: a pixel costs the larger of its
    bands x bytes per band and the 3 bytes of its RGB copy, so an RGBA or 32-bit image is capped at
    3/4 of the pixels of an RGB one). That size comes from the header, which is
    all `Image.open` reads: an oversized image is refused before any pixel is decoded.
    `max_image_pixels=None` lifts the cap (PIL's own decompression-bomb guard still applies).
    """
    _check_max_image_pixels(max_image_pixels)
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
    # Refused on the header alone. The cap is on bytes: load() allocates width x height x bands x
    # bytes per band, and to_rgb then makes 3 bytes a pixel, so a pixel costs the larger of the
    # two; at most 3 x max_image_pixels bytes (max_image_pixels pixels of 8-bit RGB) are decoded.
    decoded_bytes = width * height * max(3, _bytes_per_pixel(image.mode))
    if max_image_pixels is not None and decoded_bytes > 3 * max_image_pixels:
        raise BadRecord(
            "too_large",
            f"{width}x{height} image ({width * height / 1e6:.1f} MP, mode {image.mode}: {decoded_bytes / 1e6:.0f} MB decoded), "
            f"at most max_image_pixels={max_image_pixels} ({max_image_pixels / 1e6:.1f} MP of 8-bit RGB, "
            f"{3 * max_image_pixels / 1e6:.0f} MB) are decoded",
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
        _check_max_image_pixels(max_image_pixels)
        self.transform = transform
        self.min_size = int(min_size)
        self.max_image_pixels = max_image_pixels
        self.pad_to = pad_to
        self.pad_fill = pad_fill
        self.token = token

    def __call__(self, value: Any, generator: RandomSource = None) -> torch.Tensor:
        image = decode_image(
            value,
            draft_size=getattr(self.transform, "draft_size", None),
            min_size=self.min_size,
            token=self.token,
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
