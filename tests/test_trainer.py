import json
import logging
import math
import os
import shutil

import pytest
import torch
from conftest import TINY
from helpers.tiny import OrderedStream, run_train_tiny, tiny_data, tiny_trainer, train_tiny_here

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining
from cjepa_hf.trainer import (
    CJEPATrainingArguments,
    CorruptCheckpointError,
    latest_valid_checkpoint,
    lr_at,
    momentum_at,
    param_groups,
    validate_checkpoint,
    weight_decay_at,
)

# ----------------------------------------------------------------------------- schedules


def test_lr_schedule_at_chosen_steps():
    kw = dict(total_steps=100, warmup_steps=10, start_lr=1e-4, peak_lr=1e-3, final_lr=1e-6)
    assert lr_at(0, **kw) == pytest.approx(1e-4)
    assert lr_at(5, **kw) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(10, **kw) == pytest.approx(1e-3)
    assert lr_at(55, **kw) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, **kw) == pytest.approx(1e-6)
    assert lr_at(150, **kw) == pytest.approx(1e-6)


def test_weight_decay_and_momentum_schedules():
    assert weight_decay_at(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert weight_decay_at(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert weight_decay_at(25, 100, 0.04, 0.4) == pytest.approx(0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert weight_decay_at(25, 100, 0.04, 0.4, "linear") == pytest.approx(0.04 + 0.36 * 0.25)
    assert weight_decay_at(100, 100, 0.04, 0.4, "linear") == pytest.approx(0.4)
    with pytest.raises(ValueError, match="schedule must be one of"):
        weight_decay_at(0, 10, 0.1, 0.2, "step")
    assert momentum_at(0, 200) == pytest.approx(0.996)
    assert momentum_at(100, 200) == pytest.approx(0.998)
    assert momentum_at(200, 200) == pytest.approx(1.0)


def test_param_groups_exclude_target_and_skip_decay_on_1d(tiny_config):
    model = CJEPAForPreTraining(tiny_config)
    decay, no_decay = param_groups(model, 0.04)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert not any(n.startswith("target_encoder.") for n in decay_names | no_decay_names)
    assert "predictor.mask_token" in no_decay_names
    assert all(n.endswith(".bias") or "norm" in n or n == "predictor.mask_token" for n in no_decay_names)
    assert "context_encoder.layers.0.attention.qkv.weight" in decay_names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("weight_decay_schedule", "step", "weight_decay_schedule must be one of"),
        ("ema_momentum", 1.5, "ema_momentum must lie in"),
        ("max_consecutive_nonfinite", 0, "max_consecutive_nonfinite must be >= 1"),
    ],
)
def test_training_arguments_validation(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        CJEPATrainingArguments(output_dir=str(tmp_path), use_cpu=True, **{field: value})


# ----------------------------------------------------------------------------- in-process training


def test_ema_once_per_optimizer_step_with_gradient_accumulation(tmp_path, tiny_config):
    trainer = tiny_trainer(tmp_path, config=tiny_config, data=tiny_data(), max_steps=3, gradient_accumulation_steps=2)
    model = trainer.model
    calls, forwards = [], []
    original = model.update_target_encoder
    model.update_target_encoder = lambda m: (calls.append(float(m)), original(m))[1]
    original_forward = model.forward
    model.forward = lambda *a, **k: (forwards.append(1), original_forward(*a, **k))[1]
    trainer.train()
    assert len(forwards) == 6 and len(calls) == 3
    assert calls == pytest.approx([momentum_at(s, 3) for s in range(3)])


def test_logged_schedules_match_formulas(tmp_path, tiny_config):
    trainer = tiny_trainer(tmp_path, config=tiny_config, data=tiny_data(), max_steps=4, weight_decay_schedule="linear")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3, 4]
    for h in logs:
        s = h["step"] - 1  # the values used by the update that ended at this step
        assert h["learning_rate"] == pytest.approx(lr_at(s, 4, 1, 1e-4, 1e-3, 1e-6))
        assert h["weight_decay"] == pytest.approx(weight_decay_at(s, 4, 0.04, 0.4, "linear"))
        assert h["ema_momentum"] == pytest.approx(momentum_at(s, 4))
        assert h["loss"] == pytest.approx(h["jepa_loss"] + 0.001 * h["vicreg_loss"], rel=1e-5)
        assert h["target_effective_rank"] >= 1.0 and h["target_feature_std"] >= 0.0
        # 4 images: the centred features have at most 3 non-zero singular values
        assert 1.0 <= h["target_effective_rank_centered"] <= 3.01
        assert h["skipped_records"] == 0 and h["nonfinite_steps"] == 0


def test_nonfinite_loss_skips_update_and_ema(tmp_path, tiny_config):
    # batch 2 (step 3) holds a NaN image: its loss is NaN and that step must change nothing
    trainer = tiny_trainer(tmp_path, config=tiny_config, data=OrderedStream(tiny_data(poison=[9])), max_steps=4)
    model = trainer.model
    snapshots = []

    class Snap(__import__("transformers").TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})

    trainer.add_callback(Snap())
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for name, before in snapshots[1].items():
        assert torch.equal(before, snapshots[2][name]), name  # step 3 skipped: no update, no EMA
    assert any(not torch.equal(snapshots[2][n], snapshots[3][n]) for n in snapshots[2])  # step 4 trained
    logs = [h for h in trainer.state.log_history if "nonfinite_steps" in h]
    assert [h["nonfinite_steps"] for h in logs] == [0, 0, 1, 1]
    # the skipped step's window logs NaN; the next window is finite again (Trainer's loss sum was
    # not poisoned, with its per-step isnan check off: no host sync)
    assert not trainer.args.logging_nan_inf_filter
    assert [math.isnan(h["loss"]) for h in logs] == [False, False, True, False]


