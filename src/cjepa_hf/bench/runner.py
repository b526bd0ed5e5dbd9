"""Time the trainer's real C-JEPA pretraining step, a fast path against the plain path in the same process.

    python scripts/benchmark.py --preset vit-b16 --batch-size 256 --dtype bf16 --compile --output b16.json

One step is `CJEPATrainer`'s (`cjepa_hf.bench.TrainerStep`, "step" in the JSON):
training_step (forward: target encoder without grad, context encoder, predictor, loss;
backward), the optimizer step with the callback's schedules and non-finite guard, AdamW,
the EMA update, the LR scheduler, on synthetic images with realistic multi-block masks
(sizes change from batch to batch). The plain baseline (eager attention, fp32, no compile,
foreach AdamW) runs in the same process on a copy of the same weights, its steps
interleaved with the fast path's, so both see the same machine load; `speedup` is the
ratio of their median step times. The split into parts comes from separate instrumented
steps (`TrainerStep.instrumented_step`), so the headline is not perturbed. The FLOP
formula is `cjepa_hf.bench.FLOP_FORMULA` (also in the JSON).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import time

import torch

from .. import configuration_cjepa as configuration
from ..configuration_cjepa import PRESET_NAMES, CJEPAConfig, parse_config_overrides
from ..modeling_cjepa import CJEPAForPreTraining
from ..training import ADAMW_IMPLEMENTATIONS, trim_context
from .flops import FLOP_FORMULA, device_peak_flops, pretraining_step_flops
from .memory import measure_peak_memory, state_bytes
from .report import write_json
from .step import DTYPES, PLAIN_OPTIONS, SPLIT_KEYS, STEP, StepOptions, TrainerStep, device_batch, summarize_times, synthetic_masks

# A test-size model, for smoke runs (tests/conftest.py takes its TINY from here).
TINY_PRESET = dict(
    image_size=32,
    patch_size=4,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    predictor_hidden_size=32,
    predictor_num_hidden_layers=2,
    projector_dims=(64, 64),
    min_keep=4,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-b16", help=f"model size: {', '.join(PRESET_NAMES)} or 'tiny' (default vit-b16)")
    parser.add_argument(
        "--recipe", default=None, help="time a pretraining recipe's model (its objective and config_overrides) instead of --preset"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's (224; 32 for 'tiny')")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setup")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per setup first (compile happens here); >= 1")
    parser.add_argument("--split-steps", type=int, default=1, help="instrumented steps per setup for the split (0: no split)")
    parser.add_argument("--attn-implementation", default="sdpa", help="eager | sdpa | flash_attention_2 | flex_attention | ...")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="bf16 = CUDA autocast with fp32 master weights (refused on CPU)")
    parser.add_argument("--compile", action="store_true", help="the trainer's torch_compile (dynamic mask sizes, one graph)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", default=None, help="e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--adamw",
        choices=ADAMW_IMPLEMENTATIONS,
        default="fused",
        help="optim adamw_torch_fused (falls back to foreach where unsupported) or adamw_torch (foreach)",
    )
    parser.add_argument("--context-multiple", type=int, default=0, help="trim every context to a multiple of this (both setups; 0: off)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain path")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device bf16 dense peak for MFU, if not in the built-in table")
    parser.add_argument(
        "--statistic",
        choices=("median", "min"),
        default="median",
        help="step time behind images_per_s and speedup: median (default) or min (the least disturbed step, "
        "for a shared, busy machine); the JSON has both",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.split_steps < 0:
        parser.error(f"--split-steps must be >= 0, got {args.split_steps}")
    return args


def build_config(preset: str, image_size: int | None, recipe: str | None = None) -> CJEPAConfig:
    """The timed model: a pretraining recipe's (its objective, preset and config_overrides, as
    scripts/pretrain.py builds it), else a preset's."""
    overrides = {} if image_size is None else {"image_size": image_size}
    if recipe:
        with open(recipe) as f:
            values = json.load(f)
        fields = {**parse_config_overrides(values.get("config_overrides")), **overrides}
        return configuration.build_config(fields, values.get("preset"), values.get("objective"), f"{recipe}'s config_overrides")
    if preset.lower() == "tiny":
        return CJEPAConfig(**{**TINY_PRESET, **overrides})
    return CJEPAConfig.from_preset(preset, **overrides)


