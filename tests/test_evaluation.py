"""Evaluation: offline accuracy metric, fine-tuning script, linear probe, k-NN, feature extraction.

Everything runs on tiny models (width 32, depth 2, 32 px) and toy images whose class is a
colour or a bright quadrant, offline (HF_HUB_OFFLINE=1 from conftest)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}


def load_script(name: str):
    """A script of scripts/ as a module (they are not a package)."""
    path = os.path.join(REPO, "scripts", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: with 2 threads on 2 shared cores, OpenMP hand-offs cost ~50x the maths.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _colour_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> Image.Image:
    base = np.array(colour, dtype=np.float32) * rng.uniform(0.7, 1.2)
    pixels = base + rng.normal(0, 25, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _write_folder(root: str, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            _colour_image(colour, rng).save(os.path.join(root, name, f"{i}.png"))


@pytest.fixture(scope="module")
def toy_folders(tmp_path_factory):
    """train/ (10 PNGs per class) and val/ (6 per class): 3 classes, one colour each."""
    root = tmp_path_factory.mktemp("toy-images")
    _write_folder(str(root / "train"), 10, seed=0)
    _write_folder(str(root / "val"), 6, seed=1)
    return str(root / "train"), str(root / "val")


@pytest.fixture(scope="module")
def pretraining_dir(tmp_path_factory):
    """A saved tiny CJEPAForPreTraining whose target encoder differs from its context encoder."""
    from cjepa_hf import CJEPAConfig, CJEPAForPreTraining

    torch.manual_seed(0)
    model = CJEPAForPreTraining(CJEPAConfig(**TINY))
    with torch.no_grad():
        for p in model.target_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = str(tmp_path_factory.mktemp("pretraining"))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder_dir(pretraining_dir, tmp_path_factory):
    """The pretraining checkpoint's target encoder exported as a CJEPAModel folder."""
    from cjepa_hf import CJEPAForPreTraining

    folder = str(tmp_path_factory.mktemp("encoder"))
    CJEPAForPreTraining.from_pretrained(pretraining_dir).target_encoder.save_pretrained(folder)
    return folder


def quadrant_images(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(4 * per_class, 3, 32, 32) noise images with one bright quadrant; the class is the quadrant."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(4):
        x = 0.5 * torch.randn(per_class, 3, 32, 32, generator=g)
        row, col = divmod(c, 2)
        x[:, :, 16 * row : 16 * (row + 1), 16 * col : 16 * (col + 1)] += 2.0
        images.append(x)
        labels.append(torch.full((per_class,), c))
    return torch.cat(images), torch.cat(labels)


# ============================================================================ metric


def test_shipped_accuracy_metric_loads_offline_and_matches_numpy():
    import evaluate

    from cjepa_hf.evaluation import ACCURACY_METRIC_PATH, NumpyAccuracy, load_accuracy_metric

    metric = evaluate.load(ACCURACY_METRIC_PATH)
    predictions, references = [0, 1, 2, 2, 1, 0, 0], [0, 1, 1, 2, 1, 2, 0]
    assert metric.compute(predictions=predictions, references=references) == pytest.approx({"accuracy": 5 / 7})
    assert NumpyAccuracy().compute(predictions=predictions, references=references) == pytest.approx({"accuracy": 5 / 7})
    # The Hub's "accuracy" cannot load offline: the shipped module takes over.
    fallback = load_accuracy_metric("accuracy")
    assert fallback.compute(predictions=[1, 1], references=[1, 0]) == pytest.approx({"accuracy": 0.5})


# ============================================================================ fine-tuning


def test_classifier_from_pretraining_checkpoint_starts_from_target_encoder(pretraining_dir):
    from transformers import AutoModel, AutoModelForImageClassification

    from cjepa_hf import CJEPAForPreTraining

    pretrained = CJEPAForPreTraining.from_pretrained(pretraining_dir)
    classifier = AutoModelForImageClassification.from_pretrained(pretraining_dir, num_labels=3)
    encoder = AutoModel.from_pretrained(pretraining_dir)
    target = pretrained.target_encoder.state_dict()
    for name, value in classifier.target_encoder.state_dict().items():
        assert torch.equal(value, target[name]), name
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, target[name]), name
    context = pretrained.context_encoder.state_dict()
    assert not torch.equal(target["layers.0.mlp.fc1.weight"], context["layers.0.mlp.fc1.weight"])


