"""A run that says it finished has finished (issue 23): resumes at epoch boundaries and past the data's end,
what a resume compares, who owns an output folder, stop signals, and the checks before training."""

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import TINY
from helpers.cli import pretrain_args, pretrain_module, step_logs
from helpers.tiny import OrderedStream, SeekableOrderedStream, tiny_data, tiny_trainer
from transformers import TrainerCallback

from cjepa_hf import CJEPAConfig
from cjepa_hf.trainer import CJEPATrainingArguments, validate_checkpoint
from cjepa_hf.training.run_guard import (
    LOCK_FILE,
    IncompleteRunError,
    OutputDirInUseError,
    RunInterrupted,
    hold_output_dir,
)

FMNIST = os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fmnist = pytest.mark.skipif(not FMNIST, reason="needs the Fashion-MNIST IDX files")


def _saved_dataset(folder, n: int, seed: int = 0):
    """A `save_to_disk` folder of `n` random 36 px RGB images with 2 classes: a source whose size is known."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features).save_to_disk(str(folder))
    return str(folder)


def _folder_args(out, data, steps, *extra):
    return [*pretrain_args(out, steps, "--per_device_train_batch_size", "8", "--shuffle_buffer", "0", *extra), "--dataset", data]


# ----------------------------------------------------------------------------- 1. did the work asked for


def test_a_resume_at_an_exact_epoch_boundary_trains_the_remaining_steps(tmp_path):
    """24 examples, batch 4: 6 steps an epoch. The checkpoint at step 6 has read the whole of
    epoch 0; the resumed run starts epoch 1 and logs the uninterrupted run's steps 7-12 (before:
    it stopped at step 6 with Trainer's "not a single sample", exit status 0)."""
    full = tiny_trainer(tmp_path / "full", SeekableOrderedStream(tiny_data(24)), max_steps=12, save_strategy="steps", save_steps=6)
    full.train()
    resumed = tiny_trainer(tmp_path / "full", SeekableOrderedStream(tiny_data(24)), max_steps=12, save_strategy="no")
    result = resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-6"))
    assert result.global_step == resumed.state.global_step == 12
    a = [h for h in full.state.log_history if "jepa_loss" in h]
    b = [h for h in resumed.state.log_history if "jepa_loss" in h]
    assert [h["step"] for h in b] == list(range(1, 13))
    for x, y in zip(a[6:], b[6:]):
        assert abs(x["loss"] - y["loss"]) <= 1e-6, (x["step"], x["loss"], y["loss"])


class OneShotStream(OrderedStream):
    """A stream whose data runs out after one pass (every later epoch is empty)."""

    def __init__(self, items):
        super().__init__(items)
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter(self.items if self.passes == 1 else [])


def test_data_that_runs_out_is_an_error_not_a_finished_run(tmp_path):
    trainer = tiny_trainer(tmp_path, OneShotStream(tiny_data(8)), max_steps=10)
    with pytest.raises(IncompleteRunError, match="stopped at step 2 of the 10 asked for: the training data ran out"):
        trainer.train()


@needs_fmnist
def test_no_usable_image_exits_non_zero_without_an_encoder(tmp_path):
    """A folder of undecodable images trained 0 steps, exported a random encoder and exited 0."""
    data = tmp_path / "images" / "c0"
    data.mkdir(parents=True)
    for i in range(4):
        (data / f"{i}.png").write_bytes(b"not a png at all" * 10)
    out = tmp_path / "run"
    with pytest.raises(IncompleteRunError, match=r"step 0 of the 3 asked for.*4 bad record\(s\) skipped.*undecodable: 4"):
        pretrain_module().main(_folder_args(out, str(tmp_path / "images"), 3, "--label_column", "label"))
    assert not (out / "encoder").exists() and not (out / "pretrain_summary.json").exists()
    assert not (out / LOCK_FILE).exists()  # released on the error


