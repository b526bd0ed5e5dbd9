"""The benchmark harness (kept apart from the training code): the trainer's real step timed with chosen switches, its FLOPs and memory.

`step` (TrainerStep: `CJEPATrainer`'s training step, optimizer step and EMA callback, one step at
a time; StepOptions; the split into parts), `flops` (FLOP formula, device peaks, MFU), `memory`
(state bytes, peak memory of a step), `runner` (the step benchmark behind `scripts/benchmark.py`),
`pipeline` (the input-pipeline benchmark behind `scripts/benchmark_data.py`), `report` (the
JSON file each benchmark writes).
"""

from .flops import FLOP_FORMULA, PEAK_BF16_DENSE_FLOPS, device_peak_flops, peak_flops_for_name, pretraining_step_flops
from .memory import measure_peak_memory, state_bytes
from .step import DTYPES, PLAIN_OPTIONS, SPLIT_KEYS, STEP, StepOptions, TrainerStep, device_batch, summarize_times, synthetic_masks

__all__ = [
    "DTYPES",
    "FLOP_FORMULA",
    "PEAK_BF16_DENSE_FLOPS",
    "PLAIN_OPTIONS",
    "SPLIT_KEYS",
    "STEP",
    "StepOptions",
    "TrainerStep",
    "device_batch",
    "device_peak_flops",
    "measure_peak_memory",
    "peak_flops_for_name",
    "pretraining_step_flops",
    "state_bytes",
    "summarize_times",
    "synthetic_masks",
]