def test_consecutive_nonfinite_losses_stop_training(tmp_path, tiny_config):
    trainer = tiny_trainer(tmp_path, config=tiny_config, data=tiny_data(poison=range(32)), max_steps=10, max_consecutive_nonfinite=3)
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite losses"):
        trainer.train()
    assert trainer.state.global_step == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nonfinite_weights_or_optimizer_state_are_never_saved(tmp_path, tiny_config):
    """An update with a finite loss can overflow the weights (here: set by hand after step 4):
    the checkpoint of that step and the final save are refused before any file is written,
    naming the tensors; the checkpoint before stays valid."""
    trainer = tiny_trainer(tmp_path, config=tiny_config, data=tiny_data(), max_steps=4, save_strategy="steps", save_steps=2)
    model = trainer.model
    weight_name, weight = next(model.named_parameters())
    context_name, context = next((n, p) for n, p in model.named_parameters() if n.startswith("context_encoder."))

    class Overflow(__import__("transformers").TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:
                with torch.no_grad():
                    weight.view(-1)[0] = float("inf")
                    trainer.optimizer.state[context]["exp_avg_sq"].view(-1)[-1] = float("nan")

    trainer.add_callback(Overflow())
    with pytest.raises(FloatingPointError, match=r"not writing .*checkpoint-4'?: 2 tensor\(s\) hold NaN or infinity") as error:
        trainer.train()
    assert weight_name in str(error.value) and f"optimizer exp_avg_sq of {context_name}" in str(error.value)
    assert not (tmp_path / "checkpoint-4").exists()
    validate_checkpoint(str(tmp_path / "checkpoint-2"))
    with pytest.raises(FloatingPointError, match=rf"not writing .*final'?: 1 tensor\(s\) .*\({weight_name}\)"):
        trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final").exists()


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_in_a_new_process_is_exact(tmp_path, workers):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train_tiny_here([full, 6, "--save-steps", 3, "--workers", workers])  # the resume below is the fresh process
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    run_train_tiny([resumed, 6, "--resume", resumed / "checkpoint-3", "--workers", workers])
    a = json.loads((full / "run.json").read_text())
    b = json.loads((resumed / "run.json").read_text())
    assert [h["step"] for h in b["logs"]] == [1, 2, 3, 4, 5, 6]  # steps 1-3 come from the checkpoint's state
    for x, y in zip(a["logs"][3:], b["logs"][3:]):
        for key in ("loss", "jepa_loss", "vicreg_loss", "learning_rate", "weight_decay", "ema_momentum"):
            assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])
    assert a["masks"][3:] == b["masks"]  # the same masks at steps 4..6
    assert len(set(a["masks"])) == 6  # ... and the masks do change from step to step
    assert max(abs(u - v) for u, v in zip(a["target"], b["target"])) <= 1e-6
    assert a["target_sum"] == pytest.approx(b["target_sum"], abs=1e-4)


