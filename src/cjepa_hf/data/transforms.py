"""Image transforms in PIL + torch: the ImageNet normalisation constants, the padding rule, RandomResizedCrop, and the pretraining and evaluation transforms.

Augmentation is the only one of I-JEPA (Assran et al., CVPR 2023, Appendix A), which C-JEPA
(Mo & Tong, NeurIPS 2024) keeps: RandomResizedCrop with scale (0.3, 1.0) and aspect ratio
(3/4, 4/3), then ImageNet normalisation; no flip, no colour jitter. Written with PIL and
torch only, because torchvision cannot be installed beside the CPU build of torch here.

Padding rule (`auto_pad_to`, the only one): Fashion-MNIST's 28 x 28 images are padded to the
model's image size, not upscaled, when that adds at most one patch on each side, and a
padded image is then evaluated as is (`crop_pct_for_padding`: no resize, no crop).

Two outputs (`output=`): "float32", normalised in the worker (`NormalizeToTensor`), and
"uint8", the pixels as they are, (C, H, W), normalised later on the device by the model
(`cjepa_hf.processing_cjepa.normalize_pixels`, the one normalisation rule, which the worker's
`NormalizeToTensor` calls too). A uint8 image is a quarter of the bytes to collate, pin and
copy. The pretraining crop in uint8 (`resized_crop_uint8`) resizes with torch's antialiased
uint8 kernel, about twice as cheap as PIL's; see `PretrainTransform` for how its pixels
compare with the float path's.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..configuration_cjepa import IMAGENET_MEAN, IMAGENET_STD
from ..processing_cjepa import normalize_pixels
from .fashion_mnist import is_fashion_mnist

FASHION_MNIST_SIZE = 28

_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}

RandomSource = torch.Generator | random.Random | None

OUTPUTS = ("float32", "uint8")


def _check_output(output: str, mean: Sequence[float], std: Sequence[float]) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "uint8" and (tuple(mean), tuple(std)) != (IMAGENET_MEAN, IMAGENET_STD):
        # The model normalises uint8 batches with the image processor's constants only.
        raise ValueError(
            f"output='uint8' is normalised by the model with the ImageNet mean/std {IMAGENET_MEAN}/{IMAGENET_STD}, "
            f"got mean={tuple(mean)}, std={tuple(std)}: use output='float32' for other constants"
        )
    return output


# ----------------------------------------------------------------------------- padding
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


def auto_pad_to(source: str | None, image_size: int, patch_size: int) -> int | None:
    """The size to pad `source`'s images to, or None to resize them: Fashion-MNIST (28 x 28,
    `is_fashion_mnist`) is padded to `image_size` (not upscaled) when that adds at most one
    patch on each side. `source` is a pretraining source or an evaluation dataset name."""
    if is_fashion_mnist(source) and 0 <= image_size - FASHION_MNIST_SIZE <= 2 * patch_size:
        return image_size
    return None


def crop_pct_for_padding(image_size: int, pad_to: int | None, crop_pct: float) -> float:
    """The `EvalTransform` crop_pct for images padded to `pad_to`: 1 (no resize, no crop) when
    the padding already gives the model's `image_size`, else `crop_pct`."""
    return 1.0 if pad_to == image_size else crop_pct


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


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit PIL image -> uint8 (C, H, W) tensor: a channel-first view of one HWC copy of
    the pixels (channels_last strides; `.contiguous()` makes it C, H, W in memory)."""
    width, height = image.size
    channels = len(image.getbands())
    # One copy out of PIL into a writable buffer (torch refuses to wrap read-only memory silently).
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, channels).permute(2, 0, 1)


class NormalizeToTensor:
    """uint8 HWC RGB PIL image -> float32 (C, H, W) tensor, (x / 255 - mean) / std
    (`cjepa_hf.processing_cjepa.normalize_pixels`, contiguous)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must have the same length and std > 0, got mean={mean}, std={std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return normalize_pixels(pil_to_tensor(image), self.mean, self.std, memory_format=torch.contiguous_format)


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

    def resize(self, image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
        """The crop `box` = (left, top, crop_width, crop_height) of `image`, resized to size x size."""
        left, top, crop_w, crop_h = box
        return image.resize((self.size, self.size), self._resample, box=(left, top, left + crop_w, top + crop_h))

    def __call__(self, image: Image.Image, generator: RandomSource = None) -> Image.Image:
        return self.resize(image, self.get_params(*image.size, generator=generator))


_TENSOR_RESAMPLING = ("bilinear",)  # torch's uint8 bicubic is not PIL's (up to 24 grey levels apart)


def _pixels_hwc(image: Image.Image) -> torch.Tensor:
    """A read-only uint8 (H, W, C) tensor of an RGB or L image's pixels (one copy, by PIL), to be
    read only. (A copy-free view through Pillow's Arrow export was measured slower: its RGBX
    layout makes the crop's copy a strided gather.)"""
    with warnings.catch_warnings():
        # np.asarray(PIL image) is read-only; it is only read (the crop is copied from it).
        warnings.simplefilter("ignore", UserWarning)
        array = torch.from_numpy(np.asarray(image))
    return array.unsqueeze(-1) if array.dim() == 2 else array


def resized_crop_uint8(image: Image.Image, box: tuple[int, int, int, int], size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Crop `box` = (left, top, crop_width, crop_height) out of an 8-bit PIL image and resize it
    to `size` x `size` with torch's antialiased bilinear uint8 kernel
    (`F.interpolate(antialias=True)`): uint8 (C, size, size), channels_last strides (HWC in memory).

    This is torchvision's `resized_crop` (crop, then resize the crop). Downscaling, its pixels
    are those of PIL's `image.crop(box).resize(...)` within one grey level (very rarely two: the
    two kernels round their fixed-point sums differently), and those of PIL's `resize(box=...)`
    (the float path, `RandomResizedCrop`) likewise except on the outermost output pixels, where
    PIL's filter reads source pixels just outside the box.
    Upscaling, PIL's box resize reads a whole source pixel past the box, which spreads over
    several output pixels: `PretrainTransform` uses PIL there. About 2x cheaper than PIL's
    box resize on one core, its copies included (docs/PERFORMANCE.md)."""
    if interpolation not in _TENSOR_RESAMPLING:
        raise ValueError(f"the uint8 crop resizes with interpolation in {_TENSOR_RESAMPLING}, got {interpolation!r}")
    left, top, crop_w, crop_h = (int(v) for v in box)
    width, height = image.size
    if crop_w < 1 or crop_h < 1 or left < 0 or top < 0 or left + crop_w > width or top + crop_h > height:
        raise ValueError(f"crop box (left, top, width, height)={box} does not lie inside the {width}x{height} image")
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"the uint8 crop takes an RGB or L image, got mode {image.mode}")
    array = _pixels_hwc(image)
    crop = array[top : top + crop_h, left : left + crop_w].permute(2, 0, 1).unsqueeze(0)  # (1, C, h, w) view
    # The kernel's fast path wants channels_last contiguous input: one copy of the crop only.
    crop = crop.contiguous(memory_format=torch.channels_last)
    if (crop_h, crop_w) == (size, size):
        return crop[0]
    return F.interpolate(crop, size=(size, size), mode=interpolation, antialias=True, align_corners=False)[0]


class PretrainTransform:
    """Training augmentation of the paper: RandomResizedCrop(scale=(0.3, 1)) + ImageNet
    normalisation. RGB PIL image -> float32 (3, size, size), or with ``output="uint8"`` the
    crop's uint8 (3, size, size) pixels, to be normalised on the device by the model.

    Bilinear by default, as torchvision's RandomResizedCrop in the I-JEPA reference code
    (PIL's bilinear antialiases when downscaling); it is also ~2x faster than bicubic.

    Both outputs draw the same crop box from `generator` (`RandomResizedCrop.get_params`).
    "float32" resizes with PIL's `resize(box=...)` and normalises in the worker (the path
    before uint8 batches, kept for callers that want normalised tensors). "uint8" returns the
    same pixels before normalisation, except that a bilinear crop that is downscaled in both
    directions (the usual case at 224 px) is resized by `resized_crop_uint8`, torch's
    antialiased uint8 kernel, ~2x cheaper: within one grey level of the float path (very
    rarely two) except on the outermost pixels, where PIL's box resize reads just past the
    box (there it is within one grey level of PIL's crop-then-resize, torchvision's
    RandomResizedCrop). Upscaled crops (Fashion-MNIST at 32 px) and other interpolations keep
    PIL's exact pixels."""

    def __init__(
        self,
        image_size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        output: str = "float32",
    ) -> None:
        self.image_size = int(image_size)
        self.output = _check_output(output, mean, std)
        self.crop = RandomResizedCrop(image_size, scale, ratio, interpolation)
        self.normalize = NormalizeToTensor(mean, std)

    @property
    def draft_size(self) -> int:
        return self.crop.draft_size

    def __call__(self, image: Image.Image, generator: RandomSource = None) -> torch.Tensor:
        box = self.crop.get_params(*image.size, generator=generator)
        if self.output == "float32":
            return self.normalize(self.crop.resize(image, box))
        size = self.image_size
        if self.crop.interpolation in _TENSOR_RESAMPLING and min(box[2:]) >= size and image.mode in ("RGB", "L"):
            return resized_crop_uint8(image, box, size, self.crop.interpolation)
        return pil_to_tensor(self.crop.resize(image, box))


class EvalTransform:
    """Evaluation preprocessing: shorter side resized to `image_size / crop_pct`, centre crop
    `image_size`, ImageNet normalisation (float32 (C, S, S)); ``output="uint8"`` stops before
    the normalisation (uint8 (C, S, S), the same pixels). Deterministic; `generator` is
    accepted and ignored so both transforms share one call signature."""

    def __init__(
        self,
        image_size: int,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        output: str = "float32",
    ) -> None:
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must lie in (0, 1], got {crop_pct}")
        self.image_size = int(image_size)
        self.crop_pct = float(crop_pct)
        self.output = _check_output(output, mean, std)
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
        return pil_to_tensor(image) if self.output == "uint8" else self.normalize(image)
