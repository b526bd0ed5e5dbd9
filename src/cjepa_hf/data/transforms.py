"""Image transforms in PIL + torch: the ImageNet normalisation constants, the padding rule, RandomResizedCrop, and the pretraining and evaluation transforms.

Augmentation is the only one of I-JEPA (Assran et al., CVPR 2023, Appendix A), which C-JEPA
(Mo & Tong, NeurIPS 2024) keeps: RandomResizedCrop with scale (0.3, 1.0) and aspect ratio
(3/4, 4/3), then ImageNet normalisation; no flip, no colour jitter. Written with PIL and
torch only, because torchvision cannot be installed beside the CPU build of torch here.

Padding rule (`auto_pad_to`, the only one): Fashion-MNIST's 28 x 28 images are padded to the
model's image size, not upscaled, when that adds at most one patch on each side, and a
padded image is then evaluated as is (`crop_pct_for_padding`: no resize, no crop).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from PIL import Image

from ..configuration_cjepa import IMAGENET_MEAN, IMAGENET_STD
from .fashion_mnist import is_fashion_mnist

FASHION_MNIST_SIZE = 28

_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}

RandomSource = torch.Generator | random.Random | None


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