def test_resume_with_accumulation_over_an_uneven_epoch_is_exact(tmp_path):
    """96 examples in batches of 8 = 12 micro-batches per epoch, 5 per step: 3 optimizer steps per
    epoch, the last of 2 micro-batches (Trainer counts it as a step). Resumed at step 4 (one step
    into epoch 1), the data and the masks continue at micro-batch 5 of epoch 1."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train_tiny_here([full, 6, "--save-steps", 4, "--grad-accum", 5])
    shutil.copytree(full / "checkpoint-4", resumed / "checkpoint-4")
    train_tiny_here([resumed, 6, "--resume", resumed / "checkpoint-4", "--grad-accum", 5])
    a = json.loads((full / "run.json").read_text())
    b = json.loads((resumed / "run.json").read_text())
    assert len(a["masks"]) == 2 * 12  # two whole epochs of micro-batches
    assert b["masks"] == a["masks"][12 + 5 :]  # epoch 1 from its 6th micro-batch
    assert [h["step"] for h in b["logs"]] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a["logs"][4:], b["logs"][4:]):
        for key in ("loss", "jepa_loss", "learning_rate"):
            assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])
    assert max(abs(u - v) for u, v in zip(a["target"], b["target"])) <= 1e-6


def test_corrupt_checkpoints_are_reported_and_latest_skips_them(tmp_path):
    out = tmp_path / "run"
    train_tiny_here([out, 4, "--save-steps", 2])
    good, bad = out / "checkpoint-2", out / "checkpoint-4"
    validate_checkpoint(str(good))
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(CorruptCheckpointError, match="model.safetensors is truncated"):
        validate_checkpoint(str(bad))
    assert latest_valid_checkpoint(str(out)) == str(good)
    (good / "optimizer.pt").write_bytes(b"not a zip")
    with pytest.raises(CorruptCheckpointError, match="optimizer.pt is not a complete torch archive"):
        validate_checkpoint(str(good))
    assert latest_valid_checkpoint(str(out)) is None
    os.remove(good / "trainer_state.json")
    with pytest.raises(CorruptCheckpointError, match="lacks trainer_state.json"):
        validate_checkpoint(str(good))


def test_resume_refuses_a_corrupt_checkpoint(tmp_path, tiny_config):
    folder = tmp_path / "checkpoint-7"
    folder.mkdir()
    trainer = tiny_trainer(tmp_path, config=tiny_config, data=tiny_data(), max_steps=2)
    with pytest.raises(CorruptCheckpointError, match="no \\*.safetensors weights"):
        trainer.train(resume_from_checkpoint=str(folder))
    with pytest.raises(CorruptCheckpointError, match="no valid checkpoint to resume from"):
        trainer.train(resume_from_checkpoint="latest")


def test_trainer_model_card_is_the_cjepa_card(tmp_path, tiny_config):
    from huggingface_hub import ModelCard

    trainer = tiny_trainer(tmp_path, config=tiny_config, data=tiny_data(), max_steps=2)
    trainer.train()
    trainer.create_model_card(dataset="fashion_mnist")  # what Trainer.push_to_hub writes before uploading
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction" and card.data.library_name == "transformers"
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]  # the Hub id of the local IDX files
    assert "model-index" not in card.content  # no results were measured, none are claimed


def test_a_stream_that_cannot_seek_is_replayed_by_trainer(tmp_path, tiny_config, caplog):
    """A plain IterableDataset (no `resume_at`): the checkpoint still records the position,
    and resuming falls back to Trainer's replay, which is exact inside the first epoch."""

    def run(out, resume=None):
        trainer = tiny_trainer(out, config=tiny_config, data=OrderedStream(tiny_data()), max_steps=4, save_strategy="steps", save_steps=2)
        trainer.train(resume_from_checkpoint=resume)
        return [h for h in trainer.state.log_history if "jepa_loss" in h]

    full = run(tmp_path / "full")
    state = json.loads((tmp_path / "full" / "checkpoint-2" / "cjepa_state.json").read_text())
    assert state["data"] == {"epoch": 0, "batches": 2, "world_size": 1, "num_workers": 1, "records": [[8]]}
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    with caplog.at_level(logging.WARNING, logger="cjepa_hf.trainer"):
        resumed = run(tmp_path / "resumed", str(tmp_path / "resumed" / "checkpoint-2"))
    assert "OrderedStream has no resume_at(epoch, records) to seek with" in caplog.text
    assert [h["step"] for h in resumed] == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's state
    for x, y in zip(full[2:], resumed[2:]):
        assert abs(x["jepa_loss"] - y["jepa_loss"]) <= 1e-6, (x["step"], x["jepa_loss"], y["jepa_loss"])