@pytest.mark.parametrize("start", ["pretraining checkpoint", "exported encoder"])
def test_finetune_script_on_image_folder_reports_offline_accuracy(start, pretraining_dir, encoder_dir, toy_folders, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForImageClassification

    from cjepa_hf.evaluation import ClassificationTransform, load_labelled_dataset, split_train_eval

    train_dir, _ = toy_folders
    base = pretraining_dir if start == "pretraining checkpoint" else encoder_dir
    out = str(tmp_path / "finetuned")
    finetune = load_script("finetune")
    results = finetune.main(
        [
            "--model_name_or_path",
            base,
            "--train_dir",
            train_dir,
            "--train_val_split",
            "0.2",
            "--output_dir",
            out,
            "--do_train",
            "--do_eval",
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "8",
            "--per_device_eval_batch_size",
            "16",
            "--learning_rate",
            "1e-3",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--use_cpu",
            "--seed",
            "0",
            "--disable_tqdm",
            "true",
            "--dataloader_num_workers",
            "0",
        ]
    )
    with open(os.path.join(out, "all_results.json")) as f:
        saved = json.load(f)
    assert saved["eval_accuracy"] == pytest.approx(results["eval_accuracy"])
    assert saved["base_model"] == base and saved["num_labels"] == 3
    assert saved["eval_split"] == "train[held-out 20%]" and saved["eval_samples"] == 6
    assert "train_loss" in saved and saved["train_runtime"] > 0

    # The reported accuracy is the saved model's accuracy on the held-out images.
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    assert os.path.exists(os.path.join(out, "preprocessor_config.json"))
    _, eval_ds, _ = split_train_eval(load_labelled_dataset(train_dir=train_dir), train_val_split=0.2, seed=0)
    transform = ClassificationTransform(32, train=False)
    pixels = torch.stack([transform(image) for image in eval_ds["image"]])
    with torch.no_grad():
        predictions = model(pixels).logits.argmax(1)
    assert (predictions == torch.tensor(eval_ds["label"])).float().mean().item() == pytest.approx(saved["eval_accuracy"])

    card = ModelCard.load(os.path.join(out, "README.md"))
    # A local folder is no Hub model: the card's base_model (a Hub link) is left out, not a path.
    assert card.data.base_model is None and f"[{base}]" not in card.text
    (result,) = card.data.eval_results
    assert result.metric_type == "accuracy" and result.metric_value == pytest.approx(saved["eval_accuracy"])
    assert 0.0 <= result.metric_value <= 1.0  # model-index accuracy is a fraction everywhere (cjepa_hf.hub)


# ============================================================================ linear probe


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_linear_probe_on_cached_features_beats_chance(suffix, tmp_path):
    from cjepa_hf import CJEPAConfig, CJEPAModel
    from cjepa_hf.evaluation import extract_features, train_linear_probe

    torch.manual_seed(0)
    model = CJEPAModel(CJEPAConfig(**TINY)).eval()
    train_images, train_labels = quadrant_images(30, seed=0)
    test_images, test_labels = quadrant_images(20, seed=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_images, train_labels), batch_size=32)
    cache = str(tmp_path / f"train{suffix}")
    train_x, train_y = extract_features(model, loader, cache_path=cache, cache_key={"model": "tiny"})
    assert os.path.exists(cache) and train_x.shape == (120, TINY["hidden_size"])
    # The second call reads the cache: the model is not touched (None would fail).
    cached_x, cached_y = extract_features(None, loader, cache_path=cache, cache_key={"model": "tiny"})
    assert torch.equal(cached_x, train_x) and torch.equal(cached_y, train_y)
    # Another key (another model): the stale cache is not used, and is replaced.
    torch.manual_seed(1)
    other = CJEPAModel(CJEPAConfig(**TINY)).eval()
    other_x, _ = extract_features(other, loader, cache_path=cache, cache_key={"model": "other"})
    assert not torch.allclose(other_x, train_x)
    assert torch.equal(extract_features(None, loader, cache_path=cache, cache_key={"model": "other"})[0], other_x)
    test_set = [{"pixel_values": image, "labels": label} for image, label in zip(test_images, test_labels)]
    test_x, test_y = extract_features(model, test_set, batch_size=32)  # a map-style dataset of dicts

    result = train_linear_probe(train_x, train_y, test_x, test_y, seed=0)
    assert result["accuracy"] > 0.75  # chance: 0.25
    assert result["num_train"] == 120 and result["num_holdout"] == 24 and result["num_eval"] == 80
    assert set(result["holdout_accuracy"]) == {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1"}
    # The returned classifier takes raw features (standardisation folded in).
    folded = (result["classifier"](test_x).argmax(1) == test_y).float().mean().item()
    assert folded == pytest.approx(result["accuracy"], abs=1e-6)


def test_weight_decay_is_chosen_without_the_evaluation_labels():
    from cjepa_hf.evaluation import train_linear_probe

    g = torch.Generator().manual_seed(0)
    centres = 1.5 * torch.randn(3, 16, generator=g)
    train_y = torch.arange(150) % 3
    train_x = centres[train_y] + torch.randn(150, 16, generator=g)
    val_y = torch.arange(60) % 3
    val_x = centres[val_y] + torch.randn(60, 16, generator=g)
    a = train_linear_probe(train_x, train_y, val_x, val_y, weight_decays=(1e-4, 1e-2, 1.0))
    b = train_linear_probe(train_x, train_y, val_x, val_y[torch.randperm(60, generator=g)], weight_decays=(1e-4, 1e-2, 1.0))
    assert a["weight_decay"] == b["weight_decay"] and a["holdout_accuracy"] == b["holdout_accuracy"]
    assert a["accuracy"] > 0.8 > b["accuracy"]
    with pytest.raises(ValueError, match="holdout_fraction"):
        train_linear_probe(train_x, train_y, val_x, val_y, holdout_fraction=1.0)

    adamw = train_linear_probe(train_x, train_y, val_x, val_y, weight_decays=(1e-4, 1e-2), optimizer="adamw", epochs=50, lr=0.05)
    assert adamw["optimizer"] == "adamw" and adamw["accuracy"] > 0.8


def test_linear_probe_script_on_image_folders(pretraining_dir, toy_folders, tmp_path):
    train_dir, val_dir = toy_folders
    probe = load_script("linear_probe")
    output = str(tmp_path / "probe.json")
    cache_dir = str(tmp_path / "features")
    argv = [
        "--model_name_or_path",
        pretraining_dir,
        "--train_dir",
        train_dir,
        "--validation_dir",
        val_dir,
        "--feature_cache_dir",
        cache_dir,
        "--output",
        output,
        "--batch_size",
        "16",
        "--knn_k",
        "5",
    ]
    result = probe.main(argv)
    with open(output) as f:
        saved = json.load(f)
    assert saved["eval_split"] == "validation" and saved["num_train"] == 30 and saved["num_eval"] == 18
    assert saved["linear_probe"]["accuracy"] == pytest.approx(result["linear_probe"]["accuracy"])
    assert saved["linear_probe"]["accuracy"] > 0.8  # 3 colours, chance 1/3
    assert saved["knn"]["dino"] > 0.8 and set(saved["knn"]) == {"dino", "majority"}
    assert sorted(os.listdir(cache_dir)) == ["eval-pretrained-last1-n18-seed0.pt", "train-pretrained-last1-n30-seed0.pt"]

    random_init = probe.main([*argv[:-6], "--random_init", "--last_n_layers", "2", "--knn_k", "5"])
    assert random_init["method"] == "random init" and random_init["feature_stats"]["dims"] == 2 * TINY["hidden_size"]
    pixels = probe.main(["--raw_pixels", "--image_size", "32", "--train_dir", train_dir, "--validation_dir", val_dir])
    assert pixels["feature_stats"]["dims"] == 3 * 32 * 32 and pixels["linear_probe"]["accuracy"] > 0.8


# ============================================================================ the model's own preprocessing


@pytest.fixture(scope="module")
def small_image_folders(tmp_path_factory):
    """train/ and val/ of 28 px images (3 colour classes): smaller than the model's 32 px."""
    root = tmp_path_factory.mktemp("small-images")
    for split, per_class, seed in (("train", 6, 0), ("val", 3, 1)):
        rng = np.random.default_rng(seed)
        for name, colour in COLOURS.items():
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(per_class):
                _colour_image(colour, rng, size=28).save(root / split / name / f"{i}.png")
    return str(root / "train"), str(root / "val")


@pytest.fixture(scope="module")
def padded_model_dir(pretraining_dir, tmp_path_factory):
    """The pretraining checkpoint with the padding processor a 28 -> 32 run saves."""
    import shutil

    from cjepa_hf import CJEPAConfig
    from cjepa_hf.modeling_cjepa import build_image_processor

    folder = tmp_path_factory.mktemp("padded-model") / "model"
    shutil.copytree(pretraining_dir, folder)
    build_image_processor(CJEPAConfig.from_pretrained(folder), resize=False).save_pretrained(folder)
    return str(folder)


def _reference_features(model_dir, images):
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**processor(images=[image.convert("RGB") for image in images], return_tensors="pt")).pooler_output


