#!/usr/bin/env python
"""What online evaluation costs at a recipe's settings (default: the quick start).

    python scripts/benchmark_online_eval.py                               # the quick start's settings
    python scripts/benchmark_online_eval.py recipes/small-data-fashion-mnist.json --steps 60

Times, in one process and in alternation (A B A B, so that a noisy shared machine hits both
alike), `--steps` training steps of the recipe's model and data with the online probe on and
off, and the k-NN monitor's evaluation at the recipe's bank and query sizes. It then projects
the cost onto the recipe's full run: (probe overhead per step x max_steps + evaluations x
time per evaluation) / training time. Prints the figures and writes them as JSON (--output).
The steps timed are `CJEPATrainer.train`'s own: the code users run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pretrain  # noqa: E402  (the same argument parsing and data as a real run)

from cjepa_hf import CJEPAForPreTraining  # noqa: E402
from cjepa_hf.bench.report import write_json  # noqa: E402
from cjepa_hf.data import build_pretrain_dataset  # noqa: E402
from cjepa_hf.masking import MaskCollator  # noqa: E402
from cjepa_hf.online_eval import KNNMonitorSet  # noqa: E402
from cjepa_hf.trainer import CJEPATrainer  # noqa: E402


def timed_run(recipe_args: list[str], steps: int, probe: bool, out: str) -> tuple[float, CJEPATrainer]:
    model_args, data_args, eval_args, training_args = pretrain.parse_args(
        [
            *recipe_args,
            "--max_steps",
            str(steps),
            "--output_dir",
            out,
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--eval_on_start",
            "false",
            "--final_eval_dataset",
            "",
            "--logging_steps",
            str(steps),
            "--online_probe",
            str(probe).lower(),
            "--disable_tqdm",
            "true",
        ]
    )
    config = pretrain.build_config(model_args)
    torch.manual_seed(training_args.seed)
    model = CJEPAForPreTraining(config)
    dataset = build_pretrain_dataset(
        data_args.dataset,
        image_size=config.image_size,
        patch_size=config.patch_size,
        split=data_args.split,
        label_column=data_args.label_column,
        shuffle_buffer=data_args.shuffle_buffer,
        seed=training_args.seed,
    )
    trainer = CJEPATrainer(model=model, args=training_args, train_dataset=dataset, data_collator=MaskCollator(config, seed=0))
    result = trainer.train()
    return result.metrics["train_runtime"], trainer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", default=pretrain.QUICKSTART)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed run")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds")
    parser.add_argument("--output", default=os.path.join(HERE, "..", "docs", "benchmarks", "online_eval.json"))
    args = parser.parse_args(argv)
    full = pretrain.parse_args([args.recipe])
    _, data_args, eval_args, training_args = full
    times = {"probe_on": [], "probe_off": []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            for probe in (True, False):
                seconds, trainer = timed_run([args.recipe], args.steps, probe, out)
                times["probe_on" if probe else "probe_off"].append(seconds)
        config = trainer.accelerator.unwrap_model(trainer.model).config
        monitor = KNNMonitorSet(
            eval_args.eval_dataset or "fashion_mnist",
            image_size=config.image_size,
            patch_size=config.patch_size,
            split=eval_args.eval_split,
            bank_size=eval_args.eval_bank_size,
            query_size=eval_args.eval_query_size,
        )
        trainer.evaluate(monitor)  # the first pass decodes (and caches) the images
        eval_times = []
        for _ in range(2):
            start = time.perf_counter()
            trainer.evaluate(monitor)
            eval_times.append(time.perf_counter() - start)
    on, off = min(times["probe_on"]), min(times["probe_off"])
    per_step = off / args.steps
    probe_per_step = max(on - off, 0.0) / args.steps
    max_steps = training_args.max_steps
    eval_steps = training_args.eval_steps
    evaluations = 0
    if training_args.eval_strategy != "no" and eval_steps:
        every = int(eval_steps) if eval_steps >= 1 else max(1, int(eval_steps * max_steps))
        evaluations = max_steps // every + int(bool(training_args.eval_on_start))
    eval_seconds = min(eval_times)
    train_seconds = per_step * max_steps
    overhead = (probe_per_step * max_steps + evaluations * eval_seconds) / train_seconds
    result = {
        "recipe": os.path.relpath(args.recipe),
        "steps_timed": args.steps,
        "rounds": args.rounds,
        "train_seconds_probe_on": times["probe_on"],
        "train_seconds_probe_off": times["probe_off"],
        "seconds_per_step": per_step,
        "probe_seconds_per_step": probe_per_step,
        "eval_bank_size": eval_args.eval_bank_size,
        "eval_query_size": eval_args.eval_query_size,
        "seconds_per_evaluation": eval_times,
        "recipe_max_steps": max_steps,
        "recipe_evaluations": evaluations,
        "projected_overhead_fraction": overhead,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    write_json(result, args.output)
    return result


if __name__ == "__main__":
    main()