def test_encoder_regulariser_terms_are_logged(tmp_path):
    config = CJEPAConfig(**{**TINY, "encoder_vicreg_weight": 0.1})
    trainer = tiny_trainer(tmp_path, config=config, data=tiny_data(), max_steps=2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["encoder_vicreg_loss"] == pytest.approx(25 * h["encoder_variance"] + h["encoder_covariance"], rel=1e-4)
        assert h["loss"] == pytest.approx(h["jepa_loss"] + 0.001 * h["vicreg_loss"] + 0.1 * h["encoder_vicreg_loss"], rel=1e-4)


# ----------------------------------------------------------------------------- arguments that cannot train


@pytest.mark.parametrize("stream", [False, True])
def test_a_dataset_smaller_than_one_batch_fails_before_any_work(tmp_path, tiny_config, stream):
    """Trainer alone ends after 0 steps (exit status 0) when a finite dataset has fewer examples than
    one global batch; the trainer refuses it before building a dataloader or taking a step."""

    class SizedStream(OrderedStream):
        def __len__(self):
            return len(self.items)

    data = SizedStream(tiny_data(n=3)) if stream else tiny_data(n=3)
    trainer = tiny_trainer(tmp_path, config=tiny_config, data=data, max_steps=2)
    forwards = []
    original = trainer.model.forward
    trainer.model.forward = lambda *a, **k: (forwards.append(1), original(*a, **k))[1]
    with pytest.raises(ValueError, match=r"3 example\(s\).*per_device_train_batch_size=4") as raised:
        trainer.train()
    assert "per_device_train_batch_size=4 x 1 process(es) = 4" in str(raised.value)
    assert forwards == [] and trainer.state.global_step == 0
    assert not os.listdir(tmp_path) or not any(name.startswith("checkpoint") for name in os.listdir(tmp_path))
    tiny_trainer(tmp_path / "ok", config=tiny_config, data=tiny_data(n=4), max_steps=1).train()  # exactly one batch trains


def test_ddp_does_not_search_for_unused_parameters_by_default(tmp_path):
    args = CJEPATrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert args.ddp_find_unused_parameters is False