def test_linear_probe_uses_the_model_folders_processor_for_an_image_folder(padded_model_dir, small_image_folders, tmp_path):
    from cjepa_hf.evaluation import load_labelled_dataset

    train_dir, val_dir = small_image_folders
    probe = load_script("linear_probe")
    cache_dir = tmp_path / "features"
    probe.main(
        [
            "--model_name_or_path",
            padded_model_dir,
            "--train_dir",
            train_dir,
            "--validation_dir",
            val_dir,
            "--feature_cache_dir",
            str(cache_dir),
            "--batch_size",
            "8",
            "--knn_k",
            "3",
        ]
    )
    cached = torch.load(cache_dir / "eval-pretrained-last1-n9-seed0.pt", weights_only=True)["features"]
    images = load_labelled_dataset(train_dir=train_dir, validation_dir=val_dir)["validation"]["image"]
    assert images[0].size == (28, 28)
    # The same features as AutoImageProcessor + AutoModel of that folder: padded 28 -> 32, not resized.
    assert (cached - _reference_features(padded_model_dir, images)).abs().max() < 1e-5


def test_finetune_uses_the_model_folders_processor_for_an_image_folder(padded_model_dir, small_image_folders, tmp_path):
    from transformers import AutoConfig

    from cjepa_hf.evaluation import model_transforms

    train_dir, val_dir = small_image_folders
    config = AutoConfig.from_pretrained(padded_model_dir)
    image = _colour_image((200, 30, 30), np.random.default_rng(3), size=28)
    train_t, eval_t, processor = model_transforms(padded_model_dir, config, None)
    assert processor.do_resize is False and train_t.pad_to == 32
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(eval_t(image), expected) and expected.shape == (3, 32, 32)
    assert (expected[:, :2] == expected[:, :2, :1]).all()  # the padded border is one colour (black, normalised)

    out = tmp_path / "ft"
    load_script("finetune").main(
        [
            "--model_name_or_path",
            padded_model_dir,
            "--train_dir",
            train_dir,
            "--validation_dir",
            val_dir,
            "--output_dir",
            str(out),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "6",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--use_cpu",
            "--disable_tqdm",
            "true",
            "--dataloader_num_workers",
            "0",
        ]
    )
    saved = json.loads((out / "preprocessor_config.json").read_text())
    source = json.loads((Path(padded_model_dir) / "preprocessor_config.json").read_text())
    assert saved["do_resize"] is False and saved == source


