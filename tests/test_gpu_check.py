"""scripts/gpu_check.sh end to end in its CPU dry-run mode (tiny sizes), so that the GPU check
cannot rot before it meets a GPU: every part runs and the JSON holds what the GPU run will
report, for the trainer's own step."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = "CJEPATrainer.training_step + optimizer step + EMA callback"  # cjepa_hf.bench.STEP (test_performance checks it)
CUDA_TESTS = (
    "test_cuda_bf16_autocast_keeps_fp32_master_weights",
    "test_cuda_benchmark_step_does_not_synchronize",
    "test_cuda_trainer_train_does_not_synchronize_between_log_steps",
)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_gpu_check_dry_run(tmp_path):
    output = tmp_path / "gpu_check.json"
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "OUT": str(output),
        "PYTHON": sys.executable,
        "PEAK_TFLOPS": "1",  # the override flag, so that MFU is a number on the CPU too
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "gpu_check.sh")], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    data = json.loads(output.read_text())
    assert data["dry_run"] is True and data["device_type"] == "cpu" and data["step"] == STEP
    assert data["peak_bf16_dense_flops"] == 1e12 and data["peak_flops_source"] == "--peak-tflops"
    assert set(data["parts"]) == {"tests", "steps", "pipeline", "distributed"}

    # The CUDA-only tests are the ones selected, and they skip on the CPU.
    tests = data["parts"]["tests"]
    assert tests["status"] == "passed" and tests["failed"] == 0, tests
    selected = {case["name"].rsplit("::", 1)[-1]: case["outcome"] for case in tests["cases"]}
    assert set(CUDA_TESTS) <= set(selected), selected
    assert all(selected[name] == "skipped" for name in CUDA_TESTS)

    # The step: the trainer's, at the three sizes, with positive finite figures.
    steps = data["parts"]["steps"]
    assert set(steps) == {"vit_b16", "vit_b16_compile", "vit_l16"}
    for name, entry in steps.items():
        assert entry["status"] == "measured", (name, entry)
        assert entry["step"] == entry["result"]["step"] == STEP
        assert entry["trainer_class"] == "CJEPATrainer"
        assert entry["trainer_global_step"] == sum(entry["steps_per_setup"].values())  # every step went through the trainer
        for key in ("images_per_s", "step_time_s", "tflops", "mfu"):
            assert _positive(entry[key]), (name, key, entry[key])
        assert math.isclose(entry["mfu"], entry["tflops"] * 1e12 / 1e12, rel_tol=1e-9)
        assert math.isclose(entry["images_per_s"], entry["batch_size"] / entry["step_time_s"], rel_tol=1e-9)
        assert entry["peak_memory_bytes"] is None or _positive(entry["peak_memory_bytes"])
        assert entry["result"]["flops_per_step_mean"] > 0
    assert steps["vit_b16_compile"]["compile"] and steps["vit_b16_compile"]["result"]["options"]["compile"]
    assert not steps["vit_b16"]["compile"] and _positive(steps["vit_b16"]["speedup_over_plain"])

    # The input pipeline against the step it must feed.
    pipe = data["parts"]["pipeline"]
    assert pipe["status"] == "measured" and _positive(pipe["images_per_s"]) and pipe["num_workers"] >= 1
    need = max(steps["vit_b16"]["images_per_s"], steps["vit_b16_compile"]["images_per_s"])
    assert pipe["step_images_per_s"] == need
    assert pipe["feeds_step"] == (pipe["images_per_s"] >= need)
    assert math.isclose(pipe["shortfall_images_per_s"], max(need - pipe["images_per_s"], 0.0), abs_tol=1e-9)
    assert pipe["verdict"].startswith("the pipeline feeds the step" if pipe["feeds_step"] else "the pipeline falls short")
    assert pipe["gpu_decode"]["status"] == "skipped"

    # DDP measured; FSDP measured once the trainer has it, else reported as skipped (no figure).
    dist = data["parts"]["distributed"]
    assert dist["status"] == "measured" and dist["world_size"] == 1, dist
    ddp = dist["modes"]["ddp"]
    assert ddp["status"] == "measured" and ddp["step"] == STEP and _positive(ddp["images_per_s"])
    assert ddp["wrapped_model_class"] == "DistributedDataParallel" and ddp["trainer_global_step"] == 3
    fsdp = dist["modes"]["fsdp"]
    if fsdp["status"] == "skipped":
        assert fsdp["reason"].startswith("FSDP not available") and "images_per_s" not in fsdp
    else:
        assert fsdp["status"] == "measured" and _positive(fsdp["images_per_s"]) and fsdp["trainer_global_step"] == 3

    printed = proc.stdout
    for text in ("img/s", "MFU", "input pipeline:", "ddp", "fsdp", f"wrote {output}"):
        assert text in printed, text