@needs_fmnist
def test_resume_at_the_epoch_end_and_past_the_end_of_a_known_size_source(tmp_path):
    """The issue's attack: 48 images, batch 8 (6 steps an epoch); checkpoint-6 has read all 48 of
    epoch 0, and the resumed run trains steps 7-12. A checkpoint that read 32 records resumed on a
    24-image source is refused (it is past that data's end)."""
    data = _saved_dataset(tmp_path / "data48", 48)
    out = tmp_path / "run"
    pretrain_module().main(_folder_args(out, data, 12, "--save_steps", "6"))
    state = json.loads((out / "checkpoint-6" / "cjepa_state.json").read_text())
    assert state["data"]["records"] == [[48]] and state["data"]["epoch"] == 0
    full = step_logs(out)
    resumed = tmp_path / "resumed"
    import shutil

    shutil.copytree(out / "checkpoint-6", resumed / "checkpoint-6")
    summary = pretrain_module().main(_folder_args(resumed, data, 12, "--save_steps", "6", "--resume_from_checkpoint", "latest"))
    assert summary["global_step"] == 12 and (resumed / "encoder").is_dir()
    again = step_logs(resumed)
    assert [h["step"] for h in again] == list(range(1, 13))
    for x, y in zip(full[6:], again[6:]):
        assert abs(x["loss"] - y["loss"]) <= 1e-6, (x["step"], x["loss"], y["loss"])

    small = _saved_dataset(tmp_path / "data24", 24)
    past = tmp_path / "past"
    pretrain_module().main(_folder_args(past, data, 4, "--save_steps", "4"))
    with pytest.raises(ValueError, match=r"read 32 records of data epoch 0, but this training data has 24 per epoch"):
        pretrain_module().main(_folder_args(past, small, 8, "--save_steps", "4", "--resume_from_checkpoint", "latest"))
    assert not (past / "encoder").exists() or json.loads((past / "pretrain_summary.json").read_text())["global_step"] == 4


# ----------------------------------------------------------------------------- 2. what a resume compares


@pytest.mark.parametrize(
    "change, field",
    [({"num_attention_heads": 8}, "num_attention_heads"), ({"vicreg_weight": 0.5}, "vicreg_weight"), ({"hidden_size": 64}, "hidden_size")],
)
def test_a_resume_refuses_a_changed_model_config_naming_the_field(tmp_path, change, field):
    tiny_trainer(tmp_path, tiny_data(), max_steps=2, save_strategy="steps", save_steps=2).train()
    config = CJEPAConfig(**{**TINY, **change})
    trainer = tiny_trainer(tmp_path, tiny_data(), config=config, max_steps=4)
    with pytest.raises(
        ValueError, match=rf"cannot resume .*checkpoint-2: the model config differs.*{field}: .* in the checkpoint.*--output_dir"
    ):
        trainer.train(resume_from_checkpoint="latest")
    assert trainer.state.global_step == 0


def test_a_resume_reports_and_honours_changed_arguments(tmp_path, caplog):
    """A new peak learning rate, seed and save_steps are named in one warning and used: the
    resumed step's learning rate follows the new schedule, and checkpoints follow the new
    save_steps (Trainer alone keeps the checkpoint's save_steps and its scheduler's peak)."""
    tiny_trainer(tmp_path, tiny_data(), max_steps=4, save_strategy="steps", save_steps=2, warmup_steps=0).train()
    trainer = tiny_trainer(
        tmp_path, tiny_data(), max_steps=4, save_strategy="steps", save_steps=1, warmup_steps=0, learning_rate=2e-3, seed=1
    )
    with caplog.at_level(logging.WARNING, logger="cjepa_hf.training.resume"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert "learning_rate 0.001 -> 0.002" in caplog.text and "seed 0 -> 1" in caplog.text and "save_steps 2 -> 1" in caplog.text
    from cjepa_hf.training.schedules import lr_at

    logged = {h["step"]: h["learning_rate"] for h in trainer.state.log_history if "jepa_loss" in h}
    args = trainer.args
    assert logged[3] == pytest.approx(lr_at(2, 4, 0, args.warmup_start_lr, 2e-3, args.final_lr), rel=1e-6)
    assert (tmp_path / "checkpoint-3").is_dir()  # save_steps 1 honoured
    state = json.loads((tmp_path / "checkpoint-3" / "cjepa_state.json").read_text())
    assert json.loads((tmp_path / "checkpoint-3" / "training_args.json").read_text())["learning_rate"] == 2e-3
    assert "nonfinite_steps" in state


@needs_fmnist
def test_the_checkpoint_records_the_run_arguments(tmp_path, caplog):
    out = tmp_path / "run"
    pretrain_module().main(pretrain_args(out, 2, "--save_steps", "2"))
    state = json.loads((out / "checkpoint-2" / "cjepa_state.json").read_text())
    assert state["run_arguments"] == {"image_column": "image", "label_column": "label", "dataset": "fashion_mnist", "split": "train"}
    assert json.loads((out / "checkpoint-2" / "config.json").read_text())["hidden_size"] == TINY["hidden_size"]


# ----------------------------------------------------------------------------- 3. one run per output folder


def _args(out, **kw):
    return CJEPATrainingArguments(output_dir=str(out), use_cpu=True, report_to="none", **kw)


def test_a_second_run_into_a_locked_folder_refuses_naming_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp_path.mkdir(exist_ok=True)
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(OutputDirInUseError, match=rf"in use by another run: pid {holder.pid} on host {socket.gethostname()}"):
            with hold_output_dir(_args(tmp_path)):
                pass
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # not touched
    finally:
        holder.kill()
        holder.wait()
    # that process is gone now: its stale lock is taken over, and released at the end
    with hold_output_dir(_args(tmp_path)):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_another_hosts_lock_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "some-other-node"}))
    with pytest.raises(OutputDirInUseError, match="pid 1 on host some-other-node"):
        with hold_output_dir(_args(tmp_path)):
            pass


