"""The image processor of a C-JEPA model: the evaluation preprocessing (resize, centre
crop, ImageNet mean/std) as a transformers image processor, saved beside every model.

Remote code (see `modeling_cjepa.REMOTE_CODE_FILES`): `save_pretrained` writes it, so
this file imports only `configuration_cjepa` from the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .configuration_cjepa import IMAGENET_MEAN, IMAGENET_STD, CJEPAConfig


def normalize_pixels(
    pixel_values: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    memory_format: torch.memory_format = torch.preserve_format,
) -> torch.Tensor:
    """uint8 (..., C, H, W) pixels in 0..255 -> float32 (x / 255 - mean) / std, on their device.

    The one normalisation rule of the package: the image processor's rescale (1/255) and
    normalise, as one multiply and one add per element, x * (1 / (255 std)) + (-mean / std),
    in float32. Data workers (`cjepa_hf.data.NormalizeToTensor`) and the model (a uint8 batch
    given to `CJEPAModel` or `CJEPAForPreTraining`) both call it, so a batch normalised on
    the GPU equals the one normalised in a worker. `memory_format` of the result (default:
    that of the input, e.g. channels_last batches stay channels_last)."""
    if pixel_values.dtype != torch.uint8:
        raise ValueError(f"normalize_pixels takes uint8 pixels (0..255), got {pixel_values.dtype}")
    channels = pixel_values.shape[-3] if pixel_values.dim() >= 3 else None
    if len(mean) != len(std) or any(s <= 0 for s in std) or channels != len(mean):
        raise ValueError(
            f"mean and std must have one entry per channel and std > 0, got mean={tuple(mean)}, std={tuple(std)} "
            f"for pixels of shape {tuple(pixel_values.shape)} (channels on dim -3)"
        )
    scale, shift = _coefficients(pixel_values.device, tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return pixel_values.to(torch.float32, memory_format=memory_format).mul_(scale).add_(shift)


_COEFFICIENTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _coefficients(device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 1, 1) float32 scale and shift on `device`, made once per device (no copy to the GPU per step)."""
    key = (device, mean, std)
    if key not in _COEFFICIENTS:
        scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(-1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(-1, 1, 1)
        _COEFFICIENTS[key] = (scale.to(device), shift.to(device))
    return _COEFFICIENTS[key]


def build_image_processor(config: CJEPAConfig, crop_pct: float = 0.875, resize: bool = True):
    """The evaluation preprocessing as a transformers image processor: resize the shorter
    side to floor(image_size / crop_pct) (bicubic, as `cjepa_hf.data.EvalTransform`),
    center-crop image_size, ImageNet mean/std. `resize=False` only center-crops, which pads
    a smaller image with black, centred (Fashion-MNIST 28 -> 32)."""
    from transformers import BitImageProcessorPil
    from transformers.image_utils import PILImageResampling

    return BitImageProcessorPil(
        do_resize=resize,
        size={"shortest_edge": int(config.image_size / crop_pct)},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": config.image_size, "width": config.image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


__all__ = ["build_image_processor", "normalize_pixels"]