def _step_timer(device: torch.device):
    """start() / stop() around one step, seconds(pair) -> wall time, cpu_seconds(pair) -> the
    process's CPU time (CPU runs only, else None). CUDA events are read after the last step."""
    if device.type == "cuda":

        def start():
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event

        def stop(begin):
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return (begin, event)

        def seconds(pair):
            return pair[0].elapsed_time(pair[1]) / 1e3

        def cpu_seconds(pair):
            return None
    else:

        def start():
            return (time.perf_counter(), time.process_time())

        def stop(begin):
            return (begin, (time.perf_counter(), time.process_time()))

        def seconds(pair):
            return pair[1][0] - pair[0][0]

        def cpu_seconds(pair):
            return pair[1][1] - pair[0][1]

    return start, stop, seconds, cpu_seconds


def _median(values: list[float]) -> float:
    ordered, mid = sorted(values), len(values) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def speedup_statistics(base: dict, fast: dict, num_threads: int) -> dict:
    """Fast-over-plain speedups from the two setups' per-step times, several ways.

    median / min / mean: ratios of the step-time statistics. paired_median: the median
    over rounds of baseline time / fast time of the two steps timed next to each other.
    On the CPU also paired_median_uncontended: the same over the rounds in which both
    steps got (almost) all their threads' worth of CPU time (process CPU time >= 0.8 *
    threads * wall time), i.e. were not slowed by other work on a shared machine;
    uncontended_pairs says how many rounds that is (None when no round qualifies)."""
    b_wall, f_wall = base["step_time_s"]["all"], fast["step_time_s"]["all"]
    out = {key: fast["images_per_s_by_statistic"][key] / base["images_per_s_by_statistic"][key] for key in ("median", "min", "mean")}
    out["paired_median"] = _median([b / f for b, f in zip(b_wall, f_wall)])
    if base.get("step_cpu_time_s") and fast.get("step_cpu_time_s"):
        b_cpu, f_cpu = base["step_cpu_time_s"]["all"], fast["step_cpu_time_s"]["all"]
        full = [b / f for b, f, bc, fc in zip(b_wall, f_wall, b_cpu, f_cpu) if bc >= 0.8 * num_threads * b and fc >= 0.8 * num_threads * f]
        out["paired_median_uncontended"] = _median(full) if full else None
        out["uncontended_pairs"] = len(full)
    return out


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.dtype == "bf16" and device.type != "cuda":
        raise SystemExit(
            f"--dtype bf16 is CUDA autocast and is refused on device '{device}': bf16 autocast on the CPU is about "
            "12x slower than fp32. Use --dtype fp32 on the CPU."
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    config = build_config(args.preset, args.image_size, args.recipe)
    options = StepOptions(
        attn_implementation=args.attn_implementation,
        dtype=args.dtype,
        compile=args.compile,
        compile_backend=args.compile_backend,
        compile_mode=args.compile_mode,
        gradient_checkpointing=args.gradient_checkpointing,
        adamw=args.adamw,
    )
    batch = args.batch_size
    compile_warm = 1 if (args.compile and args.split_steps) else 0
    num_batches = args.warmup + args.steps + compile_warm + args.split_steps
    masks, mask_source = synthetic_masks(config, batch, num_batches, seed=args.seed, device=device)
    if args.context_multiple:
        g = torch.Generator().manual_seed(args.seed)
        masks = [(trim_context(c, args.context_multiple, g), t) for c, t in masks]
    g = torch.Generator().manual_seed(args.seed)
    pixel_values = torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=g).to(device)

    torch.manual_seed(args.seed)
    model = CJEPAForPreTraining(config).to(device)
    setups = {}
    # Each setup is a CJEPATrainer prepared in full before the next is built (Accelerate's state
    # is global; a prepared model keeps its own autocast). The schedules run over all its steps.
    total_steps = num_batches
    if not args.no_baseline:
        setups["baseline"] = TrainerStep(copy.deepcopy(model), PLAIN_OPTIONS, total_steps=total_steps, seed=args.seed)
    setups["fast"] = TrainerStep(model, options, total_steps=total_steps, seed=args.seed)  # the original, last
    peak_flops_name, peak_flops = device_peak_flops(device)
    peak_flops_source = "PEAK_BF16_DENSE_FLOPS (by device name)" if peak_flops else None
    if args.peak_tflops:
        peak_flops, peak_flops_source = args.peak_tflops * 1e12, "--peak-tflops"

    def inputs(context: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return device_batch(pixel_values, context, targets)

    results = {name: {"options": s.options.to_dict() | {"adamw_used": s.adamw_implementation}} for name, s in setups.items()}
    # Warm-up (compilation, allocator, autotuning); the last warm-up step measures memory.
    for name, setup in setups.items():
        t0 = time.perf_counter()
        for i in range(args.warmup):
            if i == args.warmup - 1:
                with measure_peak_memory(device) as memory:
                    setup.step(inputs(*masks[i]))
            else:
                setup.step(inputs(*masks[i]))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        held = state_bytes(setup.model, setup.optimizer)
        results[name]["warmup_s"] = time.perf_counter() - t0
        results[name]["state_bytes"] = held
        results[name]["peak_memory_bytes"] = None if memory["transient_bytes"] is None else held + memory["transient_bytes"]
        results[name]["peak_memory_method"] = (
            f"parameters + buffers + optimizer state + step peak above them ({memory['method']})" if memory["method"] else None
        )

    # Timed steps, interleaved (alternating order) so that both setups see the same load.
    start, stop, seconds, cpu_seconds = _step_timer(device)
    pairs = {name: [] for name in setups}
    names = list(setups)
    for r in range(args.steps):
        c, t = masks[args.warmup + r]
        for name in names if r % 2 == 0 else names[::-1]:
            begin = start()
            setups[name].step(inputs(c, t))
            pairs[name].append(stop(begin))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timed_masks = masks[args.warmup : args.warmup + args.steps]
    flops = [pretraining_step_flops(config, batch, c.shape[1], t.shape[1], t.shape[2])["total"] for c, t in timed_masks]
    for name in setups:
        times = [seconds(p) for p in pairs[name]]
        summary = summarize_times(times)
        r = results[name]
        r["step_time_s"] = summary
        cpu_times = [cpu_seconds(p) for p in pairs[name]]
        r["step_cpu_time_s"] = summarize_times(cpu_times) if cpu_times[0] is not None else None
        r["images_per_s"] = batch / summary[args.statistic]
        r["images_per_s_by_statistic"] = {
            "median": batch / summary["median"],
            "min": batch / summary["min"],
            "mean": batch * len(times) / sum(times),
        }
        r["tflops"] = (sum(flops) / len(flops)) / summary[args.statistic] / 1e12  # per step, as images_per_s
        r["mfu"] = (r["tflops"] * 1e12 / peak_flops) if peak_flops else None

    # The split, from separate instrumented steps.
    for name, setup in setups.items():
        splits = []
        offset = args.warmup + args.steps
        for i in range(compile_warm + args.split_steps):
            _, split = setup.instrumented_step(inputs(*masks[offset + i]))
            if i >= compile_warm:
                splits.append(split)
        results[name]["split_s"] = {key: sum(s[key] for s in splits) / len(splits) for key in (*SPLIT_KEYS, "total")} if splits else None
        # The trainer's own count of optimizer steps: every step above went through CJEPATrainer.
        results[name]["trainer_global_step"] = setup.trainer.state.global_step
        results[name]["trainer_class"] = type(setup.trainer).__name__
        results[name]["wrapped_model_class"] = type(setup.wrapped).__name__

    fast = results["fast"]
    base = results.get("baseline")
    speedups = speedup_statistics(base, fast, torch.get_num_threads()) if base else None
    context_lengths = [c.shape[1] for c, _ in timed_masks]
    block_sizes = [t.shape[2] for _, t in timed_masks]
    mean_flops = pretraining_step_flops(
        config,
        batch,
        round(sum(context_lengths) / len(context_lengths)),
        config.num_target_blocks,
        round(sum(block_sizes) / len(block_sizes)),
    )
    out = {
        "step": STEP,
        "images_per_s": fast["images_per_s"],
        "baseline_images_per_s": base["images_per_s"] if base else None,
        "speedup": fast["images_per_s"] / base["images_per_s"] if base else None,
        "speedup_by_statistic": speedups,
        "statistic": args.statistic,
        "peak_memory_bytes": fast["peak_memory_bytes"],
        "baseline_peak_memory_bytes": base["peak_memory_bytes"] if base else None,
        "tflops": fast["tflops"],
        "mfu": fast["mfu"],
        "split_s": fast["split_s"],
        "baseline_split_s": base["split_s"] if base else None,
        "device": peak_flops_name,
        "device_type": device.type,
        "peak_bf16_dense_flops": peak_flops,
        "peak_flops_source": peak_flops_source,
        "steps_per_setup": {"warmup": args.warmup, "timed": args.steps, "split": compile_warm + args.split_steps},
        "results": results,
        "flops_per_step_mean": sum(flops) / len(flops),
        "flops_breakdown_at_mean_masks": mean_flops,
        "flop_formula": FLOP_FORMULA,
        "timing": (
            f"images_per_s = batch / {args.statistic} step time over the timed steps; the setups' steps are interleaved "
            "(alternating order); "
            + (
                "CUDA events, one synchronize after the last step"
                if device.type == "cuda"
                else "perf_counter per step (wall); process_time per step in step_cpu_time_s"
            )
        ),
        "masks": {
            "source": mask_source,
            "context_lengths": context_lengths,
            "target_block_sizes": block_sizes,
            "num_target_blocks": config.num_target_blocks,
            "context_multiple": args.context_multiple,
        },
        "preset": args.preset if not args.recipe else None,
        "recipe": args.recipe,
        "batch_size": batch,
        "image_size": config.image_size,
        "options": options.to_dict(),
        "baseline_options": PLAIN_OPTIONS.to_dict() if base else None,
        "args": vars(args),
        "config": config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch_version": torch.__version__,
        "transformers_version": __import__("transformers").__version__,
        "python_version": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return out


def _fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def print_table(out: dict, file=None) -> None:
    print(
        f"\n{out['preset']} | batch {out['batch_size']} | {out['image_size']} px | {out['device']} | torch {out['torch_version']}"
        f" | masks: {out['masks']['source']}",
        file=file,
    )
    cols = [
        "setup",
        "img/s",
        "step ms",
        *[k.replace("_forward_backward", " f+b").replace("_forward", " fwd") for k in SPLIT_KEYS],
        "peak mem",
        "TFLOP/s",
        "MFU",
    ]
    rows = []
    for name, r in out["results"].items():
        split = r["split_s"] or {}
        rows.append(
            [
                name,
                f"{r['images_per_s']:.2f}",
                f"{r['step_time_s']['median'] * 1e3:.1f}",
                *[f"{split[k] * 1e3:.1f}" if k in split else "-" for k in SPLIT_KEYS],
                _fmt_bytes(r["peak_memory_bytes"]),
                f"{r['tflops']:.3f}",
                "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
    for row in (cols, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)), file=file)
    print("(split columns in ms, from separate instrumented steps)", file=file)
    if out["speedup"] is not None:
        by = ", ".join(f"{k} {v:.2f}x" if isinstance(v, float) else f"{k} {v}" for k, v in out["speedup_by_statistic"].items())
        print(f"speedup over the plain path (same process, {out['statistic']} step): {out['speedup']:.2f}x  [{by}]", file=file)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = run(args)
    print_table(out)
    if args.output:
        write_json(out, args.output)
    return out
