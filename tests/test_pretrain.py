"""scripts/pretrain.py end to end on the real Fashion-MNIST stream, in fresh processes."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "pretrain.py")
TINY_MODEL = json.dumps(dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             predictor_hidden_size=32, predictor_num_hidden_layers=2, projector_dims=[64, 64], min_keep=4))

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist; `make test` does it)",
)


def _args(output_dir, max_steps, *extra):
    return ["--dataset", "fashion_mnist", "--config_overrides", TINY_MODEL, "--output_dir", str(output_dir),
            "--max_steps", str(max_steps), "--per_device_train_batch_size", "32", "--logging_steps", "1",
            "--warmup_steps", "3", "--dataloader_num_workers", "0", "--shuffle_buffer", "256", "--report_to", "none",
            "--disable_tqdm", "true", "--seed", "0", *extra]


def _run(cmd, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _logs(output_dir):
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        return [h for h in json.load(f)["log_history"] if "jepa_loss" in h]


def test_pretrain_script_end_to_end(tmp_path):
    from transformers import AutoModel

    import cjepa_hf  # noqa: F401  registers "cjepa" with the Auto classes

    out = tmp_path / "run"
    _run([sys.executable, SCRIPT, *_args(out, 40, "--save_steps", "20")])
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["global_step"] == 40
    logs = _logs(out)
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
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _run([sys.executable, SCRIPT, *_args(full, 12, "--save_steps", "6")])
    shutil.copytree(full / "checkpoint-6", resumed / "checkpoint-6")
    _run([sys.executable, SCRIPT, *_args(resumed, 12, "--save_steps", "6", "--resume_from_checkpoint", "latest")])
    a, b = _logs(full), _logs(resumed)
    assert [h["step"] for h in b] == list(range(1, 13))
    for x, y in zip(a[6:], b[6:]):
        for key in ("loss", "jepa_loss", "vicreg_loss", "learning_rate"):
            assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa if k.startswith("target_encoder."))


def test_streaming_resume_past_the_first_epoch_is_exact(tmp_path):
    """40 images, batch 8: 5 steps per epoch; the checkpoint at step 7 is 2 batches into
    epoch 1. The resumed run seeks the stream there (no replay of epoch 0) and logs the
    same losses as the uninterrupted run."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "images" / f"c{c}" / f"{i}.png")

    def args(out, *extra):
        return [*_args(out, 12, "--save_steps", "7", "--per_device_train_batch_size", "8", "--shuffle_buffer", "16"),
                "--dataset", str(tmp_path / "images"), *extra]

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _run([sys.executable, SCRIPT, *args(full)])
    state = json.loads((full / "checkpoint-7" / "cjepa_state.json").read_text())
    assert state["data"] == {"epoch": 1, "batches": 2, "world_size": 1, "num_workers": 1, "records": [[16]]}
    shutil.copytree(full / "checkpoint-7", resumed / "checkpoint-7")
    _run([sys.executable, SCRIPT, *args(resumed, "--resume_from_checkpoint", "latest")])
    a, b = _logs(full), _logs(resumed)
    assert [h["step"] for h in b] == list(range(1, 13))
    for x, y in zip(a[7:], b[7:]):
        for key in ("loss", "jepa_loss", "vicreg_loss"):
            assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])


def test_pretrain_script_on_two_processes(tmp_path):
    out = tmp_path / "ddp"
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    _run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "--main_process_port", "29519", SCRIPT, *_args(out, 6, "--save_steps", "3")])
    logs = _logs(out)
    assert len(logs) == 6 and all(h["vicreg_variance"] > 0 for h in logs)
    # Each rank's stream position, gathered into the checkpoint: 3 batches of 32 per rank.
    state = json.loads((out / "checkpoint-3" / "cjepa_state.json").read_text())
    assert state["data"] == {"epoch": 0, "batches": 3, "world_size": 2, "num_workers": 1, "records": [[96], [96]]}
    args = json.loads((out / "training_args.json").read_text())
    assert args["use_cpu"] is True  # set automatically without CUDA, so DDP wraps the model
