#!/usr/bin/env python
"""C-JEPA vs I-JEPA on Fashion-MNIST: C-JEPA's 100-epoch ablation (Mo & Tong, NeurIPS 2024) in miniature.

For each method and seed, pretrain the same small ViT (32 px padded Fashion-MNIST, patch 4:
an 8x8 patch grid; width 96, depth 4) for the same number of steps on the same data order and
masks, then score the frozen EMA target encoder on the test split with a linear probe and a
k-NN classifier. Methods (they differ only in the loss):

    cjepa   the paper's objective: L_jepa + beta * (25 inv + 25 var + 1 cov), beta = --vicreg_weight (0.001)
    ijepa   I-JEPA: vicreg_weight 0
    varcov  C-JEPA with the variance/covariance terms only: vicreg_sim_coeff 0

A C-JEPA method may name its own beta after a colon ("cjepa:0.05"), so one invocation can
compare several betas.

Every method starts from the same initial weights and sees the same images and masks.

Baselines on the same probe sets: the same encoder with random weights (one per seed) and
the raw normalised pixels. Writes, under --output_dir (default docs/results):
    {tag}_runs.json     every run: settings, wall times, training log, probe and k-NN results
    {tag}_summary.json  mean and std over seeds per method
    {tag}_table.md      the markdown table
    {tag}_curves.png    loss curves and collapse monitors per method

    python scripts/experiment_fmnist.py       # docs/RESULTS.md: 4 methods (beta 0.001 and 0.05) x 3 seeds, 1200 steps
    python scripts/experiment_fmnist.py --methods cjepa ijepa --seeds 0 --max_steps 80 \
        --probe_train_samples 2000 --probe_test_samples 2000 --tag fmnist_smoke   # a smoke run
    python scripts/experiment_fmnist.py --minutes 10   # per-run budget: steps from a timed calibration
    python scripts/experiment_fmnist.py --vicreg_weight 0.1 --tag fmnist_beta0.1   # a stronger VICReg term
    python scripts/experiment_fmnist.py --methods cjepa ijepa cjepa:0.05               # two betas side by side
    # runs made by separate invocations (e.g. two processes on two cores), summarised together:
    python scripts/experiment_fmnist.py --merge_runs docs/results/a_runs.json docs/results/b_runs.json --tag fmnist
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser, TrainerCallback, set_seed

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining, CJEPAModel
from cjepa_hf.configuration_cjepa import parse_config_overrides
from cjepa_hf.data import build_pretrain_dataset, load_fashion_mnist
from cjepa_hf.evaluation import (
    DEFAULT_WEIGHT_DECAYS,
    ClassificationTransform,
    evaluate_features,
    extract_features,
    markdown_table,
    raw_pixel_features,
    subsample,
)
from cjepa_hf.masking import MaskCollator
from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments

logger = logging.getLogger("cjepa_hf.experiment_fmnist")

QUICKSTART_RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes", "quickstart-fashion-mnist.json")


def quickstart_model() -> dict:
    """The quick start's architecture (its recipe's config_overrides without the objective's
    `*vicreg*` fields, which METHODS and --model_overrides set): 32 px, patch 4 -> 8x8 grid."""
    with open(QUICKSTART_RECIPE) as f:
        overrides = parse_config_overrides(json.load(f)["config_overrides"])
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if "vicreg" not in k}


MODEL = quickstart_model()
METHODS = {
    "cjepa": dict(vicreg_weight=0.001),  # the paper's objective (its default coefficients 25/25/1)
    "ijepa": dict(vicreg_weight=0.0),
    "varcov": dict(vicreg_weight=0.001, vicreg_sim_coeff=0.0),
}
METHOD_TITLES = {
    "cjepa": "C-JEPA (inv + var + cov)",
    "ijepa": "I-JEPA",
    "varcov": "C-JEPA, var + cov only",
    "random_init": "random-init encoder",
    "raw_pixels": "raw pixels",
}


def parse_method(name: str) -> tuple[str, float | None]:
    """ "cjepa" -> ("cjepa", None); "cjepa:0.05" -> ("cjepa", 0.05). Raises on unknown names."""
    base, sep, beta_text = name.partition(":")
    if base not in METHODS:
        raise ValueError(f"unknown methods [{name!r}]; choose from {list(METHODS)}, optionally with ':beta' (e.g. 'cjepa:0.05')")
    if not sep:
        return base, None
    if METHODS[base]["vicreg_weight"] == 0:
        raise ValueError(f"method {name!r}: {base} has no VICReg term, so it takes no ':beta'")
    try:
        beta = float(beta_text)
    except ValueError:
        beta = float("nan")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"method {name!r}: beta must be a finite number > 0, got {beta_text!r}")
    return base, beta


def method_title(method: str) -> str:
    if method not in METHOD_TITLES and ":" in method:
        base, beta = parse_method(method)
        return f"{METHOD_TITLES[base]}, beta {beta:g}"
    return METHOD_TITLES.get(method, method)


LOG_KEYS = (
    "step",
    "loss",
    "jepa_loss",
    "vicreg_loss",
    "vicreg_invariance",
    "vicreg_variance",
    "vicreg_covariance",
    "target_feature_std",
    "target_effective_rank",
    "target_effective_rank_centered",
    "learning_rate",
)


@dataclass
class ExperimentArguments:
    methods: list[str] = field(
        default_factory=lambda: [*METHODS, "cjepa:0.05"],
        metadata={"help": f"Any of {list(METHODS)}; C-JEPA methods may carry their own beta ('cjepa:0.05')."},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_steps: int = field(default=1200, metadata={"help": "Pretraining steps per run (the same for every method)."})
    minutes: float | None = field(
        default=None,
        metadata={"help": "Per-run budget in minutes instead of --max_steps: steps = budget / (s per step of a timed C-JEPA calibration)."},
    )
    vicreg_weight: float = field(
        default=0.001,
        metadata={"help": "beta of the C-JEPA methods (the paper's 0.001); I-JEPA always has 0."},
    )
    batch_size: int = field(default=128)
    learning_rate: float = field(default=1e-3)
    warmup_fraction: float = field(default=0.1)
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers of pretraining."})
    model_overrides: str | None = field(default=None, metadata={"help": "JSON object of CJEPAConfig fields over the default model."})
    training_overrides: str | None = field(
        default=None,
        metadata={"help": "JSON object of CJEPATrainingArguments fields over the defaults (e.g. '{\"ema_momentum\": 0.99}')."},
    )
    probe_split: str = field(
        default="test",
        metadata={
            "help": "test: probe trained on train images, scored on the test split (the report). validation: "
            "both halves carved from the TRAIN images (10,000 of them, seed 1), for choosing settings."
        },
    )
    probe_train_samples: int | None = field(default=10_000, metadata={"help": "Training examples for the probes (of 60k)."})
    probe_test_samples: int | None = field(default=None, metadata={"help": "Test examples (default: all 10k)."})
    last_n_layers: int = field(default=1)
    knn_k: int = field(default=20)
    knn_temperature: float = field(default=0.07)
    weight_decays: str = field(default=",".join(f"{wd:g}" for wd in DEFAULT_WEIGHT_DECAYS))
    max_iter: int = field(default=100, metadata={"help": "L-BFGS iterations of each probe fit."})
    baselines: bool = field(default=True, metadata={"help": "Also score random-init encoders and raw pixels."})
    output_dir: str = field(default="docs/results")
    tag: str = field(default="fmnist", metadata={"help": "Prefix of the result files."})
    work_dir: str = field(default="outputs/experiment_fmnist", metadata={"help": "Pretraining outputs (encoders)."})
    resume: bool = field(default=False, metadata={"help": "Keep the runs already in {tag}_runs.json and skip them."})
    probe_only: bool = field(
        default=False,
        metadata={"help": "Train nothing: score the encoders an earlier run saved in --work_dir (e.g. with --last_n_layers 4)."},
    )
    merge_runs: list[str] | None = field(
        default=None,
        metadata={"help": "Train nothing: summarise the runs of these {tag}_runs.json files (same step count) as {tag}."},
    )

    def __post_init__(self) -> None:
        for method in self.methods:
            parse_method(method)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not self.vicreg_weight > 0:
            raise ValueError(f"vicreg_weight must be > 0 (ijepa is the method without VICReg), got {self.vicreg_weight}")
        if self.probe_split not in ("test", "validation"):
            raise ValueError(f"probe_split must be 'test' or 'validation', got {self.probe_split!r}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")


class _StepTimer(TrainerCallback):
    """Wall-clock time of each optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def model_config(method: str, args: ExperimentArguments) -> CJEPAConfig:
    overrides = json.loads(args.model_overrides) if args.model_overrides else {}
    base, beta = parse_method(method)
    objective = dict(METHODS[base])
    if objective["vicreg_weight"] > 0:
        objective["vicreg_weight"] = args.vicreg_weight if beta is None else beta
    return CJEPAConfig(**{**MODEL, **overrides, **objective})


