"""Faults that must never leave a bad checkpoint (issue 13, items 10-13 and 15): a skipped
non-finite step changes no state, rotation never deletes the last complete checkpoint,
every file a resume reads is validated, resume edge cases, a full disk."""

import errno
import json
import logging
import math
import os
import shutil

import pytest
import torch
from helpers.tiny import SeekableOrderedStream, tiny_data, tiny_trainer
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.trainer_callback import TrainerState

from cjepa_hf.masking import MaskCollator
from cjepa_hf.trainer import (
    CorruptCheckpointError,
    latest_valid_checkpoint,
    validate_checkpoint,
)

# ----------------------------------------------------------------------------- item 10


def test_a_skipped_step_changes_no_state_buffers_included(tmp_path):
    """Step 3's batch holds a NaN image: its BatchNorm statistics must not reach the
    projector's running buffers, the checkpoint after it is finite and valid, the eval-mode
    loss stays finite, and the logged loss of step 3 is NaN (not 0), in a history that
    Trainer's JSON round-trips."""
    trainer = tiny_trainer(tmp_path, SeekableOrderedStream(tiny_data(poison=[9])), max_steps=4, save_strategy="steps", save_steps=4)
    model = trainer.model
    states = []

    class Snap(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    trainer.add_callback(Snap())
    trainer.train()
    assert any(k.startswith("projector.norms.0.running") for k in states[0])
    for key, before in states[1].items():
        assert torch.equal(before, states[2][key]), key  # step 3 skipped: nothing moved, buffers included
    assert not torch.equal(states[2]["projector.norms.0.running_mean"], states[3]["projector.norms.0.running_mean"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    validate_checkpoint(str(tmp_path / "checkpoint-4"))
    saved = load_file(str(tmp_path / "checkpoint-4" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())

    model.eval()
    batch = MaskCollator(model.config, seed=5)(tiny_data(n=4, seed=9))
    with torch.no_grad():
        loss = model(batch["pixel_values"], batch["context_indices"], batch["target_indices"]).loss
    assert torch.isfinite(loss)

    logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3, 4]
    assert math.isnan(logs[2]["loss"])  # Trainer alone logs 0 here (its NaN filter)
    assert all(math.isfinite(logs[i]["loss"]) and logs[i]["loss"] > 0 for i in (0, 1, 3))
    trainer.state.save_to_json(str(tmp_path / "state.json"))
    again = TrainerState.load_from_json(str(tmp_path / "state.json"))
    assert math.isnan([h for h in again.log_history if h.get("step") == 3 and "loss" in h][0]["loss"])


def test_validate_checkpoint_rejects_non_finite_weights(tmp_path):
    out = tmp_path / "run"
    tiny_trainer(out, tiny_data(), max_steps=4, save_strategy="steps", save_steps=2).train()
    good, bad = out / "checkpoint-2", out / "checkpoint-4"
    weights = load_file(str(bad / "model.safetensors"))
    weights["projector.norms.0.running_var"][3] = float("nan")
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpointError, match=r"model.safetensors.*projector.norms.0.running_var.*non-finite"):
        validate_checkpoint(str(bad))
    assert latest_valid_checkpoint(str(out)) == str(good)
    # a truncated file is still refused (safe_open reads every tensor)
    data = (good / "model.safetensors").read_bytes()
    (good / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="model.safetensors is truncated"):
        validate_checkpoint(str(good))


# ----------------------------------------------------------------------------- item 11


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_rotation_never_deletes_the_last_complete_checkpoint(tmp_path, monkeypatch):
    # a normal run still rotates: only the newest checkpoint is kept
    tiny_trainer(tmp_path / "ok", tiny_data(), max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=1).train()
    assert sorted(os.listdir(tmp_path / "ok")) == ["checkpoint-4"]

    # killed while checkpoint-4 is written, before cjepa_state.json marks it complete
    real_dump = json.dump

    def dump(obj, fp, *args, **kwargs):
        name = str(getattr(fp, "name", ""))
        if "checkpoint-4" in name and "cjepa_state" in name:
            raise _Killed()
        return real_dump(obj, fp, *args, **kwargs)

    monkeypatch.setattr(json, "dump", dump)
    out = tmp_path / "killed"
    trainer = tiny_trainer(out, tiny_data(), max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=1)
    with pytest.raises(_Killed):
        trainer.train()
    monkeypatch.undo()
    assert latest_valid_checkpoint(str(out)) == str(out / "checkpoint-2")
    with pytest.raises(CorruptCheckpointError, match="lacks cjepa_state.json"):
        validate_checkpoint(str(out / "checkpoint-4"))


# ----------------------------------------------------------------------------- item 12


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    """A run over a stream with checkpoints at steps 2 and 4 (cjepa_state.json holds the data position)."""
    out = tmp_path_factory.mktemp("stream") / "run"
    tiny_trainer(out, SeekableOrderedStream(tiny_data()), max_steps=4, save_strategy="steps", save_steps=2).train()
    return out


def test_a_truncated_rng_state_is_rejected(stream_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stream_run, out)
    rng = out / "checkpoint-4" / "rng_state.pth"
    rng.write_bytes(rng.read_bytes()[:-50])
    with pytest.raises(CorruptCheckpointError, match="rng_state.pth is not a complete torch archive"):
        validate_checkpoint(str(out / "checkpoint-4"))
    assert latest_valid_checkpoint(str(out)) == str(out / "checkpoint-2")
    # a complete archive of the wrong content
    torch.save({"python": 1}, rng)
    with pytest.raises(CorruptCheckpointError, match=r"rng_state.pth.*lacks.*cpu"):
        validate_checkpoint(str(out / "checkpoint-4"))


def _edit(path, change):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("cjepa_state.json", lambda d: [d], "cjepa_state.json must hold a JSON object, got list"),
        ("cjepa_state.json", lambda d: {**d, "nonfinite_steps": "3"}, "nonfinite_steps must be an integer >= 0"),
        ("cjepa_state.json", lambda d: {**d, "data": {k: v for k, v in d["data"].items() if k != "records"}}, r"data lacks \['records'\]"),
        ("cjepa_state.json", lambda d: {**d, "data": {**d["data"], "records": [[8, 1]]}}, r"data.records must be 1 list\(s\) of 1 integer"),
        ("cjepa_state.json", lambda d: {**d, "online_probe_sums": [1.0]}, "online_probe_sums must be 3 numbers"),
        ("cjepa_state.json", lambda d: {**d, "dataloader_num_workers": -1}, "dataloader_num_workers must be an integer >= 0"),
        ("trainer_state.json", lambda d: [d], "trainer_state.json must hold a JSON object, got list"),
        ("trainer_state.json", lambda d: {k: v for k, v in d.items() if k != "global_step"}, "lacks global_step"),
        ("trainer_state.json", lambda d: {**d, "log_history": {}}, "log_history must be a list"),
        ("trainer_state.json", lambda d: {**d, "no_such_field": 1}, "unknown field"),
        ("config.json", lambda d: "ViT", "config.json must hold a JSON object, got str"),
    ],
)
def test_state_files_of_the_wrong_shape_are_corrupt(stream_run, tmp_path, name, change, message):
    out = tmp_path / "run"
    shutil.copytree(stream_run, out)
    folder = out / "checkpoint-4"
    _edit(folder / name, change)
    with pytest.raises(CorruptCheckpointError, match=message):
        validate_checkpoint(str(folder))
    assert latest_valid_checkpoint(str(out)) == str(out / "checkpoint-2")
    trainer = tiny_trainer(out, SeekableOrderedStream(tiny_data()), max_steps=6)
    with pytest.raises(CorruptCheckpointError, match=name):
        trainer.train(resume_from_checkpoint=str(folder))


