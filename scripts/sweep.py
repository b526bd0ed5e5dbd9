#!/usr/bin/env python
"""Sweep pretraining settings: override sets x seeds, N runs at a time, resumable.

    python scripts/sweep.py recipes/sweeps/fmnist-proxy.json --parallel 2
    python scripts/sweep.py SPEC.json --parallel 2 --code_dir ../study-worktree --commit   # a fixed commit runs it
    python scripts/sweep.py SPEC.json --summarize_only                                     # tables from the records
    python scripts/sweep.py SPEC.json --set max_steps=2000                                 # change a common flag
    python scripts/sweep.py SPEC.json --calibrate_seconds 120                              # max_steps from a timed run

A spec (JSON) names a base recipe, flags common to every run, one override set per run
name, the seeds and the selection metric:

    {"name": "fmnist_proxy", "recipe": "recipes/small-data-fashion-mnist.json",
     "common": {"max_steps": 600, "eval_steps": 100},
     "runs": {"cjepa_b0.02": {"objective": "cjepa", "config_overrides": "vicreg_weight=0.02"},
              "ijepa_ema0.99": {"objective": "ijepa", "ema_momentum": 0.99}},
     "reference": "ijepa_ema0.99",
     "seeds": [0, 1, 2], "metric": "eval_knn_top1"}

Each run is `scripts/pretrain.py RECIPE --flag value ... --seed S --output_dir WORK/NAME-seedS`
(the run's flags over the common ones; `config_overrides` of both merged key by key)
in its own process with `--threads_per_run` threads (default 1), so `--parallel 2` fills two cores.
As soon as a run ends its record is written to RECORDS/NAME-seedS.json (and committed with
`--commit`); a sweep started again skips the runs that have a record and resumes an
interrupted run from its latest valid checkpoint. The selection metric is the k-NN
monitor's last value (`eval_knn_top1` on images carved from the TRAIN split, see the
recipe's --eval_dataset): test images never choose settings. Runs with a final judgement
(`--final_eval_dataset`) also carry test-split linear-probe and k-NN figures, summarised
per run name with the random-init and raw-pixel baselines of the same seeds.

Every run names its objective (`cjepa_hf.configuration_cjepa.OBJECTIVES`); pretrain.py refuses
a run whose overrides make another. The summary selects, per objective, the run with the
highest mean selection metric, and gives each judged run's paired differences (per seed, mean,
95 % t-interval) to the spec's `reference` run and to raw pixels.

Writes RECORDS/../{name}_summary.json, {name}_table.md and {name}_online_knn.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from typing import Any

import numpy as np

logger = logging.getLogger("cjepa_hf.sweep")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINES = ("random_init", "raw_pixels")


# ============================================================================ the spec


def load_spec(path: str) -> dict[str, Any]:
    """Read and check a sweep spec; errors name the key and what is allowed."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"sweep spec {path!r} does not exist")
    with open(path) as f:
        spec = json.load(f)
    allowed = {"name", "recipe", "common", "runs", "seeds", "metric", "description", "calibration", "reference"}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"sweep spec {path!r}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    for key in ("name", "recipe", "runs"):
        if key not in spec:
            raise ValueError(f"sweep spec {path!r} lacks {key!r}")
    if not isinstance(spec["runs"], dict) or not spec["runs"]:
        raise ValueError(f"sweep spec {path!r}: 'runs' must map run names to override objects, got {spec['runs']!r}")
    for name, overrides in spec["runs"].items():
        if not isinstance(overrides, dict):
            raise ValueError(f"sweep spec {path!r}: run {name!r} must be an object of flags, got {overrides!r}")
        if name in BASELINES or "/" in name or not name:
            raise ValueError(f"sweep spec {path!r}: {name!r} cannot name a run (reserved: {BASELINES}, no '/')")
        if "objective" not in overrides and "objective" not in spec.get("common", {}):
            raise ValueError(
                f'sweep spec {path!r}: run {name!r} must name its objective ("objective": one of '
                "ijepa, cjepa, cjepa-context, ijepa+encvar, cjepa+encvar, cjepa-context+encvar), so that its records say what was trained"
            )
    spec.setdefault("common", {})
    spec.setdefault("seeds", [0])
    spec.setdefault("metric", "eval_knn_top1")
    if "reference" in spec and spec["reference"] not in spec["runs"]:
        raise ValueError(f"sweep spec {path!r}: 'reference' must name one of its runs {list(spec['runs'])}, got {spec['reference']!r}")
    if not all(isinstance(s, int) for s in spec["seeds"]) or not spec["seeds"]:
        raise ValueError(f"sweep spec {path!r}: 'seeds' must be a non-empty list of integers, got {spec['seeds']!r}")
    return spec