def pretrain(method: str, seed: int, max_steps: int, args: ExperimentArguments, run_dir: str, timer: _StepTimer | None = None):
    """Pretrain one model; returns (model, training logs, wall seconds)."""
    config = model_config(method, args)
    set_seed(seed)
    # Every method starts from the same weights: those of the C-JEPA model built with this seed
    # (a seed gives every method the same encoder and predictor; loading them makes it explicit
    # and checks it).
    reference = CJEPAForPreTraining(model_config("cjepa", args)).state_dict()
    model = CJEPAForPreTraining(config)
    missing, unexpected = model.load_state_dict(reference, strict=False)
    if missing or any(not key.startswith("projector.") for key in unexpected):
        raise RuntimeError(f"initial weights do not match: missing {missing}, unexpected {unexpected}")
    dataset = build_pretrain_dataset(
        "fashion_mnist",
        image_size=config.image_size,
        patch_size=config.patch_size,
        shuffle_buffer=5000,
        seed=seed,
    )
    training_args = CJEPATrainingArguments(
        **{
            **dict(
                output_dir=run_dir,
                max_steps=max_steps,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                warmup_start_lr=1e-4,
                final_lr=1e-6,
                warmup_steps=max(1, int(round(args.warmup_fraction * max_steps))),
                weight_decay=0.04,
                final_weight_decay=0.4,
                logging_steps=max(1, max_steps // 30),
                save_strategy="no",
                report_to="none",
                dataloader_num_workers=args.num_workers,
                seed=seed,
                use_cpu=not torch.cuda.is_available(),
                disable_tqdm=True,
            ),
            **(json.loads(args.training_overrides) if args.training_overrides else {}),
        }
    )
    trainer = CJEPATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=MaskCollator(config, seed=seed),
        callbacks=[timer] if timer is not None else None,
    )
    start = time.time()
    trainer.train()
    wall = time.time() - start
    logs = [{k: h[k] for k in LOG_KEYS if k in h} for h in trainer.state.log_history if "jepa_loss" in h]
    return model, logs, wall