def test_a_fresh_run_into_another_runs_checkpoints_refuses_unless_resume_or_overwrite(tmp_path):
    (tmp_path / "checkpoint-7").mkdir()
    (tmp_path / "encoder").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(
        OutputDirInUseError,
        match=r"holds another run's checkpoints \(checkpoint-7\).*--resume_from_checkpoint latest.*--overwrite_output_dir",
    ):
        with hold_output_dir(_args(tmp_path)):
            pass
    with hold_output_dir(_args(tmp_path, resume_from_checkpoint="latest")):
        assert (tmp_path / "checkpoint-7").is_dir()
    with hold_output_dir(_args(tmp_path, overwrite_output_dir=True)):
        assert sorted(os.listdir(tmp_path)) == [LOCK_FILE, "notes.txt"]  # the old run's outputs only are gone


@needs_fmnist
def test_a_second_pretrain_into_the_same_folder_refuses_before_training(tmp_path):
    out = tmp_path / "run"
    pretrain_module().main(pretrain_args(out, 2, "--save_steps", "2"))
    before = (out / "checkpoint-2" / "model.safetensors").read_bytes()
    with pytest.raises(OutputDirInUseError, match="holds another run's checkpoints"):
        pretrain_module().main(pretrain_args(out, 3, "--save_steps", "1"))
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint")) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_uncreatable_output_dir_is_one_clear_error(tmp_path, where):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run" if where == "under_a_file" else "/proc/cjepa-run"
    with pytest.raises(OSError, match=rf"cannot create output_dir '{out}'"):
        with hold_output_dir(_args(out)):
            pass


# ----------------------------------------------------------------------------- 4. stop signals


class SendSignal(TrainerCallback):
    def __init__(self, signum, at_step):
        self.signum, self.at_step = signum, at_step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at_step - 1:
            os.kill(os.getpid(), self.signum)  # arrives in the middle of step `at_step`


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_saves_at_the_step_boundary_then_exits_non_zero(tmp_path, signum, code, caplog):
    trainer = tiny_trainer(tmp_path, SeekableOrderedStream(tiny_data()), max_steps=8, save_strategy="steps", save_steps=5)
    trainer.add_callback(SendSignal(signum, 3))
    with caplog.at_level(logging.WARNING), pytest.raises(RunInterrupted) as raised:
        trainer.train()
    assert raised.value.code == code
    assert f"stopped by {signal.Signals(signum).name} at step 3 of 8" in str(raised.value) and "resume_from_checkpoint latest" in str(
        raised.value
    )
    validate_checkpoint(str(tmp_path / "checkpoint-3"))
    assert trainer.state.global_step == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or signal.getsignal(signal.SIGTERM) != trainer.stop_request.handler
    # the resume from it is exact
    resumed = tiny_trainer(tmp_path, SeekableOrderedStream(tiny_data()), max_steps=8)
    resumed.train(resume_from_checkpoint="latest")
    full = tiny_trainer(tmp_path / "full", SeekableOrderedStream(tiny_data()), max_steps=8)
    full.train()
    a = [h["loss"] for h in full.state.log_history if "jepa_loss" in h]
    b = [h["loss"] for h in resumed.state.log_history if "jepa_loss" in h]
    assert a == pytest.approx(b, abs=1e-6)


