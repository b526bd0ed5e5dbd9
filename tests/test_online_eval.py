"""Online evaluation: the linear probe on detached target features and the k-NN monitor."""

import json
import shutil

import pytest
import torch
from helpers.tiny import run_train_tiny, tiny_data, tiny_trainer, train_tiny_here

from cjepa_hf.evaluation import extract_features, knn_accuracy
from cjepa_hf.online_eval import KNNMonitorSet, OnlineLinearProbe
from cjepa_hf.trainer import CJEPATrainingArguments, validate_checkpoint


def test_the_probe_leaves_the_encoders_updates_unchanged(tmp_path):
    with_probe = tiny_trainer(tmp_path / "a", tiny_data(labels=True), max_steps=5, online_probe_num_labels=3)
    without = tiny_trainer(tmp_path / "b", tiny_data(labels=True), max_steps=5, online_probe=False)
    probe_before = with_probe.online_probe.head.weight.detach().clone()
    with_probe.train()
    without.train()
    assert without.online_probe is None
    a, b = with_probe.model.state_dict(), without.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # ... while the probe itself did learn and its accuracy was logged
    assert not torch.equal(probe_before, with_probe.online_probe.head.weight)
    logs = [h for h in with_probe.state.log_history if "online_linear_top1" in h]
    assert len(logs) == 5 and all(0.0 <= h["online_linear_top1"] <= 1.0 for h in logs)
    assert all(h["online_probe_loss"] > 0 for h in logs)
    assert not any(k.startswith("online") for k in with_probe.model.state_dict())  # never exported


def test_a_nonfinite_batch_does_not_touch_the_probe():
    probe = OnlineLinearProbe(8, 3)
    probe.build_optimizer()
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    probe.step(x, y)
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    loss, correct, used = probe.step(torch.full((6, 8), float("nan")), y)
    assert (loss.item(), correct.item(), used.item()) == (0.0, 0.0, 0.0)
    for key, value in probe.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert int(probe.optimizer.state[probe.head.weight]["step"]) == 1


def test_the_probe_normalises_features_of_a_small_scale_around_a_large_mean():
    """Target features early in a small run: a shared mean direction and a spread of about 0.02.
    The probe (batch-normalised) separates 3 classes in 200 steps at lr 1e-3; the same head and
    optimizer on the raw features stay near chance. Evaluation uses the running moments."""
    import torch.nn.functional as F

    def run(normalised):
        g = torch.Generator().manual_seed(0)
        centers, offset = torch.randn(3, 16, generator=g), torch.randn(16, generator=g)

        def batch(n=64):
            y = torch.randint(0, 3, (n,), generator=g)
            return offset + 0.02 * (centers[y] + 0.5 * torch.randn(n, 16, generator=g)), y

        probe = OnlineLinearProbe(16, 3)
        optimizer = probe.build_optimizer()
        for _ in range(200):
            x, y = batch()
            if normalised:
                probe.step(x, y)
            else:
                optimizer.zero_grad()
                F.cross_entropy(probe.head(x), y).backward()
                optimizer.step()
        x, y = batch(2000)
        if normalised:
            torch.testing.assert_close(probe.running_mean, x.mean(dim=0), atol=2e-3, rtol=0)
            return probe.accuracy(x, y)
        return (probe.head(x).argmax(dim=1) == y).float().mean().item()

    assert run(normalised=True) > 0.95
    assert run(normalised=False) < 0.5


