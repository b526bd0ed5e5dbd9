#!/usr/bin/env python
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

from cjepa_hf.bench.pipeline import main

if __name__ == "__main__":
    main()