@needs_fmnist
def test_sigterm_to_the_pretrain_command_saves_and_exits_143(tmp_path):
    """The real command in a fresh process: SIGTERM once training runs; checkpoint saved, no
    encoder exported, exit status 143, the lock released."""
    out = tmp_path / "run"
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "pretrain.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, script, *pretrain_args(out, 100000, "--save_steps", "100000")],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        try:
            for line in proc.stdout:  # Trainer prints each step's log: training runs
                if line.startswith("{'loss'"):
                    proc.send_signal(signal.SIGTERM)
                    break
            proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert proc.returncode == 143, text[-3000:]
    assert "stopped by SIGTERM at step" in text
    saved = [p for p in os.listdir(out) if p.startswith("checkpoint-")]
    assert len(saved) == 1
    validate_checkpoint(str(out / saved[0]))
    assert not (out / "encoder").exists() and not (out / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- 5. checks before training


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be >= 1, got 0"),
        ({"max_steps": 0}, "max_steps must be > 0 .* or -1 .* got 0"),
        ({"max_steps": -5}, "max_steps must be > 0 .* got -5"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0, got -1.0"),
        ({"final_lr": 0.1, "learning_rate": 0.01}, r"final_lr \(0.1\) must not exceed the peak learning_rate \(0.01\)"),
        ({"max_steps": -1, "num_train_epochs": 0}, "num_train_epochs must be > 0, got 0"),
    ],
)
def test_numbers_out_of_range_are_refused_when_parsed(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **kw)


