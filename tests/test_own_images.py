"""A user's own images, end to end (issue 21): scripts/pretrain.py on a tiny labelled folder
(class sub-folders) and a tiny unlabelled one (flat). Evaluation follows the user's data: the
logs, pretrain_summary.json and the exported card name no data set but the user's, and the
labelled folder's k-NN monitor, online probe and final judgement use its own two classes."""

import json
import logging
import os

import numpy as np
import pytest
from helpers.cli import TINY_MODEL, pretrain_module
from huggingface_hub import ModelCard
from PIL import Image

import cjepa_hf.online_eval as online_eval

# The quick start's recipe file is named after its data set; no other mention may appear.
RECIPE_FILE = "quickstart-fashion-mnist.json"


def _foreign(text: str) -> list[str]:
    """Mentions of a data set that is not the user's (the quick start's)."""
    text = text.replace(RECIPE_FILE, "")
    return [word for word in ("fashion", "Fashion", "FASHION", "zalando", "mnist", "MNIST") if word in text]


def _write_images(folder, names, size, seed):
    rng = np.random.default_rng(seed)
    for name in names:
        colour = np.array([200, 40, 40]) if "red" in name else np.array([40, 40, 200])
        pixels = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def _pretrain(folder, out, caplog, *extra):
    caplog.set_level(logging.INFO)
    argv = [
        *("--dataset_name", str(folder), "--objective", "cjepa", "--config_overrides", TINY_MODEL, "--output_dir", str(out)),
        *("--max_steps", "3", "--per_device_train_batch_size", "8", "--logging_steps", "1", "--warmup_steps", "1"),
        *("--eval_steps", "3", "--dataloader_num_workers", "0", "--shuffle_buffer", "64", "--disable_tqdm", "true"),
        *extra,
    ]
    summary = pretrain_module().main(argv)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    written = (out / "pretrain_summary.json").read_text()
    card = ModelCard.load(out / "encoder" / "README.md")
    return summary, json.loads(written), logs, card


def test_a_labelled_folder_is_evaluated_on_its_own_classes(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "my_photos"
    _write_images(folder, [f"red/{i}.png" for i in range(20)] + [f"blue/{i}.png" for i in range(20)], 32, 0)
    seen = []  # what the k-NN monitor encodes: its source and labels
    batches = online_eval.KNNMonitorSet.batches

    def recording(self, *args, **kwargs):
        for positions, pixels, labels in batches(self, *args, **kwargs):
            seen.append((self.source, self.num_labels, labels.tolist()))
            yield positions, pixels, labels

    monkeypatch.setattr(online_eval.KNNMonitorSet, "batches", recording)
    summary, written, logs, card = _pretrain(folder, tmp_path / "run", caplog)

    assert written["data"]["dataset"] == str(folder) and written["data"]["images"] == 40
    assert written["data"]["classes"] == ["blue", "red"]
    # the k-NN monitor: a sample of the user's images, their two classes, both in bank and queries
    plan = written["evaluation_plan"]
    assert plan["knn_monitor"] == {"dataset": str(folder), "split": "train", "bank_size": 32, "query_size": 8, "carved": True}
    assert seen and {source for source, _, _ in seen} == {str(folder)} and {n for _, n, _ in seen} == {2}
    labels = [y for _, _, ys in seen for y in ys]
    assert set(labels[:32]) == {0, 1} and set(labels[32:40]) == {0, 1}  # a shuffled sample, not class by class
    assert [e["step"] for e in written["online_eval"]] == [0, 3] and all(0 <= e["eval_knn_top1"] <= 1 for e in written["online_eval"])
    assert plan["online_probe"] is True and "eval_linear_top1" in written["online_eval"][-1]
    # the final judgement: the user's folder, 20% of it held out, its two classes
    protocol = written["evaluation"]["protocol"]
    assert protocol["dataset"] == str(folder) and protocol["test_split"] == "train[held-out 20%]"
    assert (protocol["train_samples"], protocol["test_samples"]) == (32, 8)
    assert written["evaluation"]["raw_pixels"]["dims"] == 3 * 32 * 32
    # the start-up summary says what it found and what it evaluates
    assert "data: " + str(folder) + " [train], an image folder: 40 images, 2 classes (blue, red), first image 32 x 32 px" in logs
    assert "epochs of 40 images" in logs and "epochs unknown" not in logs
    assert f"final judgement: {folder} (probes on 80%" in logs and "online probe: on, the 2 classes" in logs
    # nothing of another data set, anywhere
    assert not _foreign(logs) and not _foreign(json.dumps(written)) and not _foreign(card.content)
    assert "datasets" not in card.data.to_dict() and "`my_photos` (a local data set, not on the Hub): 40 images" in card.text
    assert {r.dataset_name for r in card.data.eval_results} == {"my_photos"}
    # "done in" is the wall time: training, judgement and export
    assert written["wall_time_s"] > written["train_time_s"] > 0 and written["evaluation"]["seconds"]["total"] < written["wall_time_s"]


def test_an_unlabelled_folder_turns_evaluation_off_and_says_so(tmp_path, caplog):
    folder = tmp_path / "holiday"
    _write_images(folder, [f"img{i:02d}.jpg" for i in range(24)], 40, 1)
    summary, written, logs, card = _pretrain(folder, tmp_path / "run", caplog)
    assert written["data"]["classes"] is None and written["data"]["images"] == 24
    assert written["evaluation_plan"] == {"knn_monitor": None, "online_probe": False, "final_judgement": None}
    assert "evaluation" not in written and "online_eval" not in written and written["global_step"] == 3
    for line in ("k-NN monitor: off", "online probe: off", "final judgement: off", f"final judgement off: {folder} has no labels"):
        assert line in logs, line
    # 40 px images, a 32 px model: the start-up summary warns instead of resizing silently
    assert "images are 40 x 40 px, the model's input is 32 x 32: they are downscaled" in logs
    assert not _foreign(logs) and not _foreign(json.dumps(written)) and not _foreign(card.content)
    assert "Not evaluated" in card.text and "`holiday` (a local data set, not on the Hub): 24 images, no labels" in card.text


def test_a_flag_naming_another_evaluation_set_is_kept(tmp_path, caplog):
    """--final_eval_dataset given with --dataset_name: the user's choice stays (only the recipe's is dropped)."""
    folder = tmp_path / "flat"
    _write_images(folder, [f"img{i:02d}.png" for i in range(16)], 32, 2)
    labelled = tmp_path / "other"
    _write_images(labelled, [f"red/{i}.png" for i in range(10)] + [f"blue/{i}.png" for i in range(10)], 32, 3)
    args = pretrain_module().parse_args(["--dataset_name", str(folder), "--final_eval_dataset", str(labelled)])
    assert args[2].final_eval_dataset == str(labelled) and args[2].eval_dataset is None


@pytest.mark.parametrize("recipe", ["quickstart-fashion-mnist.json", "vit-b16-in1k-100ep.json"])
def test_a_recipe_keeps_its_own_evaluation_without_dataset_name(recipe):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", recipe)
    _, data, evaluation, _ = pretrain_module().parse_args([path])
    recipe_values = json.load(open(path))
    assert data.dataset == recipe_values["dataset"] and evaluation.final_eval_dataset == recipe_values.get("final_eval_dataset")