def flags(values: dict[str, Any]) -> list[str]:
    """{"max_steps": 600, "config_overrides": {...}} -> ["--max_steps", "600", "--config_overrides", "{...}"]."""
    out = []
    for key, value in values.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        out += [f"--{key}", str(value)]
    return out


def run_command(spec: dict, name: str, seed: int, code_dir: str, work_dir: str, python: str) -> list[str]:
    recipe = spec["recipe"] if os.path.isabs(spec["recipe"]) else os.path.join(code_dir, spec["recipe"])
    common, own = spec["common"], spec["runs"][name]
    values = {**common, **own, "seed": seed, "output_dir": os.path.join(work_dir, f"{name}-seed{seed}")}
    if "config_overrides" in common and "config_overrides" in own:  # merged key by key, the run's win
        from cjepa_hf.configuration_cjepa import parse_config_overrides

        values["config_overrides"] = {
            **parse_config_overrides(common["config_overrides"]),
            **parse_config_overrides(own["config_overrides"]),
        }
    return [python, os.path.join(code_dir, "scripts", "pretrain.py"), recipe, *flags(values)]


def _git_commit(path: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _commit_record(path: str, message: str) -> None:
    """Commit one record file alone (other staged changes are left as they are)."""
    folder = os.path.dirname(os.path.abspath(path))
    for attempt in range(5):
        add = subprocess.run(["git", "-C", folder, "add", "--", path], capture_output=True, text=True)
        commit = subprocess.run(["git", "-C", folder, "commit", "-q", "-m", message, "--", path], capture_output=True, text=True)
        if add.returncode == 0 and commit.returncode == 0:
            return
        time.sleep(2 + attempt)  # another git process held the index lock
    logger.warning("could not commit %s: %s", path, (commit.stderr or add.stderr).strip())


# ============================================================================ running


def _timed_steps(summary: dict) -> int | None:
    """The steps the run's last process trained, the ones its train_seconds time: all of them, or
    those after the checkpoint it resumed from (Trainer's train_runtime x train_steps_per_second
    counts this process's steps only); 0 when it resumed a finished run; None when unknown."""
    runtime, rate, total = summary.get("train_runtime"), summary.get("train_steps_per_second"), summary.get("global_step")
    if runtime is not None and rate is not None:
        steps = round(runtime * rate)
        return min(steps, total) if total else steps
    return 0 if runtime == 0 else None


def make_record(
    spec: dict, name: str, seed: int, command: list[str], output_dir: str, wall: float, code_commit: str | None, load: list[float]
) -> dict:
    with open(os.path.join(output_dir, "pretrain_summary.json")) as f:
        summary = json.load(f)
    # one entry per step: a run resumed by older code (the study's, 98bb36f) evaluated its
    # checkpoint's step again at start (eval_on_start)
    online = list({e["step"]: e for e in summary.get("online_eval", [])}.values())
    metric = spec["metric"]
    record = {
        "name": name,
        "seed": seed,
        "overrides": spec["runs"][name],
        "common": spec["common"],
        "recipe": spec["recipe"],
        "command": " ".join(shlex.quote(c) for c in command),
        "code_commit": code_commit,
        "wall_seconds": round(wall, 1),
        "train_seconds": round(summary.get("train_time_s", summary.get("wall_time_s", float("nan"))), 1),
        "timed_steps": _timed_steps(summary),
        "load_average_1min": load,
        "objective": summary.get("objective"),
        "loss": summary.get("loss"),
        "global_step": summary.get("global_step"),
        "metric": metric,
        "value": online[-1].get(metric) if online else None,
        "online_eval": online,
        "last_log": summary.get("last_log"),
    }
    if "evaluation" in summary:
        record["evaluation"] = summary["evaluation"]
    return record


def run_sweep(spec: dict, args: argparse.Namespace) -> None:
    os.makedirs(args.records, exist_ok=True)
    code_commit = _git_commit(args.code_dir)
    todo = [
        (name, seed)
        for seed in spec["seeds"]
        for name in spec["runs"]
        if not os.path.exists(os.path.join(args.records, f"{name}-seed{seed}.json")) and (not args.only or name in args.only)
    ]
    logger.info(
        "%s: %d runs to do (%d with records), %d at a time, code %s at %s",
        spec["name"],
        len(todo),
        sum(os.path.exists(os.path.join(args.records, f"{n}-seed{s}.json")) for s in spec["seeds"] for n in spec["runs"]),
        args.parallel,
        args.code_dir,
        code_commit,
    )
    threads = str(args.threads_per_run)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONPATH": os.path.join(args.code_dir, "src"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    running: dict[subprocess.Popen, tuple] = {}
    failures = []
    while todo or running:
        while todo and len(running) < args.parallel:
            name, seed = todo.pop(0)
            command = run_command(spec, name, seed, args.code_dir, args.work_dir, args.python)
            output_dir = os.path.join(args.work_dir, f"{name}-seed{seed}")
            if any(d.startswith("checkpoint-") for d in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])):
                command += ["--resume_from_checkpoint", "latest"]  # an interrupted run continues exactly
            os.makedirs(output_dir, exist_ok=True)
            log = open(os.path.join(output_dir, "sweep_run.log"), "a")
            logger.info("start %s seed %d: %s", name, seed, " ".join(shlex.quote(c) for c in command))
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=args.code_dir)
            running[proc] = (name, seed, command, output_dir, time.time(), os.getloadavg()[0], log)
        time.sleep(args.poll_seconds)
        for proc in [p for p in running if p.poll() is not None]:
            name, seed, command, output_dir, start, load_before, log = running.pop(proc)
            log.close()
            if proc.returncode != 0:
                failures.append((name, seed, proc.returncode))
                logger.error("%s seed %d failed (exit %d); see %s", name, seed, proc.returncode, os.path.join(output_dir, "sweep_run.log"))
                continue
            record = make_record(
                spec,
                name,
                seed,
                command,
                output_dir,
                time.time() - start,
                code_commit,
                [round(load_before, 2), round(os.getloadavg()[0], 2)],
            )
            path = os.path.join(args.records, f"{name}-seed{seed}.json")
            with open(path, "w") as f:
                json.dump(record, f, indent=1)
            logger.info("%s seed %d: %s = %s (%.0f s)", name, seed, record["metric"], record["value"], record["wall_seconds"])
            if args.commit:
                _commit_record(path, f"sweep {spec['name']}: {name} seed {seed} ({record['metric']} {record['value']})")
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed: {failures}")


