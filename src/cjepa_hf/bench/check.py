"""The GPU check: the CUDA-only tests, the trainer's step timed at ViT-B/16 and ViT-L/16, the input pipeline on every core against the step, DDP against FSDP; one JSON.

    bash scripts/gpu_check.sh                       # one H100/H200, under 8 minutes
    DRY_RUN=1 bash scripts/gpu_check.sh             # the same end to end on the CPU, tiny sizes
    python -m cjepa_hf.bench.check --output docs/benchmarks/gpu_check.json [--dry-run] [--peak-tflops 989.4]

Parts (each one an entry of "parts" in the JSON, with its status and seconds; a part that fails
or does not fit the time budget is recorded as such and the others still run):

- tests: `pytest -k "cuda or inductor"` (the tests that skip without CUDA carry "cuda" in their
  name; the inductor test runs with CJEPA_TEST_INDUCTOR=1), junit counts and failures;
- steps: `cjepa_hf.bench.runner.run` (scripts/benchmark.py) on the trainer's own step
  (`TrainerStep`): ViT-B/16 at 224 px, batch 256, bf16, SDPA (or --attn-implementation) without
  and with torch.compile, the eager one against the plain fp32 path in the same process;
  ViT-L/16 at batch 128 (compiled too with --vit-l-compile): images/s, TFLOP/s, MFU against the
  device's bf16 dense peak (by device name, or --peak-tflops), peak memory;
- pipeline: `cjepa_hf.bench.pipeline.loader_throughput` with one DataLoader worker per core on
  ImageNet-like JPEGs, against the images/s the fastest ViT-B/16 step consumes: whether it
  feeds the step, and by how much it falls short if not (with GPU JPEG decoding timed when it
  falls short and torchvision is installed);
- distributed: `torchrun -m cjepa_hf.bench.distributed` on every GPU, ViT-L/16: the trainer's step
  under DDP and, once the trainer has it, FSDP ("skipped" with the reason until then).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import pipeline, runner
from .flops import device_peak_flops
from .report import write_json
from .step import STEP

ROOT = Path(__file__).resolve().parents[3]  # the checkout: tests/ and scripts/ live here
TEST_SELECTION = "cuda or inductor"


@dataclass
class StepRun:
    """One benchmark of the step: a name in the JSON and the arguments of scripts/benchmark.py."""

    name: str
    preset: str
    batch_size: int
    compile: bool = False
    baseline: bool = False
    warmup: int = 3
    steps: int = 20
    split_steps: int = 1
    extra: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What the check runs: GPU sizes, or tiny CPU sizes for the dry run."""

    device: str
    dtype: str
    image_size: int | None
    step_runs: list[StepRun]
    test_paths: list[str]
    test_env: dict[str, str]
    pipeline_images: int  # distinct JPEGs written
    pipeline_image_shape: tuple[int, int]
    pipeline_rows: int  # stream length (parquet rows naming the distinct JPEGs by path)
    pipeline_batch: int
    pipeline_workers: int
    pipeline_seconds: float
    distributed: list[str]
    distributed_nproc: int
    estimates_s: dict[str, float]


