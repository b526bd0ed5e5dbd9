"""uint8 training batches: the worker ships uint8 crops, the model normalises them once on its
device (`processing_cjepa.normalize_pixels`), with the float path's crop boxes and pixels."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cjepa_hf import data
from cjepa_hf.masking import MaskCollator
from cjepa_hf.processing_cjepa import normalize_pixels

MEAN = torch.tensor(data.IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(data.IMAGENET_STD).view(3, 1, 1)
ONE_LEVEL = 1 / 255 + 1e-5  # one grey level in 0..1 units, plus float32 rounding


def noise(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """The worst case for a resampler: independent pixels."""
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def to_unit(normalised: torch.Tensor) -> torch.Tensor:
    """Normalised (3, H, W) -> 0..1."""
    return normalised * STD + MEAN


def record_boxes(monkeypatch) -> list:
    boxes = []
    get_params = data.RandomResizedCrop.get_params

    def spy(self, width, height, generator=None):
        box = get_params(self, width, height, generator)
        boxes.append(box)
        return box

    monkeypatch.setattr(data.RandomResizedCrop, "get_params", spy)
    return boxes


@pytest.mark.parametrize("size", [224, 32])
def test_the_uint8_path_draws_the_float_paths_crop_boxes_and_pixels(monkeypatch, size):
    """Same boxes for the same seed; after normalisation, the pixels within one grey level of
    the float path (rarely two) except the outermost ring of a downscaled crop (PIL's box resize reads just
    past the box there; the ring is within one level of PIL's crop-then-resize, torchvision's
    RandomResizedCrop); upscaled crops are PIL's exact pixels."""
    boxes = record_boxes(monkeypatch)
    rng = np.random.default_rng(0)
    float_path, uint8_path = data.PretrainTransform(size), data.PretrainTransform(size, output="uint8")
    ring_differs = False
    for seed in range(12):
        image = noise(rng, int(rng.integers(size, 2 * size + 200)), int(rng.integers(size, 2 * size + 200)))
        expected = float_path(image, torch.Generator().manual_seed(seed))
        pixels = uint8_path(image, torch.Generator().manual_seed(seed))
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, size, size)
        assert boxes[-1] == boxes[-2]
        left, top, width, height = boxes[-1]
        got = normalize_pixels(pixels)
        diff = (to_unit(got) - to_unit(expected)).abs()
        if min(width, height) >= size:  # downscaled: torch's uint8 kernel
            # Two separable passes, each rounding its fixed-point sum its own way: one grey level,
            # very rarely two (1 pixel of 400 crops of the photos in docs/PERFORMANCE.md).
            interior = diff[:, 1:-1, 1:-1]
            assert interior.max() <= 2 * ONE_LEVEL and (interior > ONE_LEVEL).float().mean() < 1e-4, (seed, boxes[-1])
            reference = image.crop((left, top, left + width, top + height)).resize((size, size), Image.Resampling.BILINEAR)
            reference = torch.from_numpy(np.array(reference)).permute(2, 0, 1).int()
            assert (pixels.int() - reference).abs().max() <= 2, (seed, boxes[-1])
            ring_differs |= bool(diff.max() > ONE_LEVEL)
        else:  # upscaled in at least one direction: PIL, exactly the float path
            assert torch.equal(got, expected), (seed, boxes[-1])
    assert len(set(boxes)) == 12  # 12 different crops were compared, two paths each
    if size == 224:
        # the fast kernel did run (on noise PIL's box resize differs on the ring)
        assert ring_differs


def test_normalize_pixels_is_the_worker_normalisation_exactly_and_checks_its_input():
    rng = np.random.default_rng(2)
    image = noise(rng, 50, 40)
    pixels = data.pil_to_tensor(image)
    worker = data.NormalizeToTensor(data.IMAGENET_MEAN, data.IMAGENET_STD)(image)
    assert worker.is_contiguous() and worker.dtype == torch.float32
    assert torch.equal(normalize_pixels(pixels), worker)
    torch.testing.assert_close(worker, (pixels.float() / 255 - MEAN) / STD, atol=1e-6, rtol=0)
    batch = torch.stack([pixels.permute(1, 2, 0)] * 2).permute(0, 3, 1, 2)  # channels_last (B, C, H, W)
    assert normalize_pixels(batch).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="uint8"):
        normalize_pixels(worker)
    with pytest.raises(ValueError, match="one entry per channel"):
        normalize_pixels(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))


def test_eval_uint8_output_is_the_image_processors_input_before_normalisation(tiny_config):
    """The image processor's features are unchanged: its output equals EvalTransform's float
    path, and EvalTransform(output='uint8') normalised by the model's rule equals both. (A
    40x36 image: its shorter side is already floor(32 / 0.875) = 36, so the comparison does not
    hinge on how each rounds the longer side of a resize.)"""
    from cjepa_hf import CJEPAModel, build_image_processor

    rng = np.random.default_rng(3)
    image = noise(rng, 40, 36)
    processor = build_image_processor(tiny_config)
    processed = processor(image, return_tensors="pt")["pixel_values"][0]
    float_path = data.EvalTransform(tiny_config.image_size)(image)
    uint8_path = data.EvalTransform(tiny_config.image_size, output="uint8")(image)
    assert uint8_path.dtype == torch.uint8
    assert torch.equal(normalize_pixels(uint8_path), float_path)
    torch.testing.assert_close(float_path, processed, atol=1e-5, rtol=0)
    model = CJEPAModel(tiny_config).eval()
    with torch.no_grad():
        from_uint8 = model(uint8_path[None]).pooler_output
        from_processor = model(processed[None]).pooler_output
    torch.testing.assert_close(from_uint8, from_processor, atol=1e-5, rtol=0)