def test_linear_probe_json_is_accepted_by_push_to_hub_results(pretraining_dir, toy_folders, tmp_path):
    from huggingface_hub import ModelCard

    train_dir, val_dir = toy_folders
    output = tmp_path / "probe.json"
    result = load_script("linear_probe").main(
        [
            "--model_name_or_path",
            pretraining_dir,
            "--train_dir",
            train_dir,
            "--validation_dir",
            val_dir,
            "--output",
            str(output),
            "--batch_size",
            "16",
            "--knn_k",
            "5",
        ]
    )
    rc = load_script("push_to_hub").main(
        [
            "--checkpoint",
            pretraining_dir,
            "--output",
            str(tmp_path / "release"),
            "--repo-id",
            "me/tiny",
            "--results",
            str(output),
            "--no-push",
        ]
    )
    assert rc == 0
    card = ModelCard.load(tmp_path / "release" / "README.md")
    got = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert got == {
        "linear probe top-1 accuracy": pytest.approx(result["linear_probe"]["accuracy"]),
        "k-NN top-1 accuracy (k=5, dino)": pytest.approx(result["knn"]["dino"]),
        "k-NN top-1 accuracy (k=5, majority)": pytest.approx(result["knn"]["majority"]),
    }
    assert all(0.0 <= v <= 1.0 for v in got.values())  # fractions, as everywhere in model-index
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}


# ============================================================================ k-NN


