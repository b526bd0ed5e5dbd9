"""Two real CPU processes through `accelerate launch` (gloo), see tests/helpers/ddp_check.py (the
launch is shared with test_fsdp.py: conftest's `two_process_checks`)."""

import json

import pytest


@pytest.fixture(scope="module")
def ddp_result(two_process_checks):
    result = json.loads((two_process_checks / "ddp" / "result.json").read_text())
    result["output"] = (two_process_checks / "output.txt").read_text()
    return result


def test_two_processes_equal_one_process_on_the_concatenated_batch(ddp_result):
    r = ddp_result["gradients"]
    # variance and covariance see the gathered batch; the mean over ranks of the local terms
    # (jepa, invariance) equals the global value
    for key in ("loss", "jepa_loss", "vicreg_invariance", "vicreg_variance", "vicreg_covariance", "encoder_variance", "encoder_covariance"):
        assert r[key] == pytest.approx(r["ref_" + key], abs=1e-5), key
    assert r["same_grad_keys"]
    assert r["max_grad"] > 1e-3  # the comparison is not between zeros
    assert r["max_grad_diff"] < 1e-5


def test_trainer_on_two_processes_keeps_ranks_identical(ddp_result):
    r = ddp_result["trainer"]
    assert r["world_size"] == 2 and r["ddp_wrapped"] == "DistributedDataParallel"
    assert r["rank_weight_max_diff"] == 0.0
    assert r["ema_moved"]
    assert len(r["logged"]) == 2 and all(h["vicreg_variance"] > 0 for h in r["logged"])


def test_online_probe_and_knn_monitor_on_two_processes(ddp_result):
    r = ddp_result["online_eval"]
    assert r["probe_rank_max_diff"] == 0.0  # every rank trains its copy on the gathered batch
    assert len(r["probe_logged"]) == 2
    assert r["eval_knn_top1"] == r["ref_knn_top1"]  # gathered features = one process on the whole set
    assert r["eval_linear_top1"] == r["ref_linear_top1"]


def test_ddp_runs_without_the_unused_parameter_search(ddp_result):
    """ddp_find_unused_parameters defaults to False (every trainable parameter gets a gradient):
    DDP does not traverse the graph for unused ones, and prints no warning about it."""
    assert ddp_result["trainer"]["find_unused_parameters"] is False
    assert "find_unused_parameters" not in ddp_result["output"]