def test_the_probe_needs_a_class_count_when_the_data_does_not_give_one(tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        label_column = "label"

        def __iter__(self):
            return iter(tiny_data(labels=True))

    with pytest.raises(ValueError, match="set --online_probe_num_labels"):
        tiny_trainer(tmp_path, Stream(), max_steps=1)
    with pytest.raises(ValueError, match="online_probe_lr must be > 0, got 0"):
        CJEPATrainingArguments(output_dir=str(tmp_path), use_cpu=True, online_probe_lr=0.0)


def test_knn_monitor_equals_the_offline_knn_on_the_same_features(tmp_path):
    monitor = KNNMonitorSet("fashion_mnist", image_size=32, patch_size=4, bank_size=60, query_size=40)
    assert monitor.num_labels == 10
    trainer = tiny_trainer(
        tmp_path,
        tiny_data(labels=True),
        eval_dataset=monitor,
        max_steps=2,
        online_probe_num_labels=10,
        eval_strategy="steps",
        eval_steps=2,
        eval_on_start=True,
        per_device_eval_batch_size=16,
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_knn_top1" in h]
    assert [h["step"] for h in evals] == [0, 2]
    # offline: the same 100 images through the evaluation module's feature extraction
    pixels = torch.stack([x for _, x, _ in _flat(monitor)])
    labels = torch.tensor([y for _, _, y in _flat(monitor)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, labels), batch_size=50)
    features, _ = extract_features(trainer.model.target_encoder, loader)
    expected = knn_accuracy(features[:60], labels[:60], features[60:], labels[60:], k=20, temperature=0.07)
    assert evals[-1]["eval_knn_top1"] == expected
    assert 0.0 < expected < 1.0  # a real score, not a degenerate one
    assert evals[-1]["eval_linear_top1"] == trainer.online_probe.accuracy(features[60:], labels[60:])


def test_a_resumed_run_does_not_evaluate_its_checkpoints_step_again(tmp_path):
    monitor = KNNMonitorSet("fashion_mnist", image_size=32, patch_size=4, bank_size=20, query_size=10)
    kw = dict(eval_dataset=monitor, online_probe_num_labels=10, eval_strategy="steps", eval_steps=2, eval_on_start=True)
    tiny_trainer(tmp_path, tiny_data(labels=True), max_steps=2, save_strategy="steps", save_steps=2, **kw).train()
    trainer = tiny_trainer(tmp_path, tiny_data(labels=True), max_steps=4, **kw)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    # step 2's evaluation comes from the checkpoint's log; eval_on_start does not repeat it
    assert [h["step"] for h in trainer.state.log_history if "eval_knn_top1" in h] == [0, 2, 4]
    assert trainer.args.eval_on_start  # the user's setting, back after the run
    # from a checkpoint of a step that was not evaluated, eval_on_start does evaluate it
    tiny_trainer(tmp_path / "b", tiny_data(labels=True), max_steps=3, save_strategy="steps", save_steps=3, **kw).train()
    trainer = tiny_trainer(tmp_path / "b", tiny_data(labels=True), max_steps=4, **kw)
    trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-3"))
    assert [h["step"] for h in trainer.state.log_history if "eval_knn_top1" in h] == [0, 2, 3, 4]


def _flat(monitor):
    for positions, pixels, labels in monitor.batches(batch_size=7):
        yield from zip(positions.tolist(), pixels, labels.tolist())


def test_knn_monitor_shares_cover_the_set_once():
    monitor = KNNMonitorSet("fashion_mnist", image_size=32, patch_size=4, bank_size=10, query_size=5)
    whole = [p for p, _, _ in _flat(monitor)]
    shares = [int(p) for r in range(2) for positions, _, _ in monitor.batches(r, 2, batch_size=3) for p in positions]
    assert whole == list(range(15)) and sorted(shares) == whole
    with pytest.raises(ValueError, match="eval_bank_size must be a positive integer, got 0"):
        KNNMonitorSet("fashion_mnist", image_size=32, patch_size=4, bank_size=0)


def test_resume_with_the_probe_is_exact(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train_tiny_here([full, 6, "--save-steps", 3, "--labels"])  # the resume below is the fresh process
    validate_checkpoint(str(full / "checkpoint-3"))
    assert (full / "checkpoint-3" / "online_probe.safetensors").exists()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    run_train_tiny([resumed, 6, "--resume", resumed / "checkpoint-3", "--labels"])
    a = json.loads((full / "run.json").read_text())
    b = json.loads((resumed / "run.json").read_text())
    assert len(a["probe"]) == 3 * 32
    assert max(abs(u - v) for u, v in zip(a["probe"], b["probe"])) <= 1e-6
    for x, y in zip(a["logs"][3:], b["logs"][3:]):
        assert x["online_linear_top1"] == pytest.approx(y["online_linear_top1"], abs=1e-6)
        assert x["online_probe_loss"] == pytest.approx(y["online_probe_loss"], abs=1e-5)