@needs_fmnist
@pytest.mark.parametrize(
    "extra, error, message",
    [
        (["--final_eval_dataset", "fashion_mnsit"], ValueError, "--final_eval_dataset 'fashion_mnsit' cannot be loaded"),
        (["--dataset", "data/train.parquet"], FileNotFoundError, r"--dataset_name 'data/train.parquet' does not exist \(a local path"),
        (
            ["--label_column", "nope"],
            ValueError,
            r"--label_column 'nope' does not exist in 'fashion_mnist'; its columns are \['image', 'label'\]",
        ),
        (["--image_column", "picture"], ValueError, r"--image_column 'picture' does not exist in 'fashion_mnist'; its columns are"),
    ],
)
def test_arguments_checkable_before_training_fail_before_it(tmp_path, monkeypatch, extra, error, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        pretrain_module().main([*pretrain_args(out, 2, *extra), "--debug"])  # --debug: the exception itself, not the one line
    assert not any(p.startswith("checkpoint") for p in os.listdir(out)) if out.exists() else True


def test_an_empty_data_folder_is_one_clear_error(tmp_path):
    from cjepa_hf.training.preflight import check_data_source

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"--dataset_name '.*empty' is an empty folder: it holds no image or data file"):
        check_data_source(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------- 6. the smaller ones


def test_skipped_non_finite_steps_are_reported_and_left_out_of_train_loss(tmp_path, caplog):
    """10 steps, 8 of them non-finite (batch 4: images 0-31 poisoned, 32-39 clean): Trainer
    alone reports train_loss as the mean with the 8 skipped steps counted as 0."""
    data = tiny_data(40, poison=range(8, 40))
    trainer = tiny_trainer(tmp_path, SeekableOrderedStream(data), max_steps=10, max_consecutive_nonfinite=20)
    with caplog.at_level(logging.WARNING):
        result = trainer.train()
    logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
    counted = [h["loss"] for h in logs if math.isfinite(h["loss"])]
    assert len(counted) == 2 and result.metrics["nonfinite_steps"] == 8
    assert result.training_loss == pytest.approx(sum(counted) / 2, rel=1e-4)
    assert result.metrics["train_loss"] == result.training_loss
    assert "8 of the 10 steps of this run had a non-finite loss and were skipped" in caplog.text


@needs_fmnist
def test_the_start_summary_does_not_announce_a_monitor_that_eval_strategy_no_turned_off(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pretrain_module().main(
        pretrain_args(tmp_path / "run", 1, "--eval_dataset", "fashion_mnist", "--eval_bank_size", "20", "--eval_query_size", "10")
    )
    assert "k-NN monitor: off" in caplog.text and "monitor: fashion_mnist" not in caplog.text
    assert (tmp_path / "run" / "encoder").is_dir()


@needs_fmnist
def test_every_skip_reason_is_counted_in_the_summary(tmp_path):
    """Three kinds of bad record in one folder: each reason with its count (the rate-limited
    warning named only the first)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images" / "c0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "garbage.png").write_bytes(b"nope" * 20)
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(folder / "tiny.png")  # smaller than a patch
    Image.fromarray(np.zeros((3, 3, 3), dtype=np.uint8)).save(folder / "tiny2.png")
    summary = pretrain_module().main(_folder_args(tmp_path / "run", str(tmp_path / "images"), 5, "--per_device_train_batch_size", "4"))
    assert summary["skipped_by_reason"] == {"too_small": 2, "undecodable": 1}  # one pass over the folder: 4 steps of 4


def test_the_pixel_cap_counts_bytes(tmp_path):
    """At a cap of 1,000 pixels (3,000 bytes of RGB): a 30x30 RGB or 16-bit grey image (2,700 /
    1,800 bytes, its RGB copy 2,700) is decoded; a 30x30 RGBA or 32-bit float one (3,600 bytes) is
    refused before decoding, though it has fewer pixels than the cap."""
    import io

    import numpy as np
    from PIL import Image

    from cjepa_hf.data import BadRecord, decode_image

    def png(mode):
        image = Image.new(mode, (30, 30))
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF" if mode == "F" else "PNG")
        return buffer.getvalue()

    for mode in ("RGB", "I;16", "L"):
        assert decode_image(png(mode), max_image_pixels=1000).size == (30, 30)
    for mode in ("RGBA", "F"):
        with pytest.raises(BadRecord, match=rf"30x30 image \(0.0 MP, mode {mode}: 0 MB decoded\), at most max_image_pixels=1000"):
            decode_image(png(mode), max_image_pixels=1000)
    assert np.asarray(decode_image(png("RGBA"), max_image_pixels=1200)).shape == (30, 30, 4)


def _linear_probe():
    import importlib

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    try:
        return importlib.import_module("linear_probe")
    finally:
        sys.path.pop(0)


def test_linear_probe_skips_and_counts_a_bad_image(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in "ab":
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    (tmp_path / "train" / "a" / "bad.png").write_bytes(b"garbage" * 20)
    result = _linear_probe().main(
        ["--raw_pixels", "--image_size", "32", "--train_dir", str(tmp_path / "train"), "--validation_dir", str(tmp_path / "val")]
    )
    assert result["num_train"] == 12 and result["num_eval"] == 12
    assert result["skipped_images"] == {"train": {"undecodable": 1}, "eval": {}}


def test_a_requeued_slurm_job_takes_over_its_earlier_attempts_lock(tmp_path, monkeypatch):
    """An attempt killed on another node leaves its lock; the requeued attempt (same job id, a
    higher SLURM_RESTART_COUNT) takes it over; a lock of the same attempt, or another job, is refused."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    for holder, refused in [
        ({"slurm_job_id": "4242", "slurm_restart_count": 1}, True),
        ({"slurm_job_id": "999", "slurm_restart_count": 0}, True),
        ({"slurm_job_id": "4242", "slurm_restart_count": 0}, False),
    ]:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "node-017", **holder}))
        if refused:
            with pytest.raises(OutputDirInUseError, match="pid 1 on host node-017"):
                with hold_output_dir(_args(tmp_path)):
                    pass
        else:
            with hold_output_dir(_args(tmp_path)):
                mine = json.loads((tmp_path / LOCK_FILE).read_text())
                assert mine["pid"] == os.getpid() and mine["slurm_restart_count"] == 1


def test_a_resume_with_the_same_arguments_reports_no_change(tmp_path, caplog):
    """The checkpoint's training_args.json holds the run's own arguments (its save_total_limit
    too, which the trainer sets aside while Trainer saves)."""
    kw = dict(max_steps=2, save_strategy="steps", save_steps=2, save_total_limit=2)
    tiny_trainer(tmp_path, tiny_data(), **kw).train()
    assert json.loads((tmp_path / "checkpoint-2" / "training_args.json").read_text())["save_total_limit"] == 2
    with caplog.at_level(logging.WARNING, logger="cjepa_hf.training.resume"):
        tiny_trainer(tmp_path, tiny_data(), **kw).train(resume_from_checkpoint="latest")
    assert "changed arguments" not in caplog.text
