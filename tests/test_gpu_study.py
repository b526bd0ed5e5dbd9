"""scripts/gpu_fmnist_study.sh end to end in its CPU dry-run mode (tiny sizes), so that the GPU
command cannot rot before it meets a GPU."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs the Fashion-MNIST IDX files (`make test` installs them)",
)


def test_gpu_study_dry_run(tmp_path):
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "DRY_RUN_SECONDS": "2",  # each run trains for about 2 s (the script's dry-run default is 4)
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "gpu_fmnist_study.sh")], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((tmp_path / "gpu_fmnist_14x14_summary.json").read_text())
    assert summary["spec"]["calibration"]["max_steps"] >= 1
    for name in ("ijepa+encvar_pool0.05", "ijepa"):
        entry = summary["summary"][name]
        assert len(entry["linear_probe"]["values"]) == 1 and 0.0 < entry["linear_probe"]["values"][0] <= 1.0
    assert set(summary["summary"]) >= {"random_init", "raw_pixels"}
    record = json.loads((tmp_path / "records" / "ijepa+encvar_pool0.05-seed0.json").read_text())
    assert record["global_step"] == summary["spec"]["calibration"]["max_steps"]