# ----------------------------------------------------------------------------- item 13


def test_resume_with_another_number_of_dataloader_workers_warns(tmp_path, caplog):
    out = tmp_path / "run"
    tiny_trainer(
        out, SeekableOrderedStream(tiny_data()), max_steps=3, save_strategy="steps", save_steps=2, dataloader_num_workers=1
    ).train()
    trainer = tiny_trainer(out, SeekableOrderedStream(tiny_data()), max_steps=3, dataloader_num_workers=0)
    with caplog.at_level(logging.WARNING, logger="cjepa_hf.trainer"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert "dataloader_num_workers=1" in caplog.text and "this run has 0" in caplog.text
    assert trainer.state.global_step == 3


def test_resuming_a_finished_run_trains_and_writes_nothing(tmp_path, caplog):
    out = tmp_path / "run"
    first = tiny_trainer(out, tiny_data(), max_steps=4, save_strategy="steps", save_steps=2)
    first.train()
    target = {k: v.clone() for k, v in first.model.state_dict().items()}
    before = sorted(os.listdir(out))
    snapshot = {name: (out / "checkpoint-4" / name).read_bytes() for name in os.listdir(out / "checkpoint-4")}

    trainer = tiny_trainer(out, tiny_data(), max_steps=4, save_strategy="steps", save_steps=2)
    forwards = []
    original = trainer.model.forward
    trainer.model.forward = lambda *a, **k: (forwards.append(1), original(*a, **k))[1]
    with caplog.at_level(logging.INFO, logger="cjepa_hf.trainer"):
        result = trainer.train(resume_from_checkpoint="latest")
    assert "already complete" in caplog.text and "checkpoint-4" in caplog.text
    assert forwards == []
    assert sorted(os.listdir(out)) == before
    assert {name: (out / "checkpoint-4" / name).read_bytes() for name in os.listdir(out / "checkpoint-4")} == snapshot
    assert result.global_step == trainer.state.global_step == 4
    assert [h["step"] for h in trainer.state.log_history if "jepa_loss" in h] == [1, 2, 3, 4]
    for key, value in trainer.model.state_dict().items():  # what save_model would write: the finished model
        assert torch.equal(value, target[key]), key


# ----------------------------------------------------------------------------- item 15


def _fill_disk_at(monkeypatch, target):
    """Make the write of `target` (a file name) in checkpoint-4 write half its bytes, then fail
    as a full disk does."""
    real_save, real_dump = torch.save, json.dump

    def full(path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and str(f).endswith(os.path.join("checkpoint-4", target)):
            full(f)
        return real_save(obj, f, *args, **kwargs)

    def dump(obj, fp, *args, **kwargs):
        name = str(getattr(fp, "name", ""))
        if "checkpoint-4" in name and target in name:
            fp.write(json.dumps(obj)[:10])
            fp.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(obj, fp, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(json, "dump", dump)


@pytest.mark.parametrize("target", ["optimizer.pt", "cjepa_state"])
def test_a_full_disk_says_so_and_leaves_no_valid_partial_checkpoint(tmp_path, monkeypatch, target):
    out = tmp_path / "run"
    _fill_disk_at(monkeypatch, target)
    trainer = tiny_trainer(out, SeekableOrderedStream(tiny_data()), max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=1)
    with pytest.raises(OSError) as raised:
        trainer.train()
    monkeypatch.undo()
    message = str(raised.value)
    assert raised.value.errno == errno.ENOSPC
    assert "disk is full" in message and str(out / "checkpoint-4") in message
    with pytest.raises(CorruptCheckpointError):
        validate_checkpoint(str(out / "checkpoint-4"))
    assert latest_valid_checkpoint(str(out)) == str(out / "checkpoint-2")


def test_a_killed_save_over_an_earlier_checkpoint_of_that_step_is_not_valid(tmp_path, monkeypatch):
    """Resumed from checkpoint-2 while an earlier run's complete checkpoint-4 is still there:
    a save of step 4 killed between two files (new weights, old optimizer state) must not leave
    that folder looking complete."""
    out = tmp_path / "run"
    tiny_trainer(out, tiny_data(), max_steps=4, save_strategy="steps", save_steps=2).train()
    validate_checkpoint(str(out / "checkpoint-4"))
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(os.path.join("checkpoint-4", "optimizer.pt")):
            raise _Killed()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    trainer = tiny_trainer(out, tiny_data(), max_steps=4, save_strategy="steps", save_steps=2)
    with pytest.raises(_Killed):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    monkeypatch.undo()
    with pytest.raises(CorruptCheckpointError, match="lacks cjepa_state.json"):
        validate_checkpoint(str(out / "checkpoint-4"))
    assert latest_valid_checkpoint(str(out)) == str(out / "checkpoint-2")