def make_plan(args: argparse.Namespace) -> Plan:
    attn = ["--attn-implementation", args.attn_implementation]
    workers = args.workers or os.cpu_count() or 1
    if args.dry_run:
        tiny = dict(preset="tiny", batch_size=4, warmup=1, steps=2)
        # "eager" dynamo backend: the compile path (dynamo, dynamic masks) without inductor's C++ build
        return Plan(
            device="cpu",
            dtype="fp32",
            image_size=None,
            step_runs=[
                StepRun("vit_b16", baseline=True, extra=attn, **tiny),
                StepRun("vit_b16_compile", compile=True, split_steps=0, extra=[*attn, "--compile-backend", "eager"], **tiny),
                StepRun("vit_l16", extra=attn, **{**tiny, "steps": 1}, split_steps=0),
            ],
            test_paths=["tests/test_performance.py"],
            test_env={"CJEPA_TEST_INDUCTOR": "0"},  # inductor on 2 CPU cores takes minutes
            pipeline_images=8,
            pipeline_image_shape=(64, 48),
            pipeline_rows=96,
            pipeline_batch=8,
            pipeline_workers=min(workers, 2),
            pipeline_seconds=1.0,
            distributed=["--preset", "tiny", "--batch-size", "4", "--dtype", "fp32", "--warmup", "1", "--steps", "2", "--device", "cpu"],
            distributed_nproc=1,
            estimates_s={"tests": 0, "steps": 0, "pipeline": 0, "distributed": 0},
        )
    runs = [
        StepRun("vit_b16", "vit-b16", 256, baseline=True, extra=attn),
        StepRun("vit_b16_compile", "vit-b16", 256, compile=True, split_steps=0, extra=attn),
        StepRun("vit_l16", "vit-l16", 128, steps=10, extra=attn),
    ]
    if args.vit_l_compile:
        runs.append(StepRun("vit_l16_compile", "vit-l16", 128, compile=True, steps=10, split_steps=0, extra=attn))
    per_worker_guess = 500  # images/s of one worker on 500x375 JPEGs, generously (~236 on the 2-core dev machine)
    return Plan(
        device="cuda",
        dtype="bf16",
        image_size=224,
        step_runs=runs,
        test_paths=["tests"],
        test_env={"CJEPA_TEST_INDUCTOR": "1"},
        pipeline_images=256,
        pipeline_image_shape=(500, 375),
        pipeline_rows=int(min(200_000, max(8_000, workers * per_worker_guess * (args.pipeline_seconds + 6)))),
        pipeline_batch=256,
        pipeline_workers=workers,
        pipeline_seconds=args.pipeline_seconds,
        distributed=["--preset", "vit-l16", "--batch-size", "64", "--dtype", "bf16", "--attn-implementation", args.attn_implementation],
        distributed_nproc=max(torch.cuda.device_count(), 1),
        # rough seconds on one H100/H200, to skip what no longer fits the budget
        estimates_s={
            "tests": 150,
            "vit_b16": 40,
            "vit_b16_compile": 150,
            "vit_l16": 40,
            "vit_l16_compile": 200,
            "pipeline": 50,
            "distributed": 70,
        },
    )


# ---------------------------------------------------------------------------------------------- parts


class Background:
    """A part run as a subprocess: started now, collected later (or at once when run in turn)."""

    def __init__(self, command: list[str], env: dict[str, str], timeout_s: float, log: Path) -> None:
        self.command, self.timeout_s, self.log = command, timeout_s, log
        self.start = time.perf_counter()
        self._file = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._file, stderr=subprocess.STDOUT)

    def wait(self) -> tuple[int | None, float]:
        """(return code, or None after a timeout; seconds)."""
        remaining = max(self.timeout_s - (time.perf_counter() - self.start), 1.0)
        try:
            code = self.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        self._file.close()
        return code, time.perf_counter() - self.start

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def run_tests(plan: Plan, work: Path, timeout_s: float) -> dict[str, Any]:
    """The selected tests, in this process (`pytest.main`: no second interpreter to start; the
    modules they import are loaded already), each under pytest-timeout's `timeout_s`."""
    try:
        import pytest
    except ImportError:
        return {"status": "skipped", "reason": "pytest is not installed"}

    junit = work / "tests.xml"
    argv = ["-q", "-p", "no:cacheprovider", "-k", TEST_SELECTION, f"--junitxml={junit}", "-o", f"timeout={timeout_s:.0f}"]
    # a module that cannot be imported here (a package the GPU image lacks) must not stop the selection
    argv += ["--continue-on-collection-errors", *plan.test_paths]
    saved_env = {key: os.environ.get(key) for key in plan.test_env}
    threads = torch.get_num_threads()  # tests/conftest.py lowers it
    cwd = os.getcwd()
    start = time.perf_counter()
    try:
        os.environ.update(plan.test_env)
        os.chdir(ROOT)
        code = int(pytest.main(argv))
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch._dynamo.reset()
    out: dict[str, Any] = {"command": "pytest " + " ".join(argv), "selection": TEST_SELECTION, "returncode": code}
    out["duration_s"] = time.perf_counter() - start
    if not junit.exists():
        return out | {"status": "failed", "error": f"pytest wrote no junit report (exit status {code})"}
    cases, collection_errors = [], []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error") and child.get("message") == "collection failure":
                outcome = "collection_error"
            elif child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        name = f"{case.get('classname')}::{case.get('name')}" if case.get("classname") else case.get("name")
        if outcome == "collection_error":
            collection_errors.append(name)
        else:
            cases.append({"name": name, "outcome": outcome, "time_s": float(case.get("time") or 0)})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    status = "passed" if counts["failed"] == 0 and cases and code in (0, 1) else "failed"
    if code == 1 and counts["failed"] == 0 and not collection_errors:
        status = "failed"  # pytest failed for a reason the report does not show
    return out | {"status": status, "collected": len(cases), **counts, "collection_errors": collection_errors, "cases": cases}


