"""scripts/pretrain.py end to end on the real Fashion-MNIST stream (its `main`, in the test process), its command line."""

import json
import logging
import os
import shutil

import pytest
import torch
from helpers.cli import pretrain_args, pretrain_module, step_logs
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from cjepa_hf import CJEPAConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist; `make test` does it)",
)


def test_pretrain_script_end_to_end(tmp_path, caplog):
    """The script's main, in this process (the launches of tests/test_multinode.py, test_fsdp.py and
    test_sweep.py start it as a command)."""
    from transformers import AutoModel

    import cjepa_hf  # noqa: F401  registers "cjepa" with the Auto classes

    out = tmp_path / "run"
    caplog.set_level(logging.INFO)
    pretrain_module().main(
        [
            *pretrain_args(
                out,
                40,
                "--save_steps",
                "20",
                "--eval_strategy",
                "steps",
                "--eval_steps",
                "20",
                "--eval_dataset",
                "fashion_mnist",
                "--eval_bank_size",
                "100",
                "--eval_query_size",
                "50",
                "--final_eval_dataset",
                "fashion_mnist",
                "--final_eval_train_samples",
                "300",
                "--final_eval_test_samples",
                "200",
            ),
        ]
    )
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["global_step"] == 40
    # the start-up summary says what is about to run, in epochs of the real data
    assert "40 steps x global batch 32 (32 per device x 1 accumulation x 1 processes) = 0.02 epochs of 60,000 images" in caplog.text
    assert "online probe: on, the 10 classes of fashion_mnist" in caplog.text
    assert "k-NN monitor: fashion_mnist [train], bank 100, queries 50, every 20 steps" in caplog.text
    assert "final judgement: fashion_mnist (test split)" in caplog.text and "upscaled" not in caplog.text  # padded 28 -> 32
    # the online evaluation: the k-NN monitor at steps 20 and 40, the probe in the training logs
    assert [e["step"] for e in summary["online_eval"]] == [20, 40]
    assert all(0.0 < e["eval_knn_top1"] <= 1.0 and 0.0 <= e["eval_linear_top1"] <= 1.0 for e in summary["online_eval"])
    assert 0.0 <= summary["last_log"]["online_linear_top1"] <= 1.0
    assert (out / "checkpoint-40" / "online_probe.safetensors").exists()
    # the run judged itself: three feature sets, two scores each, as fractions
    evaluation = summary["evaluation"]
    assert set(evaluation) >= {"trained", "random_init", "raw_pixels", "protocol"}
    for name in ("trained", "random_init", "raw_pixels"):
        assert 0.1 < evaluation[name]["knn_top1"] <= 1.0 and 0.1 < evaluation[name]["linear_top1"] <= 1.0
    assert evaluation["raw_pixels"]["dims"] == 3 * 32 * 32 and evaluation["trained"]["dims"] == 32
    assert evaluation["protocol"]["test_samples"] == 200 and evaluation["protocol"]["test_split"] == "test"
    logs = step_logs(out)
    first = sum(h["jepa_loss"] for h in logs[:5]) / 5
    last = sum(h["jepa_loss"] for h in logs[-5:]) / 5
    assert last < 0.7 * first, (first, last)  # the tiny model learns on real data
    assert all(h["skipped_records"] == 0 and h["nonfinite_steps"] == 0 for h in logs)
    assert {"checkpoint-20", "checkpoint-40", "encoder", "training_curves.png", "training_args.json"} <= set(os.listdir(out))
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    encoder = AutoModel.from_pretrained(out / "encoder")
    saved = load_file(out / "model.safetensors")
    assert torch.equal(encoder.layers[0].attention.qkv.weight, saved["target_encoder.layers.0.attention.qkv.weight"])
    card = ModelCard.load(out / "encoder" / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert "its random initialisation" in card.text and "raw pixels" in card.text
    assert f"{100 * evaluation['trained']['knn_top1']:.2f}" in card.text
    # Fashion-MNIST was padded 28 -> 32 in training: the saved processors pad it the same way.
    from transformers import AutoImageProcessor

    from cjepa_hf.data import load_fashion_mnist
    from cjepa_hf.evaluation import ClassificationTransform

    image = load_fashion_mnist("test")[0]["image"]
    expected = ClassificationTransform(32, train=False, pad_to=32)(image)
    for folder in (out / "encoder", out / "checkpoint-40"):
        processed = AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(processed, expected, atol=1e-4, rtol=0)


def test_streaming_resume_is_exact(tmp_path):
    """In this process (the resume in a fresh process: test_trainer, test_multinode)."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    pretrain_module().main(pretrain_args(full, 12, "--save_steps", "6"))
    shutil.copytree(full / "checkpoint-6", resumed / "checkpoint-6")
    pretrain_module().main(pretrain_args(resumed, 12, "--save_steps", "6", "--resume_from_checkpoint", "latest"))
    a, b = step_logs(full), step_logs(resumed)
    assert [h["step"] for h in b] == list(range(1, 13))
    for logs in (a, b):  # the data epochs (60,000 images, batch 32), in the resumed process too
        assert [h["epoch"] for h in logs] == pytest.approx([32 * step / 60000 for step in range(1, 13)], abs=1e-4)
    for x, y in zip(a[6:], b[6:]):
        for key in ("loss", "jepa_loss", "vicreg_loss", "learning_rate"):
            assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa if k.startswith("target_encoder."))


def test_streaming_resume_past_the_first_epoch_is_exact(tmp_path):
    """40 images, batch 8: 5 steps per epoch; the checkpoint at step 7 is 2 batches into
    epoch 1. The resumed run seeks the stream there (no replay of epoch 0) and logs the
    same losses and epochs as the uninterrupted run."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "images" / f"c{c}" / f"{i}.png")

    def args(out, *extra):
        return [
            *pretrain_args(out, 12, "--save_steps", "7", "--per_device_train_batch_size", "8", "--shuffle_buffer", "16"),
            "--dataset",
            str(tmp_path / "images"),
            *extra,
        ]

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    pretrain_module().main(args(full))
    state = json.loads((full / "checkpoint-7" / "cjepa_state.json").read_text())
    assert state["data"] == {"epoch": 1, "batches": 2, "world_size": 1, "num_workers": 1, "records": [[16]]}
    shutil.copytree(full / "checkpoint-7", resumed / "checkpoint-7")
    pretrain_module().main(args(resumed, "--resume_from_checkpoint", "latest"))
    a, b = step_logs(full), step_logs(resumed)
    assert [h["step"] for h in b] == list(range(1, 13))
    # the logged epoch is the data's, also after the resume (Trainer's own count of passes would
    # start again from 0 in the resumed process); a streamed image folder does not know its size,
    # so the epochs done (5 steps each) are logged, without a fraction
    for logs in (a, b):
        assert [h["epoch"] for h in logs] == [(step - 1) // 5 for step in range(1, 13)]
    for x, y in zip(a[7:], b[7:]):
        for key in ("loss", "jepa_loss", "vicreg_loss"):
            assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])


