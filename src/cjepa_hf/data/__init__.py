"""Image data for C-JEPA pretraining and evaluation, in stages: sources, decoding and bad records, transforms, the training stream, Fashion-MNIST.

- `sources`: `load_image_source` (Hub id, imagefolder, parquet, arrow, webdataset tar,
  `save_to_disk` folder, Fashion-MNIST) -> undecoded records;
- `decoding`: `decode_image`, `to_rgb`, `DecodeTransform`, `BadRecord`, `BadRecordCounter`
  and the process-wide `BAD_RECORDS`, the `max_image_pixels` cap;
- `transforms`: `IMAGENET_MEAN` / `IMAGENET_STD`, the padding rule `auto_pad_to`,
  `RandomResizedCrop`, `PretrainTransform`, `EvalTransform` (float32 or uint8 `OUTPUTS`),
  `pil_to_tensor`, `resized_crop_uint8`, and `normalize_pixels` (the normalisation rule, from
  `cjepa_hf.processing_cjepa`);
- `stream`: `PretrainImageStream` (decoding in the DataLoader workers, sharding, `resume_at`,
  ``num_skipped``) and `build_pretrain_dataset`;
- `fashion_mnist`: the IDX reader, the PNG encoder, `load_fashion_mnist`,
  `fashion_mnist_root()` ($CJEPA_FASHION_MNIST_DIR) and `is_fashion_mnist`.

Every name is importable from `cjepa_hf.data` itself.
"""

from .decoding import (
    BAD_RECORDS,
    DEFAULT_MAX_IMAGE_PIXELS,
    BadRecord,
    BadRecordCounter,
    DecodeTransform,
    decode_image,
    to_rgb,
)
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_HUB_ID,
    FASHION_MNIST_NAMES,
    FASHION_MNIST_ROOT,
    fashion_mnist_dir,
    fashion_mnist_root,
    is_fashion_mnist,
    load_fashion_mnist,
)
from .sources import DEFAULT_HUB_DATASET, load_image_source
from .stream import PretrainImageStream, build_pretrain_dataset
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OUTPUTS,
    EvalTransform,
    NormalizeToTensor,
    PretrainTransform,
    RandomResizedCrop,
    RandomSource,
    auto_pad_to,
    crop_pct_for_padding,
    normalize_pixels,
    pad_to_size,
    pil_to_tensor,
    random_resized_crop_params,
    resized_crop_uint8,
)

__all__ = [
    "BAD_RECORDS",
    "DEFAULT_HUB_DATASET",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_HUB_ID",
    "FASHION_MNIST_NAMES",
    "FASHION_MNIST_ROOT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OUTPUTS",
    "BadRecord",
    "BadRecordCounter",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DecodeTransform",
    "EvalTransform",
    "NormalizeToTensor",
    "PretrainImageStream",
    "PretrainTransform",
    "RandomResizedCrop",
    "RandomSource",
    "auto_pad_to",
    "build_pretrain_dataset",
    "crop_pct_for_padding",
    "decode_image",
    "fashion_mnist_dir",
    "fashion_mnist_root",
    "is_fashion_mnist",
    "load_fashion_mnist",
    "load_image_source",
    "normalize_pixels",
    "pad_to_size",
    "pil_to_tensor",
    "random_resized_crop_params",
    "resized_crop_uint8",
    "to_rgb",
]