def start_distributed(plan: Plan, python: str, work: Path, timeout_s: float) -> Background:
    output = work / "distributed.json"
    command = [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(plan.distributed_nproc),
        "-m",
        "cjepa_hf.bench.distributed",
        *plan.distributed,
        "--output",
        str(output),
    ]
    return Background(command, dict(os.environ), timeout_s, work / "distributed.log")


def collect_distributed(job: Background, work: Path) -> dict[str, Any]:
    code, seconds = job.wait()
    output = work / "distributed.json"
    out: dict[str, Any] = {"command": " ".join(job.command[1:]), "returncode": code, "duration_s": seconds}
    if code != 0 or not output.exists():
        reason = f"timed out after {job.timeout_s:.0f} s" if code is None else f"exit status {code}"
        return out | {"status": "failed", "error": reason, "log_tail": job.tail()}
    result = json.loads(output.read_text())
    statuses = {mode: entry["status"] for mode, entry in result["modes"].items()}
    status = "failed" if "failed" in statuses.values() else "measured"
    return out | {"status": status, "mode_status": statuses, **result}


def run_step(run: StepRun, plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    argv = ["--preset", run.preset, "--batch-size", str(run.batch_size), "--dtype", plan.dtype, "--device", plan.device]
    argv += ["--warmup", str(run.warmup), "--steps", str(run.steps), "--split-steps", str(run.split_steps), *run.extra]
    if plan.image_size:
        argv += ["--image-size", str(plan.image_size)]
    if run.compile:
        argv.append("--compile")
    if not run.baseline:
        argv.append("--no-baseline")
    if args.peak_tflops:
        argv += ["--peak-tflops", str(args.peak_tflops)]
    start = time.perf_counter()
    try:
        result = runner.run(runner.parse_args(argv))
    finally:
        torch._dynamo.reset()  # compiled graphs hold the model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    fast = result["results"]["fast"]
    return {
        "status": "measured",
        "command": "python scripts/benchmark.py " + " ".join(argv),
        "duration_s": time.perf_counter() - start,
        "step": result["step"],
        "preset": run.preset,
        "batch_size": run.batch_size,
        "image_size": result["image_size"],
        "compile": run.compile,
        "attn_implementation": result["options"]["attn_implementation"],
        "dtype": result["options"]["dtype"],
        "images_per_s": result["images_per_s"],
        "step_time_s": fast["step_time_s"]["median"],
        "tflops": result["tflops"],
        "mfu": result["mfu"],
        "peak_memory_bytes": result["peak_memory_bytes"],
        "baseline_images_per_s": result["baseline_images_per_s"],
        "speedup_over_plain": result["speedup"],
        "split_s": result["split_s"],
        "trainer_global_step": fast["trainer_global_step"],
        "trainer_class": fast["trainer_class"],
        "steps_per_setup": result["steps_per_setup"],
        "result": result,
    }


def run_pipeline(plan: Plan, step_entries: dict[str, dict], work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    config = runner.build_config(plan.step_runs[0].preset, plan.image_size)
    sources = pipeline.write_images(work / "jpegs", plan.pipeline_images, plan.pipeline_image_shape, seed=0)
    source = pipeline.write_path_source(sources, work / "stream", plan.pipeline_rows, num_shards=4 * plan.pipeline_workers)
    device = torch.device(plan.device)
    measured = pipeline.loader_throughput(
        source, config, plan.pipeline_batch, plan.pipeline_workers, device, min_seconds=plan.pipeline_seconds
    )
    rate = measured["images_per_s"]
    consumers = {
        name: entry["images_per_s"]
        for name, entry in step_entries.items()
        if entry.get("status") == "measured" and name.startswith("vit_b16")
    }
    out: dict[str, Any] = {"status": "measured", **measured, "cpu_count": os.cpu_count()}
    out["jpegs"] = {"distinct": plan.pipeline_images, "size": f"{plan.pipeline_image_shape[0]}x{plan.pipeline_image_shape[1]}"}
    out["source"] = f"parquet, {plan.pipeline_rows} rows naming the JPEGs by path (read from the page cache)"
    out["jpegs"]["mean_kb"] = sum(p.stat().st_size for p in sources) / len(sources) / 1024
    if consumers:
        name = max(consumers, key=consumers.get)
        need = consumers[name]
        shortfall = max(need - rate, 0.0)
        out |= {
            "step_images_per_s": need,
            "step_run": name,
            "feeds_step": rate >= need,
            "headroom": rate / need - 1.0,
            "shortfall_images_per_s": shortfall,
            "shortfall_fraction": shortfall / need,
            "workers_needed": math.ceil(need / measured["images_per_s_per_worker"]),
        }
        if rate >= need:
            out["verdict"] = (
                f"the pipeline feeds the step: {rate:,.0f} images/s with {plan.pipeline_workers} workers against {need:,.0f} "
                f"consumed by {name} ({100 * (rate / need - 1):.0f}% headroom)"
            )
        else:
            out["verdict"] = (
                f"the pipeline falls short of the step by {shortfall:,.0f} images/s ({100 * shortfall / need:.0f}%): {rate:,.0f} "
                f"images/s with {plan.pipeline_workers} workers against {need:,.0f} consumed by {name}; "
                f"{out['workers_needed']} workers at the measured rate per worker would be needed"
            )
        out["gpu_decode"] = _gpu_decode(sources, device) if rate < need else {"status": "skipped", "reason": "the pipeline feeds the step"}
    else:
        out["verdict"] = "no ViT-B/16 step was measured: nothing to compare the pipeline with"
        out["gpu_decode"] = {"status": "skipped", "reason": "no step to compare with"}
    out["duration_s"] = time.perf_counter() - start
    return out


def _gpu_decode(sources: list[Path], device: torch.device) -> dict[str, Any]:
    import importlib.util

    if device.type != "cuda":
        return {"status": "skipped", "reason": "no CUDA device"}
    if importlib.util.find_spec("torchvision") is None:
        return {"status": "skipped", "reason": "torchvision is not installed"}
    try:
        return {"status": "measured", **pipeline.gpu_decode_throughput([p.read_bytes() for p in sources], device)}
    except Exception as error:  # noqa: BLE001 - an optional figure
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


# ---------------------------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/benchmarks/gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, end to end")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak for MFU, overriding the table by device name")
    parser.add_argument("--attn-implementation", default="sdpa", help="sdpa (default) or flash_attention_2 (needs flash-attn)")
    parser.add_argument("--vit-l-compile", action="store_true", help="also time ViT-L/16 compiled (about 3 more minutes)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the pipeline part (default: every core)")
    parser.add_argument("--pipeline-seconds", type=float, default=8.0)
    parser.add_argument("--budget-s", type=float, default=470.0, help="skip the parts that no longer fit (GPU run)")
    parser.add_argument("--parts", default="tests,steps,pipeline,distributed")
    parser.add_argument(
        "--overlap", action="store_true", help="start the distributed part first, beside the others (dry run: no timings to spoil)"
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the distributed part (torchrun)")
    return parser.parse_args(argv)


def environment() -> dict[str, Any]:
    import accelerate
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "gpu_count": torch.cuda.device_count(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --dry-run (DRY_RUN=1) for the CPU dry run")
    parts = [p for p in args.parts.split(",") if p]
    plan = make_plan(args)
    device = torch.device(plan.device)
    name, peak = device_peak_flops(device)
    out: dict[str, Any] = {
        "check": "scripts/gpu_check.sh",
        "dry_run": args.dry_run,
        "step": STEP,
        "device": name,
        "device_type": device.type,
        "peak_bf16_dense_flops": args.peak_tflops * 1e12 if args.peak_tflops else peak,
        "peak_flops_source": "--peak-tflops" if args.peak_tflops else ("PEAK_BF16_DENSE_FLOPS (by device name)" if peak else None),
        "budget_s": args.budget_s,
        "parts": {},
    }

    def fits(key: str) -> bool:
        left = args.budget_s - (time.perf_counter() - started)
        return args.dry_run or left >= plan.estimates_s.get(key, 0)

    def over_budget(key: str) -> dict[str, Any]:
        left = args.budget_s - (time.perf_counter() - started)
        return {
            "status": "skipped",
            "reason": f"time budget: {left:.0f} s left of {args.budget_s:.0f}, about {plan.estimates_s[key]:.0f} s needed",
        }

    with tempfile.TemporaryDirectory(prefix="cjepa-gpu-check-") as tmp:
        work = Path(tmp)
        distributed = None
        if args.overlap and "distributed" in parts:  # the dry run: its start-up beside the other parts
            distributed = start_distributed(plan, args.python, work, timeout_s=240.0)
        if "tests" in parts:
            out["parts"]["tests"] = run_tests(plan, work, timeout_s=240.0) if fits("tests") else over_budget("tests")
        if "steps" in parts:
            entries: dict[str, Any] = {}
            for run in plan.step_runs:
                if not fits(run.name):
                    entries[run.name] = over_budget(run.name)
                    continue
                try:
                    entries[run.name] = run_step(run, plan, args)
                except Exception as error:  # noqa: BLE001 - recorded; the next run still goes
                    entries[run.name] = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
                print(_step_line(run.name, entries[run.name]), flush=True)
            out["parts"]["steps"] = entries
        if "pipeline" in parts:
            if fits("pipeline"):
                try:
                    out["parts"]["pipeline"] = run_pipeline(plan, out["parts"].get("steps", {}), work)
                except Exception as error:  # noqa: BLE001
                    out["parts"]["pipeline"] = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            else:
                out["parts"]["pipeline"] = over_budget("pipeline")
        if "distributed" in parts:
            if distributed is None and fits("distributed"):
                distributed = start_distributed(plan, args.python, work, timeout_s=240.0)
            out["parts"]["distributed"] = collect_distributed(distributed, work) if distributed else over_budget("distributed")
    out["duration_s"] = time.perf_counter() - started
    out["environment"] = environment()
    out["timestamp"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print_summary(out)
    write_json(out, args.output)
    return out


# ---------------------------------------------------------------------------------------------- printing


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def _step_line(name: str, entry: dict[str, Any]) -> str:
    if entry.get("status") != "measured":
        return f"  {name:<18} {entry.get('status')}: {entry.get('reason') or entry.get('error')}"
    mfu = "n/a" if entry["mfu"] is None else f"{100 * entry['mfu']:.1f}%"
    return (
        f"  {name:<18} {entry['preset']:>8} b{entry['batch_size']:<4} {'compile' if entry['compile'] else 'eager':>7} "
        f"{entry['images_per_s']:>10,.1f} img/s {1e3 * entry['step_time_s']:>9.1f} ms {entry['tflops']:>8.2f} TFLOP/s "
        f"MFU {mfu:>6}  peak {_mib(entry['peak_memory_bytes'])}"
    )


def print_summary(out: dict[str, Any], file=None) -> None:
    parts = out["parts"]
    print(f"\nGPU check{' (DRY RUN, CPU)' if out['dry_run'] else ''}: {out['device']}, {out['duration_s']:.0f} s", file=file)
    print(f"step timed: {out['step']}", file=file)
    tests = parts.get("tests")
    if tests:
        if "collected" in tests:
            print(
                f"tests [{tests['selection']}]: {tests['status']}: {tests['passed']} passed, {tests['failed']} failed, "
                f"{tests['skipped']} skipped ({tests['duration_s']:.0f} s)",
                file=file,
            )
            for case in tests["cases"]:
                if case["outcome"] == "failed":
                    print(f"  FAILED {case['name']}", file=file)
            for name in tests["collection_errors"]:
                print(f"  not collected (import error, its tests not run): {name}", file=file)
        else:
            print(f"tests: {tests['status']}: {tests.get('reason') or tests.get('error')}", file=file)
    if "steps" in parts:
        print("steps (images/s, median step, TFLOP/s, MFU against the bf16 dense peak, peak memory):", file=file)
        for name, entry in parts["steps"].items():
            print(_step_line(name, entry), file=file)
    pipe = parts.get("pipeline")
    if pipe:
        if pipe["status"] == "measured":
            print(
                f"input pipeline: {pipe['images_per_s']:,.1f} images/s with {pipe['num_workers']} workers "
                f"({pipe['images_per_s_per_worker']:,.1f} per worker)",
                file=file,
            )
            print(f"  {pipe['verdict']}", file=file)
            decode = pipe.get("gpu_decode", {})
            if decode.get("status") == "measured":
                print(f"  GPU JPEG decode (torchvision, decode only): {decode['images_per_s']:,.0f} images/s", file=file)
        else:
            print(f"input pipeline: {pipe['status']}: {pipe.get('reason') or pipe.get('error')}", file=file)
    dist = parts.get("distributed")
    if dist:
        if "modes" in dist:
            print(
                f"distributed ({dist['preset']}, {dist['world_size']} process(es), batch {dist['batch_size_per_process']} each):", file=file
            )
            for mode, entry in dist["modes"].items():
                if entry["status"] == "measured":
                    print(
                        f"  {mode:<5} {entry['images_per_s']:>10,.1f} img/s  {1e3 * entry['step_time_s']['median']:.1f} ms  "
                        f"peak {_mib(entry['peak_memory_bytes'])}  ({entry['wrapped_model_class']})",
                        file=file,
                    )
                else:
                    print(f"  {mode:<5} {entry['status']}: {entry.get('reason') or entry.get('error')}", file=file)
        else:
            print(f"distributed: {dist['status']}: {dist.get('reason') or dist.get('error')}", file=file)


if __name__ == "__main__":
    main()