def calibrate_steps(args: ExperimentArguments) -> tuple[int, float]:
    """Steps that fit `args.minutes` per run, from a short timed C-JEPA run (the costliest
    objective; every method then gets the same number of steps)."""
    timer = _StepTimer()
    pretrain("cjepa", 0, 8, args, os.path.join(args.work_dir, "calibration"), timer)
    per_step = float(np.median(np.diff(timer.times[2:]))) if len(timer.times) > 3 else float("nan")
    steps = max(1, int(args.minutes * 60 / per_step))
    logger.info("calibration: %.2f s per step -> %d steps in %.1f minutes", per_step, steps, args.minutes)
    return steps, per_step


def probe(train_x, train_y, test_x, test_y, args: ExperimentArguments) -> dict:
    start = time.time()
    result = evaluate_features(
        train_x,
        train_y,
        test_x,
        test_y,
        k=args.knn_k,
        temperature=args.knn_temperature,
        weight_decays=[float(v) for v in args.weight_decays.split(",")],
        max_iter=args.max_iter,
        seed=0,
    )
    result["probe_seconds"] = round(time.time() - start, 2)
    return result


def encoder_features(encoder: CJEPAModel, pixels: torch.Tensor, labels: torch.Tensor, args: ExperimentArguments):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, labels), batch_size=512)
    return extract_features(encoder, loader, last_n_layers=args.last_n_layers)