# ============================================================================ summary


def _stats(values: list[float | None]) -> dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
        "values": values,
    }


def load_records(folder: str) -> list[dict]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no records folder {folder!r}: run the sweep first")
    records = []
    for file in sorted(os.listdir(folder)):
        if file.endswith(".json"):
            with open(os.path.join(folder, file)) as f:
                records.append(json.load(f))
    return records


def _rate(record: dict) -> float | None:
    """Seconds per 100 steps of the run's last process (records without timed_steps: every step)."""
    steps, seconds = record.get("timed_steps", record.get("global_step")), record.get("train_seconds")
    return 100.0 * seconds / steps if steps and seconds is not None and math.isfinite(seconds) else None


# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (then the normal's 1.96).
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def paired(values: list[float | None], reference: list[float | None]) -> dict[str, Any] | None:
    """The paired difference values - reference over the seeds both have (in seed order): per-seed
    differences, their mean, sample std and 95 % t-interval of the mean; None with < 2 pairs."""
    diffs = [float(v) - float(r) for v, r in zip(values, reference) if v is not None and r is not None]
    if len(diffs) < 2:
        return None
    mean, std = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    half = (_T975[len(diffs) - 2] if len(diffs) <= 31 else 1.96) * std / math.sqrt(len(diffs))
    return {"values": diffs, "mean": mean, "std": std, "ci95": [mean - half, mean + half], "all_positive": all(d > 0 for d in diffs)}


