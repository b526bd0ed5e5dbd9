"""The trainer's step under data parallelism: DDP against FSDP, one process per device, for the GPU check.

    torchrun --standalone --nproc_per_node N -m cjepa_hf.bench.distributed --preset vit-l16 \\
        --batch-size 64 --dtype bf16 --output ddp_fsdp.json

Each mode is a `TrainerStep` (the trainer's own step) whose `CJEPATrainer` Accelerate prepares for
the launch: "ddp" is what a plain `accelerate launch` / torchrun run gets (DistributedDataParallel),
"fsdp" the trainer's FSDP2 option (`fsdp=True`, `cjepa_hf.training.fsdp`), run only where
`fsdp_support()` finds it (otherwise the mode is recorded as skipped, with the reason, never as a
figure). Every process trains on its own
synthetic batch with its own masks; images_per_s counts all processes' images. Rank 0 writes the
JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
from typing import Any

import torch

from ..modeling_cjepa import CJEPAForPreTraining
from .memory import state_bytes
from .report import write_json
from .runner import _step_timer, build_config
from .step import DTYPES, STEP, StepOptions, TrainerStep, device_batch, summarize_times, synthetic_masks

MODES = ("ddp", "fsdp")


def fsdp_support() -> tuple[dict[str, Any] | None, str]:
    """(the CJEPATrainingArguments that turn the trainer's FSDP on, how it was found), or
    (None, why not). The trainer has FSDP when it has `cjepa_hf.training.fsdp.prepare_fsdp`
    (FSDP2 through transformers' own `fsdp` argument, `fsdp=True`), or when
    `CJEPATrainingArguments` has an fsdp field beyond transformers' own."""
    import importlib

    from transformers import TrainingArguments

    from .. import training

    try:
        module = importlib.import_module("cjepa_hf.training.fsdp")
    except ImportError:
        module = None
    if module is not None and hasattr(module, "prepare_fsdp"):
        return {"fsdp": True}, "cjepa_hf.training.fsdp.prepare_fsdp (FSDP2 through transformers' fsdp argument)"
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = [f.name for f in dataclasses.fields(training.CJEPATrainingArguments) if "fsdp" in f.name.lower() and f.name not in base]
    if own:
        return {"fsdp": True}, f"CJEPATrainingArguments fields {own}"
    return None, (
        "FSDP not available: the trainer has no FSDP option yet (no cjepa_hf.training.fsdp.prepare_fsdp, no fsdp field of "
        "CJEPATrainingArguments beyond transformers' own)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="vit-l16", help="model size, or 'tiny'")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--attn-implementation", default="sdpa")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--modes", default="ddp,fsdp", help=f"comma-separated, of {MODES}")
    parser.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes must be a comma-separated list of {MODES}, got {args.modes!r}")
    args.modes = modes
    return args


def _max_over_ranks(value: int | None, device: torch.device) -> int | None:
    if value is None or not torch.distributed.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def run_mode(mode: str, args: argparse.Namespace, arguments: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Warm-up and timed steps of one mode on this process; figures as rank 0 reports them."""
    config = build_config(args.preset, args.image_size)
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    total = args.warmup + args.steps
    masks, _ = synthetic_masks(config, args.batch_size, total, seed=args.seed + rank, device=device)
    g = torch.Generator().manual_seed(args.seed + rank)
    pixels = torch.randn(args.batch_size, config.num_channels, config.image_size, config.image_size, generator=g).to(device)
    torch.manual_seed(args.seed)  # the same initial weights on every process
    model = CJEPAForPreTraining(config).to(device)
    options = StepOptions(attn_implementation=args.attn_implementation, dtype=args.dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = TrainerStep(model, options, total_steps=total, seed=args.seed, **arguments)
    for i in range(args.warmup):
        step.step(device_batch(pixels, *masks[i]))
    start, stop, seconds, _ = _step_timer(device)
    pairs = []
    for i in range(args.warmup, total):
        begin = start()
        step.step(device_batch(pixels, *masks[i]))
        pairs.append(stop(begin))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = summarize_times([seconds(p) for p in pairs])
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    result = {
        "status": "measured",
        "step": STEP,
        "images_per_s": world * args.batch_size / times["median"],
        "images_per_s_per_process": args.batch_size / times["median"],
        "step_time_s": times,
        "peak_memory_bytes": _max_over_ranks(peak, device),
        "peak_memory_method": "cuda max_memory_allocated, the largest over the processes" if peak is not None else None,
        "state_bytes_rank0": state_bytes(step.model, step.optimizer),
        "wrapped_model_class": type(step.wrapped).__name__,
        "trainer_class": type(step.trainer).__name__,
        "trainer_global_step": step.trainer.state.global_step,
        "arguments": arguments,
    }
    del step, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.device:
        device = torch.device(args.device)
    else:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    fsdp_arguments, fsdp_found = fsdp_support()
    out: dict[str, Any] = {
        "preset": args.preset,
        "batch_size_per_process": args.batch_size,
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
        "steps": {"warmup": args.warmup, "timed": args.steps},
        "device_type": device.type,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "fsdp_support": fsdp_found,
        "modes": {},
    }
    for mode in args.modes:
        if mode == "fsdp" and fsdp_arguments is None:
            out["modes"][mode] = {"status": "skipped", "reason": fsdp_found}
            continue
        arguments = fsdp_arguments if mode == "fsdp" else {}
        try:
            out["modes"][mode] = run_mode(mode, args, arguments, device)
        except Exception as error:  # noqa: BLE001 - reported in the JSON; the other mode still runs
            out["modes"][mode] = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
    ddp, fsdp = out["modes"].get("ddp", {}), out["modes"].get("fsdp", {})
    if ddp.get("status") == fsdp.get("status") == "measured":
        out["fsdp_over_ddp"] = {
            "images_per_s": fsdp["images_per_s"] / ddp["images_per_s"],
            "peak_memory": fsdp["peak_memory_bytes"] / ddp["peak_memory_bytes"] if ddp["peak_memory_bytes"] else None,
        }
    out["timestamp"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if int(os.environ.get("RANK", 0)) == 0:
        write_json(out, args.output, announce=False)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