# ----------------------------------------------------------------------------- the command line


def _parse(argv):
    return pretrain_module().parse_args(argv)


def test_recipes_and_flags_compose():
    quick = json.loads(open(os.path.join(ROOT, "recipes", "quickstart-fashion-mnist.json")).read())
    # flags alone: the quick start with those fields changed
    model, data, evaluation, training = _parse(["--max_steps", "20", "--output_dir", "somewhere"])
    assert (training.max_steps, training.output_dir) == (20, "somewhere")
    assert data.dataset == "fashion_mnist" and training.learning_rate == quick["learning_rate"]
    assert json.loads(model.config_overrides)["hidden_size"] == json.loads(quick["config_overrides"])["hidden_size"]
    # a recipe, then flags: later values win; config_overrides merge key by key (k=v form)
    recipe = os.path.join(ROOT, "recipes", "vit-b16-in1k-100ep.json")
    model, data, evaluation, training = _parse([recipe, "--max_steps", "7", "--config_overrides", "vicreg_weight=0,target_scale=[0.1,0.2]"])
    assert (training.max_steps, training.warmup_steps, model.preset) == (7, 9375, "vit-b16")
    assert json.loads(model.config_overrides) == {"vicreg_weight": 0, "target_scale": [0.1, 0.2]}
    model, *_ = _parse(["--config_overrides", "vicreg_weight=0"])
    merged = json.loads(model.config_overrides)
    assert merged["vicreg_weight"] == 0 and merged["image_size"] == 32  # the quick start's model is kept


IMAGENET_RECIPES = sorted(f for f in os.listdir(os.path.join(ROOT, "recipes")) if "-in1k-" in f)


@pytest.mark.parametrize("name", IMAGENET_RECIPES)
def test_every_imagenet_recipe_parses_builds_its_preset_and_keeps_the_global_batch(name):
    """Each ImageNet recipe parses, names a preset that builds, and gives the papers' global
    batch of 2048 on the 8 GPUs its per-device settings assume (recipes/README.md)."""
    model, data, _, training = _parse([os.path.join(ROOT, "recipes", name)])
    assert data.dataset == "ILSVRC/imagenet-1k" and training.bf16
    config = CJEPAConfig.from_preset(model.preset)
    assert name.startswith(model.preset)  # vit-b16-in1k-... uses vit-b16
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps * 8 == 2048
    epochs = int(name.split("-")[-1].removesuffix("ep.json"))
    assert training.max_steps == epochs * 625  # 1,281,167 images / 2048 per step, rounded down
    assert 0 < training.warmup_steps < training.max_steps and config.image_size % config.patch_size == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config_overrides", "hiden_size=8"], "'hiden_size' is not a CJEPAConfig field; did you mean 'hidden_size'"),
        (["--config_overrides", '{"vicreg_wieght": 1}'], "did you mean 'vicreg_weight'"),
        (["--optim", "sgd"], "optim must be adamw_torch or adamw_torch_fused.*got 'sgd'"),
        (["--lr_scheduler_type", "constant"], "lr_scheduler_type must be cosine.*got 'constant'"),
        (["--learning_rate", "0"], "learning_rate must be a finite number > 0, got 0"),
        (["--learning_rate=-1e-3"], "learning_rate must be a finite number > 0, got -0.001"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be >= 1, got 0"),
        (["recipes/no-such-recipe.json"], "recipe 'recipes/no-such-recipe.json' does not exist"),
    ],
)
def test_bad_arguments_fail_in_parsing(argv, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        _parse(argv)