def test_knn_dino_weighting_and_majority_vote_differ_as_defined():
    from cjepa_hf.evaluation import knn_accuracy, knn_predict

    # One very close neighbour of class 1, two farther ones of class 0.
    train_x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6], [-1.0, 0.0]])
    train_y = torch.tensor([1, 0, 0, 2])
    test_x = torch.tensor([[1.0, 0.01]])
    assert knn_predict(train_x, train_y, test_x, k=3, weighting="majority").tolist() == [0]
    assert knn_predict(train_x, train_y, test_x, k=3, temperature=0.07, weighting="dino").tolist() == [1]
    # A very high temperature flattens the weights back to a majority vote.
    assert knn_predict(train_x, train_y, test_x, k=3, temperature=1e4, weighting="dino").tolist() == [0]
    # k larger than the training set is capped; cosine similarity ignores the norm.
    assert knn_predict(train_x, train_y, 5 * test_x, k=50, weighting="majority").tolist() == [0]

    g = torch.Generator().manual_seed(0)
    directions = torch.eye(8)[:4] * 3
    train_y = torch.arange(80) % 4
    test_y = torch.arange(40) % 4
    train_x = directions[train_y] + 0.3 * torch.randn(80, 8, generator=g)
    test_x = directions[test_y] + 0.3 * torch.randn(40, 8, generator=g)
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=20, temperature=0.07) == 1.0
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=20, weighting="majority") == 1.0
    with pytest.raises(ValueError, match="weighting"):
        knn_predict(train_x, train_y, test_x, weighting="mean")


# ============================================================================ feature extraction


def test_last_n_layers_features(tiny_config):
    from cjepa_hf import CJEPAModel
    from cjepa_hf.evaluation import encode

    torch.manual_seed(0)
    model = CJEPAModel(tiny_config).eval()
    x = torch.randn(3, 3, 32, 32)
    pooled = model(x).pooler_output
    assert torch.equal(encode(model, x, 1), pooled)
    both = encode(model, x, 2)
    assert both.shape == (3, 2 * tiny_config.hidden_size)
    torch.testing.assert_close(both[:, tiny_config.hidden_size :], pooled)  # the last block comes last
    hidden = model(x, output_hidden_states=True).hidden_states
    torch.testing.assert_close(both[:, : tiny_config.hidden_size], model.layernorm(hidden[-2]).mean(1))
    with pytest.raises(ValueError, match="last_n_layers"):
        encode(model, x, 3)


def test_pipeline_and_auto_classes_equal_pooler_output(pretraining_dir, tmp_path):
    from transformers import AutoImageProcessor, AutoModel, pipeline

    from cjepa_hf import CJEPAModel
    from cjepa_hf.evaluation import ClassificationTransform, eval_image_processor

    rng = np.random.default_rng(0)
    photos = [_colour_image(c, rng, size=40) for c in COLOURS.values()]  # resized + centre-cropped
    digits = [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L") for _ in range(2)]  # padded

    encoder = CJEPAModel.from_pretrained(pretraining_dir)
    folder = str(tmp_path / "encoder")
    encoder.save_pretrained(folder)  # writes the resize + centre-crop preprocessor
    padded_folder = str(tmp_path / "encoder-padded")
    encoder.save_pretrained(padded_folder)
    eval_image_processor(encoder.config, pad_to=32).save_pretrained(padded_folder)

    for path, images in ((folder, photos), (padded_folder, digits)):
        model = AutoModel.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path)
        with torch.no_grad():
            expected = model(**processor(images, return_tensors="pt")).pooler_output
        extractor = pipeline("image-feature-extraction", model=path)
        features = torch.cat(extractor(images, pool=True, return_tensors=True))
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)

    # The padding processor is exactly the probes' / fine-tuning's Fashion-MNIST evaluation transform.
    transform = ClassificationTransform(32, train=False, pad_to=32)
    processor = AutoImageProcessor.from_pretrained(padded_folder)
    torch.testing.assert_close(
        processor(digits, return_tensors="pt")["pixel_values"],
        torch.stack([transform(d) for d in digits]),
        atol=1e-5,
        rtol=0,
    )


def test_saved_processor_equals_eval_transform_at_224():
    from cjepa_hf import CJEPAConfig, build_image_processor
    from cjepa_hf.evaluation import ClassificationTransform

    # Square, so that both centre crops have an even margin: for odd margins transformers' crop
    # rounds the offset down and EvalTransform (like torchvision) rounds half to even.
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    processor = build_image_processor(CJEPAConfig(image_size=224))
    torch.testing.assert_close(
        processor(image, return_tensors="pt")["pixel_values"][0],
        ClassificationTransform(224, train=False)(image),
        atol=1e-4,
        rtol=0,
    )


# ============================================================================ experiment bookkeeping


