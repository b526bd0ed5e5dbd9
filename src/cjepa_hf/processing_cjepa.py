"""The image processor of a C-JEPA model: the evaluation preprocessing (resize, centre
crop, ImageNet mean/std) as a transformers image processor, saved beside every model.

Remote code (see `modeling_cjepa.REMOTE_CODE_FILES`): `save_pretrained` writes it, so
this file imports only `configuration_cjepa` from the package.
"""

from __future__ import annotations

from .configuration_cjepa import IMAGENET_MEAN, IMAGENET_STD, CJEPAConfig


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


__all__ = ["build_image_processor"]
