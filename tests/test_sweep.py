"""scripts/sweep.py: override sets x seeds in parallel processes, records, resume, summary."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "scripts", "sweep.py")

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs the Fashion-MNIST IDX files (`make test` installs them)",
)


def _sweep_module():
    """scripts/sweep.py imported as a module (scripts/ is not a package)."""
    import importlib

    sys.path.insert(0, os.path.dirname(SWEEP))
    try:
        return importlib.import_module("sweep")
    finally:
        sys.path.pop(0)


def _spec(tmp_path, **extra):
    recipe = {
        "dataset": "fashion_mnist",
        "config_overrides": json.dumps(TINY),
        "max_steps": 4,
        "per_device_train_batch_size": 16,
        "warmup_steps": 1,
        "logging_steps": 2,
        "save_steps": 2,
        "dataloader_num_workers": 0,
        "shuffle_buffer": 64,
        "report_to": "none",
        "disable_tqdm": True,
        "eval_dataset": "fashion_mnist",
        "eval_strategy": "steps",
        "eval_steps": 2,
        "eval_bank_size": 40,
        "eval_query_size": 20,
    }
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    spec = {
        "name": "tiny",
        "recipe": str(tmp_path / "recipe.json"),
        "common": {"learning_rate": 1e-3, "config_overrides": "vicreg_std_coeff=20"},
        "runs": {
            "cjepa": {"objective": "cjepa", "config_overrides": "vicreg_weight=0.05"},
            "ijepa_ema99": {"objective": "ijepa", "ema_momentum": 0.99},
        },
        "seeds": [0],
        **extra,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return tmp_path / "spec.json"


def _sweep(tmp_path, spec, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        SWEEP,
        str(spec),
        "--parallel",
        "2",
        "--work_dir",
        str(tmp_path / "work"),
        "--records",
        str(tmp_path / "records"),
        "--output_dir",
        str(tmp_path / "results"),
        "--poll_seconds",
        "0.5",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One finished two-run sweep (each run 4 steps), shared by the tests: (folder, spec)."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = _spec(folder)
    _sweep(folder, spec)
    return folder, spec


def test_sweep_runs_records_and_summarises(swept):
    tmp_path, _ = swept
    records = {f: json.loads((tmp_path / "records" / f).read_text()) for f in os.listdir(tmp_path / "records")}
    assert set(records) == {"cjepa-seed0.json", "ijepa_ema99-seed0.json"}
    for record in records.values():
        assert record["global_step"] == 4 and record["metric"] == "eval_knn_top1"
        assert record["timed_steps"] == 4 and record["train_seconds"] > 0  # one process trained every step
        assert [e["step"] for e in record["online_eval"]] == [2, 4]
        assert record["value"] == record["online_eval"][-1]["eval_knn_top1"] and 0.0 < record["value"] <= 1.0
    # the overrides reached the runs
    args = json.loads((tmp_path / "work" / "ijepa_ema99-seed0" / "training_args.json").read_text())
    config = json.loads((tmp_path / "work" / "ijepa_ema99-seed0" / "config.json").read_text())
    assert args["ema_momentum"] == 0.99 and config["vicreg_weight"] == 0 and config["hidden_size"] == 32
    assert config["vicreg_std_coeff"] == 20  # the common config_overrides merged with the run's
    summary = json.loads((tmp_path / "results" / "tiny_summary.json").read_text())["summary"]
    assert summary["cjepa"]["eval_knn_top1"]["values"] == [records["cjepa-seed0.json"]["value"]]
    rate = records["cjepa-seed0.json"]["train_seconds"] * 100 / 4
    assert summary["cjepa"]["train_seconds_per_100_steps"]["values"] == [pytest.approx(rate)]
    assert (tmp_path / "results" / "tiny_online_knn.png").read_bytes()[:4] == b"\x89PNG"
    assert "ijepa_ema99" in (tmp_path / "results" / "tiny_table.md").read_text()


def test_a_finished_sweep_runs_nothing_and_an_interrupted_run_resumes(swept, tmp_path):
    source, _ = swept
    for name in ("work", "records"):
        shutil.copytree(source / name, tmp_path / name)
    spec = _spec(tmp_path)
    # started again: every run has its record, nothing runs, the records stay as they were
    records = sorted(os.listdir(tmp_path / "records"))
    before = {f: (tmp_path / "records" / f).stat().st_mtime_ns for f in records}
    proc = _sweep(tmp_path, spec)
    assert "0 runs to do" in proc.stderr
    assert before == {f: (tmp_path / "records" / f).stat().st_mtime_ns for f in records}
    (tmp_path / "records" / "cjepa-seed0.json").unlink()  # as if the sweep died before the record
    (tmp_path / "records" / "ijepa_ema99-seed0.json").unlink()  # ... and another run, which --only leaves alone
    proc = _sweep(tmp_path, spec, "--only", "cjepa")
    assert "1 runs to do" in proc.stderr and "--resume_from_checkpoint latest" in proc.stderr
    # its process resumed a finished run (checkpoint-4): it trained no step, so it times none
    assert json.loads((tmp_path / "records" / "cjepa-seed0.json").read_text())["timed_steps"] == 0
    assert not (tmp_path / "records" / "ijepa_ema99-seed0.json").exists()


def test_bad_specs_are_refused(tmp_path):
    spec = _spec(tmp_path)
    data = json.loads(spec.read_text())
    data["sedes"] = [1]
    spec.write_text(json.dumps(data))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, SWEEP, str(spec), "--summarize_only"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "unknown keys ['sedes']" in proc.stderr


def test_a_resumed_runs_record_has_one_evaluation_per_step(tmp_path):
    """A run resumed from checkpoint-4 by older code (the study's) evaluated step 4 again at start
    (eval_on_start): its record keeps one entry per step (the later one), and its timed steps are
    those after the checkpoint."""
    sweep = _sweep_module()
    online = [{"step": 0, "eval_knn_top1": 0.1}, {"step": 4, "eval_knn_top1": 0.4}, {"step": 4, "eval_knn_top1": 0.4}]
    online.append({"step": 6, "eval_knn_top1": 0.6})
    summary = {"online_eval": online, "global_step": 6, "wall_time_s": 9.0, "train_runtime": 8.0, "train_steps_per_second": 0.25}
    (tmp_path / "pretrain_summary.json").write_text(json.dumps(summary))
    spec = {"metric": "eval_knn_top1", "runs": {"a": {"objective": "ijepa"}}, "common": {}, "recipe": "r.json"}
    record = sweep.make_record(spec, "a", 0, ["python"], str(tmp_path), 10.0, None, [0.0])
    assert [e["step"] for e in record["online_eval"]] == [0, 4, 6] and record["value"] == 0.6
    assert record["timed_steps"] == 2  # 8 s at 0.25 steps/s: steps 5 and 6


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(ROOT, "recipes", "sweeps"))))
def test_committed_specs_load_and_their_runs_build_the_objective_they_name(name, tmp_path):
    """Every spec in recipes/sweeps/ passes load_spec, names a recipe that exists, and each run's
    command line, read by pretrain.py's own parser, builds a CJEPAConfig (which validates) that
    trains the objective the run names, with every config field the run asks for."""
    from helpers.cli import pretrain_module

    from cjepa_hf.configuration_cjepa import OBJECTIVES, parse_config_overrides

    sweep, pretrain = _sweep_module(), pretrain_module()
    spec = sweep.load_spec(os.path.join(ROOT, "recipes", "sweeps", name))
    assert os.path.exists(os.path.join(ROOT, spec["recipe"])), spec["recipe"]
    common = parse_config_overrides(spec["common"].get("config_overrides"))
    for run, flags in spec["runs"].items():
        command = sweep.run_command(spec, run, spec["seeds"][0], ROOT, str(tmp_path), "python")
        model_args = pretrain.parse_args(command[2:])[0]
        config = pretrain.build_config(model_args)
        assert flags["objective"] in OBJECTIVES and config.objective == flags["objective"], (run, config.objective)
        asked = {**common, **parse_config_overrides(flags.get("config_overrides"))}
        got = config.to_dict()
        for key, value in asked.items():  # every field the run asks for reaches the config
            assert (list(got[key]) if isinstance(got[key], tuple) else got[key]) == value, (run, key, got[key], value)


def test_a_run_without_an_objective_name_is_refused(tmp_path):
    sweep = _sweep_module()
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "x", "recipe": "r.json", "runs": {"a": {"learning_rate": 0.1}}}))
    with pytest.raises(ValueError, match="run 'a' must name its objective"):
        sweep.load_spec(str(path))


def test_paired_difference_and_its_interval():
    sweep = _sweep_module()
    p = sweep.paired([0.80, 0.82, 0.81], [0.77, 0.80, 0.78])
    assert p["values"] == pytest.approx([0.03, 0.02, 0.03])
    assert p["mean"] == pytest.approx(0.08 / 3) and p["std"] == pytest.approx(0.0057735, rel=1e-4)
    half = 4.303 * 0.0057735 / 3**0.5  # Student's t, 2 degrees of freedom
    assert p["ci95"] == pytest.approx([0.08 / 3 - half, 0.08 / 3 + half], rel=1e-4) and p["all_positive"]
    assert sweep.paired([0.8, None], [0.7, 0.9]) is None  # one pair: no interval


def test_summary_selects_per_objective_and_pairs_against_the_reference():
    sweep = _sweep_module()
    spec = {
        "metric": "eval_knn_top1",
        "common": {},
        "reference": "i_a",
        "runs": {"i_a": {"objective": "ijepa"}, "i_b": {"objective": "ijepa"}, "c_a": {"objective": "cjepa"}},
    }

    def record(name, seed, value, linear, knn):
        figures = {"linear_top1": linear, "knn_top1": knn, "effective_rank_centered": 10.0}
        evaluation = {"trained": figures, "random_init": figures, "raw_pixels": {**figures, "linear_top1": 0.83, "knn_top1": 0.81}}
        return {"name": name, "seed": seed, "value": value, "evaluation": evaluation}

    records = [record("i_a", s, 0.70, 0.80, 0.77) for s in (0, 1)] + [record("i_b", s, 0.72, 0.79, 0.76) for s in (0, 1)]
    records += [record("c_a", 0, 0.71, 0.82, 0.80), record("c_a", 1, 0.71, 0.81, 0.79)]
    summary = sweep.summarize(spec, records)
    assert sweep.select_per_objective(spec, summary) == {"ijepa": "i_b", "cjepa": "c_a"}
    vs = summary["c_a"]["paired"]["i_a"]
    assert vs["linear_probe"]["values"] == pytest.approx([0.02, 0.01]) and vs["knn_dino"]["values"] == pytest.approx([0.03, 0.02])
    assert summary["c_a"]["paired"]["raw_pixels"]["knn_dino"]["values"] == pytest.approx([-0.01, -0.02])
    assert "i_a" not in summary["i_a"]["paired"] and summary["c_a"]["objective"] == "cjepa"
    assert "Selected per objective" in sweep.table(spec, summary)