def test_experiment_summary_and_table():
    experiment = load_script("experiment_fmnist")

    def run(method, seed, lp, knn):
        return {
            "method": method,
            "seed": seed,
            "linear_probe": {"accuracy": lp},
            "knn": {"dino": knn, "majority": knn},
            "feature_stats": {"feature_std": 0.01, "effective_rank": 2.0, "effective_rank_centered": 9.0, "dims": 96},
        }

    runs = [run("cjepa", 0, 0.80, 0.70), run("cjepa", 1, 0.82, 0.72), run("raw_pixels", 0, 0.81, 0.78)]
    summary = experiment.summarize(runs)
    assert summary["cjepa"]["linear_probe"]["mean"] == pytest.approx(0.81)
    assert summary["cjepa"]["linear_probe"]["std"] == pytest.approx(np.std([0.80, 0.82], ddof=1))
    assert summary["raw_pixels"]["linear_probe"]["std"] is None
    text = experiment.table(summary)
    assert "| C-JEPA (inv + var + cov) | 2 | 81.00 ± 1.41 | 71.00 ± 1.41 |" in text
    assert "| raw pixels | 1 | 81.00 | 78.00 |" in text
    with pytest.raises(ValueError, match="unknown methods"):
        experiment.ExperimentArguments(methods=["vicreg"])


def test_experiment_methods_with_their_own_beta():
    experiment = load_script("experiment_fmnist")
    args = experiment.ExperimentArguments(methods=["cjepa", "ijepa", "cjepa:0.05"])
    assert experiment.model_config("cjepa", args).vicreg_weight == 0.001
    assert experiment.model_config("ijepa", args).vicreg_weight == 0.0
    strong = experiment.model_config("cjepa:0.05", args)
    assert (strong.vicreg_weight, strong.vicreg_sim_coeff) == (0.05, 25.0)
    varcov = experiment.model_config("varcov:0.2", args)
    assert (varcov.vicreg_weight, varcov.vicreg_sim_coeff) == (0.2, 0.0)
    assert experiment.method_title("cjepa:0.05") == "C-JEPA (inv + var + cov), beta 0.05"
    for bad, message in [
        ("ijepa:0.1", "ijepa has no VICReg term"),
        ("cjepa:x", "beta must be a finite number > 0, got 'x'"),
        ("cjepa:0", "beta must be a finite number > 0, got '0'"),
        ("vicreg:0.1", "unknown methods"),
    ]:
        with pytest.raises(ValueError, match=message):
            experiment.ExperimentArguments(methods=[bad])


def test_experiment_merges_runs_of_separate_invocations(tmp_path):
    experiment = load_script("experiment_fmnist")

    def run(method, seed, lp):
        return {
            "method": method,
            "seed": seed,
            "linear_probe": {"accuracy": lp},
            "knn": {"dino": lp, "majority": lp},
            "feature_stats": {"feature_std": 0.01, "effective_rank": 2.0, "effective_rank_centered": 9.0, "dims": 96},
        }

    def write(name, beta, runs, steps=50):
        record = {
            "command": f"cmd {name}",
            "args": {"vicreg_weight": beta},
            "max_steps": steps,
            "probe_train_samples": 100,
            "probe_test_samples": 40,
            "runs": runs,
        }
        path = tmp_path / f"{name}_runs.json"
        path.write_text(json.dumps(record))
        return str(path)

    a = write("a", 0.001, [run("cjepa", 0, 0.70), run("ijepa", 0, 0.60), run("raw_pixels", 0, 0.80)])
    b = write("b", 0.05, [run("cjepa", 0, 0.75), run("cjepa:0.2", 0, 0.65)])
    summary = experiment.main(["--merge_runs", a, b, "--tag", "merged", "--output_dir", str(tmp_path)])
    # b's bare "cjepa" was made with beta 0.05: it is kept apart from a's paper-beta runs.
    assert list(summary) == ["cjepa", "ijepa", "cjepa:0.05", "cjepa:0.2", "raw_pixels"]
    assert summary["cjepa"]["linear_probe"]["mean"] == pytest.approx(0.70)
    assert summary["cjepa:0.05"]["linear_probe"]["mean"] == pytest.approx(0.75)
    text = (tmp_path / "merged_table.md").read_text()
    assert "50 pretraining steps" in text and "100 train / 40 test" in text and "`cmd b`" in text
    assert "| C-JEPA (inv + var + cov), beta 0.05 | 1 | 75.00 |" in text
    merged = json.loads((tmp_path / "merged_runs.json").read_text())
    assert len(merged["runs"]) == 5 and [s["path"] for s in merged["merged_from"]] == [a, b]

    with pytest.raises(ValueError, match=r"pairs in more than one file: \[\('cjepa', 0\), \('ijepa', 0\), \('raw_pixels', 0\)\]"):
        experiment.main(["--merge_runs", a, a, "--tag", "dup", "--output_dir", str(tmp_path)])
    c = write("c", 0.001, [run("varcov", 0, 0.7)], steps=60)
    with pytest.raises(ValueError, match=r"differ in max_steps \[50, 60\]"):
        experiment.main(["--merge_runs", a, c, "--tag", "bad", "--output_dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no such file"):
        experiment.main(["--merge_runs", str(tmp_path / "missing.json"), "--tag", "x", "--output_dir", str(tmp_path)])


@pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
    reason="needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)",
)
def test_experiment_probe_only_rescores_saved_encoders(tmp_path):
    from cjepa_hf import CJEPAConfig, CJEPAModel

    experiment = load_script("experiment_fmnist")
    work = tmp_path / "work"
    torch.manual_seed(0)
    encoder = CJEPAModel(CJEPAConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4))
    encoder.save_pretrained(work / "cjepa-seed0" / "encoder")
    common = [
        "--seeds",
        "0",
        "--probe_train_samples",
        "300",
        "--probe_test_samples",
        "200",
        "--max_iter",
        "30",
        "--weight_decays",
        "1e-4,1e-2",
        "--work_dir",
        str(work),
        "--output_dir",
        str(tmp_path),
        "--probe_only",
        "--model_overrides",
        '{"hidden_size": 32, "num_hidden_layers": 2}',
    ]  # the random-init baseline's model
    summary = experiment.main(["--methods", "cjepa", "--last_n_layers", "2", "--tag", "re", *common])
    assert set(summary) == {"cjepa", "random_init"}  # raw pixels do not depend on the encoder
    assert summary["cjepa"]["dims"] == 64 and summary["random_init"]["dims"] == 64  # 2 layers x 32
    assert summary["cjepa"]["linear_probe"]["mean"] > 0.3  # 10 classes: chance is 0.1
    runs = json.loads((tmp_path / "re_runs.json").read_text())["runs"]
    assert runs[0]["encoder"] == str(work / "cjepa-seed0" / "encoder") and "log_history" not in runs[0]
    with pytest.raises(FileNotFoundError, match="no saved encoder at .*ijepa-seed0"):
        experiment.main(["--methods", "ijepa", "--tag", "missing", *common])