def select_per_objective(spec: dict, summary: dict[str, dict]) -> dict[str, str]:
    """For each objective, the run name with the highest mean selection metric (validation
    images from the train split; ties go to the run listed first)."""
    metric, best = spec["metric"], {}
    for name, entry in summary.items():
        if name in BASELINES or entry.get(metric, {}).get("mean") is None:
            continue
        objective = entry["objective"]
        if objective not in best or entry[metric]["mean"] > summary[best[objective]][metric]["mean"]:
            best[objective] = name
    return best


def _objective(spec: dict, name: str) -> str | None:
    return spec["runs"][name].get("objective", spec["common"].get("objective"))


def summarize(spec: dict, records: list[dict]) -> dict[str, dict]:
    """Per run name (in spec order): its objective, seeds, the selection metric and, when judged,
    the test-split figures (fractions, values in seed order) with the paired differences to the
    spec's `reference` run and to raw pixels; then the baselines per seed."""
    summary: dict[str, dict] = {}
    for name in spec["runs"]:
        group = sorted((r for r in records if r["name"] == name), key=lambda r: r["seed"])
        if not group:
            continue
        entry = {
            "objective": _objective(spec, name),
            "seeds": [r["seed"] for r in group],
            "overrides": spec["runs"][name],
            spec["metric"]: _stats([r["value"] for r in group]),
            "train_seconds": _stats([r.get("train_seconds") for r in group]),
            # the rate, comparable when a run was resumed and its last process trained only part of it
            "train_seconds_per_100_steps": _stats([_rate(r) for r in group]),
        }
        if all("evaluation" in r for r in group):
            entry["linear_probe"] = _stats([r["evaluation"]["trained"]["linear_top1"] for r in group])
            entry["knn_dino"] = _stats([r["evaluation"]["trained"]["knn_top1"] for r in group])
            entry["effective_rank_centered"] = _stats([r["evaluation"]["trained"]["effective_rank_centered"] for r in group])
        summary[name] = entry
    judged = {}
    for record in records:  # one judgement per seed for the baselines (the same init for every run of a seed)
        if "evaluation" in record:
            judged.setdefault(record["seed"], record["evaluation"])
    if judged:
        seeds = sorted(judged)
        for baseline in BASELINES:
            summary[baseline] = {
                "seeds": seeds,
                "linear_probe": _stats([judged[s][baseline]["linear_top1"] for s in seeds]),
                "knn_dino": _stats([judged[s][baseline]["knn_top1"] for s in seeds]),
                "effective_rank_centered": _stats([judged[s][baseline]["effective_rank_centered"] for s in seeds]),
            }
    reference = spec.get("reference")
    for name, entry in summary.items():
        if name in BASELINES or "linear_probe" not in entry:
            continue
        comparisons = {}
        for other in ([reference] if reference and reference != name else []) + ["raw_pixels"]:
            if other not in summary or "linear_probe" not in summary[other]:
                continue
            seeds = [s for s in entry["seeds"] if s in summary[other]["seeds"]]

            def at(e, key, seeds=seeds):
                return [e[key]["values"][e["seeds"].index(s)] for s in seeds]

            comparisons[other] = {
                "seeds": seeds,
                **{key: paired(at(entry, key), at(summary[other], key)) for key in ("linear_probe", "knn_dino")},
            }
        entry["paired"] = comparisons
    return summary


def _pm(stats: dict | None, scale: float = 100.0) -> str:
    if not stats or stats["mean"] is None:
        return "-"
    text = f"{scale * stats['mean']:.2f}"
    if stats["std"] is not None:
        text += f" ± {scale * stats['std']:.2f}"
    return text