def test_the_pretraining_model_normalises_a_uint8_batch_once_and_matches_the_float_batch(tiny_config, monkeypatch):
    import cjepa_hf.modeling_cjepa as modeling
    from cjepa_hf import CJEPAForPreTraining

    rng = np.random.default_rng(4)
    images = [noise(rng, int(rng.integers(32, 90)), int(rng.integers(32, 90))) for _ in range(6)]
    transform = data.PretrainTransform(tiny_config.image_size, output="uint8")
    uint8 = [{"pixel_values": transform(im, torch.Generator().manual_seed(i))} for i, im in enumerate(images)]
    floats = [{"pixel_values": normalize_pixels(ex["pixel_values"])} for ex in uint8]
    batch_uint8 = MaskCollator(tiny_config, seed=0)(uint8)
    batch_float = MaskCollator(tiny_config, seed=0)(floats)
    assert batch_uint8["pixel_values"].dtype == torch.uint8 and batch_float["pixel_values"].dtype == torch.float32
    calls = []

    def counting(pixels, *args, **kwargs):
        calls.append(pixels.shape)
        return normalize_pixels(pixels, *args, **kwargs)

    monkeypatch.setattr(modeling, "normalize_pixels", counting)
    torch.manual_seed(0)
    model = CJEPAForPreTraining(tiny_config)
    keys = ("pixel_values", "context_indices", "target_indices")
    loss_uint8 = model(**{k: batch_uint8[k] for k in keys}).loss
    assert len(calls) == 1  # once per batch, for both encoders
    loss_float = model(**{k: batch_float[k] for k in keys}).loss
    assert len(calls) == 1  # floats pass through
    assert torch.equal(loss_uint8, loss_float)


def test_the_collator_takes_uint8_or_floats_only():
    from cjepa_hf import CJEPAConfig

    config = CJEPAConfig(image_size=32, patch_size=4, min_keep=4)
    collator = MaskCollator(config)
    batch = collator([{"pixel_values": torch.zeros(3, 32, 32, dtype=torch.uint8)}] * 2)
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="uint8.*int64"):
        collator([{"pixel_values": torch.zeros(3, 32, 32, dtype=torch.int64)}] * 2)


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_the_training_stream_ships_uint8_by_default_with_the_float_streams_crops(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    for i in range(6):
        (folder / f"{i}.jpg").write_bytes(jpeg(noise(rng, int(rng.integers(40, 120)), int(rng.integers(40, 120)))))
    kwargs = dict(image_size=32, patch_size=4, shuffle_buffer=4, seed=3)
    default = list(data.build_pretrain_dataset(str(tmp_path / "images"), **kwargs))
    floats = list(data.build_pretrain_dataset(str(tmp_path / "images"), output="float32", **kwargs))
    assert len(default) == len(floats) == 6
    for a, b in zip(default, floats):
        assert a["pixel_values"].dtype == torch.uint8 and b["pixel_values"].dtype == torch.float32
        # same record, same crop: within a grey level (rarely two) inside the ring, exact where upscaled
        diff = (to_unit(normalize_pixels(a["pixel_values"])) - to_unit(b["pixel_values"])).abs()
        assert diff[:, 1:-1, 1:-1].max() <= 2 * ONE_LEVEL
    evaluation = next(iter(data.build_pretrain_dataset(str(tmp_path / "images"), train=False, image_size=32, patch_size=4)))
    assert evaluation["pixel_values"].dtype == torch.float32  # k-NN monitor and features take normalised floats


def test_a_bad_output_is_refused_before_the_source_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"output must be one of \('float32', 'uint8'\).*'int8'"):
        data.build_pretrain_dataset(str(tmp_path / "does-not-exist"), image_size=32, patch_size=4, output="int8")
    with pytest.raises(ValueError, match="output must be one of"):
        data.PretrainTransform(32, output="float16")
    with pytest.raises(ValueError, match="use output='float32' for other constants"):
        data.EvalTransform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output="uint8")
    with pytest.raises(ValueError, match="bilinear"):
        data.resized_crop_uint8(noise(np.random.default_rng(0), 40, 40), (0, 0, 40, 40), 32, "bicubic")
    with pytest.raises(ValueError, match="does not lie inside"):
        data.resized_crop_uint8(noise(np.random.default_rng(0), 40, 40), (10, 0, 40, 40), 32)


def test_the_data_benchmark_times_both_paths_of_the_library_in_one_run(tmp_path):
    from cjepa_hf.bench import pipeline

    files = pipeline.write_images(tmp_path / "jpegs", 4, (120, 90), seed=0)
    source = pipeline.write_path_source(files, tmp_path / "stream", rows=6000, num_shards=2)  # more than 0.3 CPU s reads
    out = pipeline.whole_pipeline(source, image_size=128, batch_size=8, min_seconds=0.3, rounds=1)
    assert out["pipeline_images_per_s_per_core"] > 0 and out["pipeline_baseline_images_per_s_per_core"] > 0
    assert out["pipeline_speedup"] == pytest.approx(out["pipeline_images_per_s_per_core"] / out["pipeline_baseline_images_per_s_per_core"])
    assert out["cores_for_5000_images_per_s"] == int(np.ceil(5000 / out["pipeline_images_per_s_per_core"]))
    assert out["verdict_16_cores"].startswith("16 cores (15 workers")
    assert out["pin_mode"].startswith("copy") if not torch.cuda.is_available() else out["pin_mode"] == "pin_memory"