# ----------------------------------------------------------------------------- issue 21: the evaluation plan


def _args(**values):
    from types import SimpleNamespace

    return SimpleNamespace(**values)


def _survey(**kw):
    from cjepa_hf.evaluation.plan import DataSurvey

    fields = dict(source="/data/mine", split="train", kind="an image folder", num_images=100, class_names=["a", "b"], image_size=(32, 32))
    return DataSurvey(**{**fields, **kw})


def test_a_replaced_data_set_drops_the_recipes_evaluation_settings_only():
    from cjepa_hf.evaluation.plan import drop_recipe_data_settings

    recipe = {
        "dataset": "fashion_mnist",
        "eval_dataset": "fashion_mnist",
        "final_eval_dataset": "fashion_mnist",
        "eval_bank_size": 2000,
        "max_steps": 400,
    }
    kept, dropped = drop_recipe_data_settings(recipe, {"dataset": "/data/mine", "eval_bank_size": 50})
    assert kept == {"dataset": "fashion_mnist", "eval_bank_size": 2000, "max_steps": 400}  # the flag's value wins later
    assert dropped == ["eval_dataset", "final_eval_dataset"]
    assert drop_recipe_data_settings(recipe, {"max_steps": 3}) == (recipe, [])
    assert drop_recipe_data_settings(recipe, {"dataset": "fashion_mnist"}) == (recipe, [])


def test_the_monitor_is_carved_to_the_size_of_the_users_data():
    from cjepa_hf.evaluation.plan import monitor_sizes

    assert monitor_sizes(40, 5000, 1000) == (32, 8)
    assert monitor_sizes(100_000, 5000, 1000) == (5000, 1000)
    assert monitor_sizes(None, 5000, 1000) == (5000, 1000)  # a stream of unknown size: the asked sizes
    assert monitor_sizes(9, 5000, 1000) is None