def _values(stats: dict | None, scale: float = 100.0) -> str:
    if not stats:
        return "-"
    return " / ".join("-" if v is None else f"{scale * v:.2f}" for v in stats["values"])


def table(spec: dict, summary: dict[str, dict]) -> str:
    metric = spec["metric"]
    judged = any("linear_probe" in s for s in summary.values())
    header = ["run", "objective", "seeds", f"{metric} % (validation)", "per seed"]
    if judged:
        header += ["linear top-1 % (test)", "per seed", "k-NN top-1 % (test)", "per seed", "centred eff. rank"]
    header += ["train s / 100 steps", "overrides"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summary.items():
        row = [name, s.get("objective") or "-", ", ".join(map(str, s["seeds"])), _pm(s.get(metric)), _values(s.get(metric))]
        if judged:
            row += [
                _pm(s.get("linear_probe")),
                _values(s.get("linear_probe")),
                _pm(s.get("knn_dino")),
                _values(s.get("knn_dino")),
                _pm(s.get("effective_rank_centered"), 1.0),
            ]
        rate = s.get("train_seconds_per_100_steps")
        row += [
            f"{rate['mean']:.1f}" if rate and rate["mean"] is not None else "-",
            "`" + json.dumps(s["overrides"]) + "`" if "overrides" in s else "-",
        ]
        lines.append("| " + " | ".join(row) + " |")
    chosen = select_per_objective(spec, summary)
    if chosen:
        lines += ["", f"Selected per objective (highest mean {metric} on validation images):"]
        lines += [f"- {objective}: `{name}` ({_pm(summary[name][metric])})" for objective, name in chosen.items()]
    pairs = [(n, o, p) for n, s in summary.items() for o, p in s.get("paired", {}).items()]
    if pairs:
        lines += [
            "",
            "| run | minus | seeds | linear: mean [95 % CI] | per seed | k-NN: mean [95 % CI] | per seed |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, other, p in pairs:
            cells = []
            for key in ("linear_probe", "knn_dino"):
                d = p[key]
                cells += (
                    [
                        f"{100 * d['mean']:+.2f} [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]",
                        " / ".join(f"{100 * v:+.2f}" for v in d["values"]),
                    ]
                    if d
                    else ["-", "-"]
                )
            lines.append(f"| {name} | {other} | {', '.join(map(str, p['seeds']))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_online_knn(spec: dict, records: list[dict], path: str) -> str | None:
    """Online k-NN top-1 against step, one colour per run name, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in spec["runs"] if any(r["name"] == n and r.get("online_eval") for r in records)]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, name in enumerate(names):
        for j, record in enumerate(sorted((r for r in records if r["name"] == name), key=lambda r: r["seed"])):
            points = sorted({e["step"]: 100 * e[spec["metric"]] for e in record["online_eval"] if spec["metric"] in e}.items())
            ax.plot(
                *zip(*points), color=cmap(i), alpha=0.85, lw=1.4, marker="." if len(points) < 30 else None, label=name if j == 0 else None
            )
    ax.set_xlabel("pretraining step")
    ax.set_ylabel(f"{spec['metric']} (%), validation images from the train split")
    ax.set_title(f"{spec['name']}: online k-NN during pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2 if len(names) > 8 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(spec: dict, args: argparse.Namespace) -> dict:
    records = load_records(args.records)
    summary = summarize(spec, records)
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    commits = sorted({r.get("code_commit") for r in records if r.get("code_commit")})
    selected = select_per_objective(spec, summary)
    with open(os.path.join(out, f"{spec['name']}_summary.json"), "w") as f:
        json.dump({"spec": spec, "code_commits": commits, "records": len(records), "selected": selected, "summary": summary}, f, indent=2)
    text = table(spec, summary)
    with open(os.path.join(out, f"{spec['name']}_table.md"), "w") as f:
        f.write(f"{spec['name']}: mean ± sample std over seeds; code at {', '.join(commits) or 'unknown'}.\n\n{text}\n")
    plot_online_knn(spec, records, os.path.join(out, f"{spec['name']}_online_knn.png"))
    print(text)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the sweep spec (JSON)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads_per_run", type=int, default=1, help="OMP/MKL threads of each run (1: two runs fill two cores)")
    parser.add_argument("--code_dir", default=ROOT, help="the checkout whose scripts/ and src/ run (e.g. a git worktree at a fixed commit)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--work_dir", default=None, help="run outputs (default outputs/sweeps/NAME)")
    parser.add_argument("--records", default=None, help="one JSON per finished run (default docs/results/sweeps/NAME)")
    parser.add_argument("--output_dir", default=None, help="summary, table and plot (default docs/results)")
    parser.add_argument("--commit", action="store_true", help="git-commit each record as soon as it is written")
    parser.add_argument("--summarize_only", action="store_true")
    parser.add_argument("--only", action="append", default=None, metavar="NAME", help="run only these run names (repeatable)")
    parser.add_argument(
        "--calibrate_seconds",
        type=float,
        default=None,
        help="set max_steps so that each run trains for about this many seconds, from a short timed run of the "
        "first run's settings (the same steps for every run; recorded in the summary)",
    )
    parser.add_argument("--calibration_steps", type=int, default=40, help="steps of the timed calibration run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the spec's common flags (repeatable; the value is read as JSON when it parses), "
        "e.g. --set max_steps=2000: the records say so",
    )
    parser.add_argument("--poll_seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    spec = load_spec(args.spec)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            spec["common"][key] = json.loads(value)
        except ValueError:
            spec["common"][key] = value
    unknown = sorted(set(args.only or ()) - set(spec["runs"]))
    if unknown:
        raise ValueError(f"--only {unknown}: not run names of the spec; they are {list(spec['runs'])}")
    if args.parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {args.parallel}")
    args.code_dir = os.path.abspath(args.code_dir)
    args.work_dir = os.path.abspath(args.work_dir or os.path.join(ROOT, "outputs", "sweeps", spec["name"]))
    args.records = os.path.abspath(args.records or os.path.join(ROOT, "docs", "results", "sweeps", spec["name"]))
    args.output_dir = os.path.abspath(args.output_dir or os.path.join(ROOT, "docs", "results"))
    if args.calibrate_seconds is not None and not args.summarize_only:
        spec["common"]["max_steps"] = calibrate(spec, args)
    if not args.summarize_only:
        run_sweep(spec, args)
    return report(spec, args)


def calibrate(spec: dict, args: argparse.Namespace) -> int:
    """max_steps that fill `--calibrate_seconds` of training per run, from a timed run of the
    first run's settings (its start-up is counted, so the estimate errs short)."""
    if not args.calibrate_seconds > 0:
        raise ValueError(f"--calibrate_seconds must be > 0, got {args.calibrate_seconds}")
    name = next(iter(spec["runs"]))
    probe = {
        **spec,
        "common": {
            **spec["common"],
            "max_steps": args.calibration_steps,
            "eval_strategy": "no",
            "eval_on_start": False,
            "final_eval_dataset": "",
            "save_strategy": "no",
        },
    }
    command = run_command(probe, name, 0, args.code_dir, os.path.join(args.work_dir, "_calibration"), args.python)
    threads = str(args.threads_per_run)
    env = {**os.environ, "PYTHONPATH": os.path.join(args.code_dir, "src"), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=args.code_dir)
    if proc.returncode != 0:
        raise RuntimeError(f"calibration run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    with open(os.path.join(args.work_dir, "_calibration", f"{name}-seed0", "pretrain_summary.json")) as f:
        summary = json.load(f)
    per_second = summary["global_step"] / summary["train_runtime"]
    steps = max(1, int(args.calibrate_seconds * per_second))
    spec["calibration"] = {
        "run": name,
        "steps": summary["global_step"],
        "train_runtime_s": summary["train_runtime"],
        "steps_per_second": per_second,
        "seconds_per_run": args.calibrate_seconds,
        "max_steps": steps,
    }
    logger.info("calibration: %.2f steps/s -> max_steps %d for %.0f s per run", per_second, steps, args.calibrate_seconds)
    return steps


if __name__ == "__main__":
    main()