# ============================================================================ summary, table, plot


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per method: number of seeds, and mean / std over seeds of each figure."""
    summary: dict[str, dict] = {}
    baselines = ("random_init", "raw_pixels")
    methods = [m for m in dict.fromkeys(r["method"] for r in runs) if m not in baselines]
    for method in [*methods, *baselines]:
        group = [r for r in runs if r["method"] == method]
        if not group:
            continue
        figures = {
            "linear_probe": [r["linear_probe"]["accuracy"] for r in group],
            "knn_dino": [r["knn"]["dino"] for r in group],
            "knn_majority": [r["knn"]["majority"] for r in group],
            "feature_std": [r["feature_stats"]["feature_std"] for r in group],
            "effective_rank": [r["feature_stats"]["effective_rank"] for r in group],
            "effective_rank_centered": [r["feature_stats"]["effective_rank_centered"] for r in group],
        }
        if "final_log" in group[0]:
            figures["train_target_feature_std"] = [r["final_log"].get("target_feature_std") for r in group]
            figures["train_target_effective_rank"] = [r["final_log"].get("target_effective_rank") for r in group]
            figures["final_jepa_loss"] = [r["final_log"].get("jepa_loss") for r in group]
            figures["pretrain_seconds"] = [r["pretrain_seconds"] for r in group]
        entry = {"seeds": [r["seed"] for r in group], "dims": group[0]["feature_stats"]["dims"]}
        for name, values in figures.items():
            mean, std = _mean_std(values)
            entry[name] = {"mean": mean, "std": std}
        summary[method] = entry
    return summary


def _pm(entry: dict, scale: float = 1.0, digits: int = 2) -> str:
    if entry is None or not math.isfinite(entry["mean"]):
        return "-"
    text = f"{scale * entry['mean']:.{digits}f}"
    return text + (f" ± {scale * entry['std']:.{digits}f}" if entry["std"] is not None else "")


def table(summary: dict[str, dict]) -> str:
    header = [
        "features",
        "seeds",
        "linear probe top-1 %",
        "k-NN top-1 % (DINO, T=0.07)",
        "k-NN top-1 % (majority)",
        "dims",
        "feature std (test)",
        "eff. rank (test)",
        "eff. rank centred (test)",
        "target feature std (last train log)",
        "target eff. rank (last train log)",
    ]
    rows = []
    for method, s in summary.items():
        rows.append(
            [
                method_title(method),
                len(s["seeds"]),
                _pm(s["linear_probe"], 100),
                _pm(s["knn_dino"], 100),
                _pm(s["knn_majority"], 100),
                s["dims"],
                _pm(s["feature_std"], digits=4),
                _pm(s["effective_rank"]),
                _pm(s["effective_rank_centered"]),
                _pm(s.get("train_target_feature_std"), digits=4),
                _pm(s.get("train_target_effective_rank")),
            ]
        )
    return markdown_table(header, rows)


def plot_curves(runs: list[dict], path: str) -> str:
    """2x3 figure: total loss, JEPA loss, VICReg variance and covariance terms, target feature
    std and effective rank; one colour per method, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("loss", "total loss"),
        ("jepa_loss", "JEPA loss"),
        ("vicreg_variance", "VICReg variance term (unweighted)"),
        ("vicreg_covariance", "VICReg covariance term (unweighted)"),
        ("target_feature_std", "target feature std (L2-normalised)"),
        ("target_effective_rank", "target effective rank (RankMe)"),
    ]
    trained = list(dict.fromkeys(r["method"] for r in runs if r.get("log_history")))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    colours = {m: palette[i % len(palette)] for i, m in enumerate(trained)}
    line_styles = ["-", "--", ":", "-."]  # curves may coincide: keep each visible
    styles = {m: line_styles[i % len(line_styles)] for i, m in enumerate(trained)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, title) in zip(axes.flat, panels):
        labelled = set()
        for run in runs:
            logs = run.get("log_history") or []
            points = [(h["step"], h[key]) for h in logs if key in h]
            if not points:
                continue
            method = run["method"]
            ax.plot(
                *zip(*points),
                color=colours.get(method),
                linestyle=styles.get(method, "-"),
                alpha=0.8,
                lw=1.5,
                label=None if method in labelled else method_title(method),
            )
            labelled.add(method)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key.startswith("vicreg") or key.endswith("loss"):
            ax.set_yscale("log")
        if labelled:
            ax.legend(fontsize=8)
    fig.suptitle("Fashion-MNIST pretraining: same model, data order, masks and steps; only the loss differs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ============================================================================ main


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(ExperimentArguments)
    argv = sys.argv[1:] if argv is None else argv
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    os.makedirs(args.output_dir, exist_ok=True)
    runs_path = os.path.join(args.output_dir, f"{args.tag}_runs.json")
    command = "python scripts/experiment_fmnist.py " + " ".join(shlex.quote(a) for a in argv)
    experiment_start = time.time()
    if args.merge_runs:
        return merge(args, command)

    runs: list[dict] = []
    if args.resume and os.path.exists(runs_path):
        with open(runs_path) as f:
            runs = json.load(f)["runs"]
        logger.info("resuming: %d runs already in %s", len(runs), runs_path)
    done = {(r["method"], r["seed"]) for r in runs}

    max_steps, calibration = args.max_steps, None
    if args.minutes is not None:
        max_steps, per_step = calibrate_steps(args)
        calibration = {"minutes": args.minutes, "seconds_per_step": per_step, "max_steps": max_steps}

    # The probe sets: the same examples, decoded once, for every method and seed.
    start = time.time()
    config = model_config("cjepa", args)
    transform = ClassificationTransform(config.image_size, train=False, pad_to=config.image_size)
    if args.probe_split == "validation":  # settings are chosen on train images only
        carved = subsample(load_fashion_mnist("train"), 10_000, seed=1)
        probe_train, probe_test = carved.select(range(5_000)), carved.select(range(5_000, 10_000))
        probe_train = subsample(probe_train, args.probe_train_samples, seed=0)
        probe_test = subsample(probe_test, args.probe_test_samples, seed=0)
    else:
        probe_train = subsample(load_fashion_mnist("train"), args.probe_train_samples, seed=0)
        probe_test = subsample(load_fashion_mnist("test"), args.probe_test_samples, seed=0)
    train_pix, train_y = raw_pixel_features(probe_train, transform=transform)
    test_pix, test_y = raw_pixel_features(probe_test, transform=transform)
    shape = (-1, 3, config.image_size, config.image_size)
    train_pix, test_pix = train_pix.view(shape), test_pix.view(shape)
    logger.info("probe sets: %d train, %d test (%.0f s)", len(train_y), len(test_y), time.time() - start)

    def save() -> None:
        record = {
            "command": command,
            "args": asdict(args),
            "max_steps": max_steps,
            "calibration": calibration,
            "model": {**MODEL, **(json.loads(args.model_overrides) if args.model_overrides else {})},
            "training_overrides": json.loads(args.training_overrides) if args.training_overrides else {},
            "probe_split": args.probe_split,
            "methods": {
                m: {
                    k: getattr(model_config(m, args), k)
                    for k in ("vicreg_weight", "vicreg_sim_coeff", "vicreg_std_coeff", "vicreg_cov_coeff")
                }
                for m in args.methods
            },
            "probe_train_samples": len(train_y),
            "probe_test_samples": len(test_y),
            "torch_threads": torch.get_num_threads(),
            "runs": runs,
        }
        with open(runs_path, "w") as f:
            json.dump(record, f, indent=1)

    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done:
                continue
            load_before = os.getloadavg()[0]  # wall times on a shared machine depend on its load
            run_dir = os.path.join(args.work_dir, f"{method}-seed{seed}")
            if args.probe_only:
                saved = os.path.join(run_dir, "encoder")
                if not os.path.isdir(saved):
                    raise FileNotFoundError(f"--probe_only: no saved encoder at {saved!r}; pretrain it first (same --work_dir)")
                logger.info("scoring the saved %s encoder, seed %d", method, seed)
                encoder, logs, wall = CJEPAModel.from_pretrained(saved).eval(), [], None
            else:
                logger.info("pretraining %s, seed %d, %d steps", method, seed, max_steps)
                model, logs, wall = pretrain(method, seed, max_steps, args, run_dir)
                encoder = model.target_encoder
                encoder.save_pretrained(os.path.join(run_dir, "encoder"))
            start = time.time()
            train_x, _ = encoder_features(encoder, train_pix, train_y, args)
            test_x, _ = encoder_features(encoder, test_pix, test_y, args)
            extract_s = time.time() - start
            result = probe(train_x, train_y, test_x, test_y, args)
            record = {
                "method": method,
                "seed": seed,
                "max_steps": max_steps,
                "batch_size": args.batch_size,
                "extract_seconds": round(extract_s, 1),
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
            if args.probe_only:
                record["encoder"] = os.path.join(run_dir, "encoder")
            else:
                record.update(pretrain_seconds=round(wall, 1), final_log=logs[-1] if logs else {}, log_history=logs)
            runs.append({**record, **result})
            logger.info("%s seed %d: linear %.4f, k-NN %.4f", method, seed, result["linear_probe"]["accuracy"], result["knn"]["dino"])
            save()
        if args.baselines and ("random_init", seed) not in done:
            torch.manual_seed(seed)
            encoder = CJEPAModel(config).eval()
            train_x, _ = encoder_features(encoder, train_pix, train_y, args)
            test_x, _ = encoder_features(encoder, test_pix, test_y, args)
            runs.append({"method": "random_init", "seed": seed, **probe(train_x, train_y, test_x, test_y, args)})
            save()
    if args.baselines and not args.probe_only and ("raw_pixels", 0) not in done:  # no encoder: once
        runs.append({"method": "raw_pixels", "seed": 0, **probe(train_pix.flatten(1), train_y, test_pix.flatten(1), test_y, args)})
        save()

    return report(runs, args, command, max_steps, len(train_y), len(test_y), time.time() - experiment_start)


def report(runs: list[dict], args: ExperimentArguments, command: str, max_steps: int, n_train: int, n_test: int, total: float) -> dict:
    """Write {tag}_summary.json, {tag}_table.md and {tag}_curves.png; print the table."""
    summary = summarize(runs)
    with open(os.path.join(args.output_dir, f"{args.tag}_summary.json"), "w") as f:
        json.dump(
            {"command": command, "max_steps": max_steps, "wall_seconds_this_invocation": round(total, 1), "summary": summary}, f, indent=2
        )
    text = table(summary)
    header = (
        f"Fashion-MNIST, {max_steps} pretraining steps of batch {args.batch_size} per run, VICReg weight "
        f"{args.vicreg_weight:g} (C-JEPA methods without their own beta); probes on "
        f"{n_train} train / {n_test} test images; mean ± sample std over seeds.\n\n"
        f"Command: `{command}`\n\n"
    )
    with open(os.path.join(args.output_dir, f"{args.tag}_table.md"), "w") as f:
        f.write(header + text + "\n")
    if any(r.get("log_history") for r in runs):
        plot_curves(runs, os.path.join(args.output_dir, f"{args.tag}_curves.png"))
    print(header + text)
    logger.info("done in %.0f s; results in %s", total, args.output_dir)
    return summary


def merge(args: ExperimentArguments, command: str) -> dict:
    """Summarise runs made by several invocations (e.g. one process per core) as one experiment.

    A bare C-JEPA method name from a file made with another --vicreg_weight than this
    invocation's is renamed "name:beta", so runs with different betas never pool."""
    runs, sources, steps, sizes = [], [], set(), set()
    for path in args.merge_runs:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--merge_runs: no such file {path!r}")
        with open(path) as f:
            record = json.load(f)
        steps.add(record["max_steps"])
        sizes.add((record["probe_train_samples"], record["probe_test_samples"]))
        beta = record["args"]["vicreg_weight"]
        for run in record["runs"]:
            if run["method"] in ("random_init", "raw_pixels"):
                runs.append(run)
                continue
            base, own = parse_method(run["method"])
            if own is None and METHODS[base]["vicreg_weight"] > 0 and beta != args.vicreg_weight:
                run = {**run, "method": f"{base}:{beta:g}"}
            runs.append(run)
        sources.append({"path": path, "command": record["command"]})
    if len(steps) > 1 or len(sizes) > 1:
        raise ValueError(f"--merge_runs: the files differ in max_steps {sorted(steps)} or probe sizes {sorted(sizes)}")
    seen = [(r["method"], r["seed"]) for r in runs]
    duplicates = sorted({key for key in seen if seen.count(key) > 1})
    if duplicates:
        raise ValueError(f"--merge_runs: (method, seed) pairs in more than one file: {duplicates}")
    max_steps, (n_train, n_test) = steps.pop(), sizes.pop()
    with open(os.path.join(args.output_dir, f"{args.tag}_runs.json"), "w") as f:
        json.dump({"command": command, "merged_from": sources, "max_steps": max_steps, "runs": runs}, f, indent=1)
    command += "  (runs made by: " + "; ".join(f"`{s['command']}`" for s in sources) + ")"
    return report(runs, args, command, max_steps, n_train, n_test, 0.0)


if __name__ == "__main__":
    main()