def test_unlabelled_data_turns_evaluation_off_and_labelled_data_is_its_own_evaluation():
    from transformers.trainer_utils import IntervalStrategy

    from cjepa_hf.evaluation.plan import plan_evaluation

    def args():
        evaluation = _args(eval_dataset=None, eval_split="train", eval_bank_size=5000, eval_query_size=1000, final_eval_dataset=None)
        evaluation.final_eval_train_samples, evaluation.final_eval_test_samples = 10_000, None
        training = _args(
            eval_strategy=IntervalStrategy.STEPS, eval_on_start=True, online_probe=True, online_probe_num_labels=None, do_eval=True
        )
        return _args(), evaluation, training

    data, evaluation, training = args()
    plan = plan_evaluation(_survey(class_names=None, source="/nonexistent/flat"), data, evaluation, training, follows_data=True)
    assert (plan.monitor, plan.final, plan.online_probe) == (None, None, False)
    assert training.eval_strategy == IntervalStrategy.NO and training.eval_on_start is False
    assert any("k-NN monitor off" in n and "has no labels" in n for n in plan.notes)

    data, evaluation, training = args()
    plan = plan_evaluation(_survey(source=REPO), data, evaluation, training, follows_data=True)  # REPO: a local path
    assert (
        plan.monitor["dataset"] == REPO and plan.monitor["carved"] and (plan.monitor["bank_size"], plan.monitor["query_size"]) == (80, 20)
    )
    assert evaluation.final_eval_dataset == REPO and plan.online_probe
    # a stream (a Hub id) is not judged by default: its size is unknown and it would be downloaded
    data, evaluation, training = args()
    plan = plan_evaluation(_survey(source="org/big-data", num_images=None), data, evaluation, training, follows_data=True)
    assert plan.final is None and plan.monitor["dataset"] == "org/big-data"


@pytest.mark.parametrize(
    "image_size, survey, warmup, expected",
    [
        (32, {"image_size": (64, 64)}, 0.1, ["they are downscaled (pass --config_overrides image_size=64"]),
        (64, {"image_size": (28, 28)}, 0.1, ["they are upscaled"]),
        (32, {"image_size": (28, 28), "source": "fashion_mnist"}, 0.1, []),  # padded 28 -> 32, not scaled
        (32, {}, 9375, ["warmup_steps 9375 >= max_steps 2"]),
        (32, {}, 2, ["warmup_steps 2 >= max_steps 2"]),
        (32, {}, 1, []),
    ],
)
def test_the_start_up_summary_warns_where_a_setting_makes_another_meaningless(image_size, survey, warmup, expected):
    from cjepa_hf import CJEPAConfig
    from cjepa_hf.evaluation.plan import EvaluationPlan, start_up_lines

    config = CJEPAConfig(**{**TINY, "image_size": image_size})
    training = _args(warmup_steps=warmup, max_steps=2, eval_strategy="no", eval_steps=None)
    info, warnings = start_up_lines(_survey(**survey), EvaluationPlan(None, None, False, []), config, training)
    assert len(warnings) == len(expected) and all(e in w for e, w in zip(expected, warnings)), warnings
    assert info[0].startswith("data: ") and "100 images, 2 classes (a, b)" in info[0]


def test_a_split_folder_is_named_by_its_parent():
    from cjepa_hf.evaluation import dataset_display_name

    assert dataset_display_name("/home/me/my_images/train") == "my_images"
    assert dataset_display_name("my_images/") == "my_images" and dataset_display_name("data/shard.parquet") == "shard.parquet"


def test_feature_extraction_shows_progress(capsys):
    from cjepa_hf import CJEPAConfig, CJEPAModel
    from cjepa_hf.evaluation import extract_features

    model = CJEPAModel(CJEPAConfig(**TINY))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6)), batch_size=2)
    features, labels = extract_features(model, loader, progress="features (train)")
    assert features.shape == (6, TINY["hidden_size"]) and labels.tolist() == list(range(6))
    err = capsys.readouterr().err
    assert "features (train):" in err and "/3 [" in err  # a bar over the 3 batches
    extract_features(model, loader)
    assert capsys.readouterr().err == ""  # no description: no bar


def test_the_probe_shows_progress_over_its_fits(capsys):
    from cjepa_hf.evaluation import train_linear_probe

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=generator), torch.arange(40) % 2
    train_linear_probe(x, y, x, y, weight_decays=(0.0, 0.1), max_iter=5, progress="probe")
    err = capsys.readouterr().err
    assert "probe:" in err and "/3 [" in err  # two weight decays, then the refit


def test_linear_probe_mistakes_end_in_one_line(tmp_path, capsys):
    script = load_script("linear_probe")
    for argv, message in (
        (["--model_name_or_path", str(tmp_path / "nothere")], "model folder"),
        (["--model_name_or_pat", "x"], "did you mean --model_name_or_path?"),
    ):
        with pytest.raises(SystemExit) as raised:
            script.main(argv)
        err = capsys.readouterr().err
        assert raised.value.code == 2 and err.count("\n") == 1 and message in err, err
