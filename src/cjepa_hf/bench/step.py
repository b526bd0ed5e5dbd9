"""The benchmark's step: `CJEPATrainer`'s own training step (training_step, the optimizer step with the callback's schedules, non-finite guard and EMA), driven one step at a time.

`TrainerStep` builds a `CJEPATrainer` for a model with the switches of `StepOptions` (attention
kernel, bf16 autocast, `torch_compile` with the dynamic-mask path, activation checkpointing,
fused or foreach AdamW), prepares it as `Trainer.train` does, and runs, per `step(batch)`, the
sequence of Trainer's inner loop for one optimizer step without gradient accumulation:
on_step_begin, `training_step` (forward, loss, backward), the loss added to the log window's sum
(through `logging_nan_inf_filter`'s check when it is on), the FLOP count, the gradient norm (the
loop takes it at every step), on_pre_optimizer_step (schedules, the non-finite flag),
`optimizer.step()`, on_optimizer_step (EMA, buffer restore), the LR scheduler, zero_grad,
on_step_end. tests/test_performance.py checks that 3 such steps give the losses and weights of
`CJEPATrainer.train()`. `instrumented_step` runs the same step split into its parts.
`device_batch` makes a batch as the trainer receives it from `MaskCollator`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from transformers.trainer_callback import TrainerState

from ..configuration_cjepa import CJEPAConfig
from ..masking import MaskCollator
from ..training import ADAMW_IMPLEMENTATIONS, CJEPATrainer, CJEPATrainingArguments

STEP = "CJEPATrainer.training_step + optimizer step + EMA callback"
DTYPES = ("fp32", "bf16")
SPLIT_KEYS = ("target_forward", "context_forward_backward", "predictor_forward_backward", "optimizer", "ema", "other")


@dataclass
class StepOptions:
    """The switches of the trainer's step. `PLAIN_OPTIONS` is the reference path."""

    attn_implementation: str = "sdpa"
    dtype: str = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    gradient_checkpointing: bool = False
    adamw: str = "fused"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.adamw not in ADAMW_IMPLEMENTATIONS:
            raise ValueError(f"adamw must be one of {ADAMW_IMPLEMENTATIONS}, got {self.adamw!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Eager attention, fp32, no compile, foreach AdamW (optim adamw_torch).
PLAIN_OPTIONS = StepOptions(attn_implementation="eager", adamw="foreach")


class _Clock:
    """Named time stamps: CUDA events on a GPU (no host sync until `read`), perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: dict[str, Any] = {}

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks[name] = event
        else:
            self.marks[name] = time.perf_counter()

    def read(self) -> dict[str, float]:
        """Seconds since the mark "start"."""
        start = self.marks["start"]
        if self.cuda:
            torch.cuda.synchronize()
            return {name: start.elapsed_time(event) / 1e3 for name, event in self.marks.items()}
        return {name: value - start for name, value in self.marks.items()}


class _TimedStage(nn.Module):
    """Wraps a stage module for an instrumented step: marks the start and end of its forward and,
    through a tensor hook on its output, when the gradient of that output is ready (the end of the
    backward of everything downstream)."""

    def __init__(self, module: nn.Module, run: Callable, name: str, clock: _Clock, grad_mark: str | None, mark_dynamic: bool) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "_run", run)  # not a submodule: may be a compiled wrapper of `module`
        self._name, self._clock, self._grad_mark, self._mark_dynamic = name, clock, grad_mark, mark_dynamic

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._mark_dynamic:  # a separately compiled stage: its token dimension varies too
            for tensor in (*args, *kwargs.values()):
                if torch.is_tensor(tensor) and tensor.dim() in (2, 3) and tensor.dtype == torch.long:
                    torch._dynamo.maybe_mark_dynamic(tensor, tensor.dim() - 1)  # (B, K) or (B, M, T)
                elif torch.is_tensor(tensor) and tensor.dim() == 3:
                    torch._dynamo.maybe_mark_dynamic(tensor, 1)  # tokens (B, K, D)
        self._clock.mark(f"{self._name}_forward_start")
        out = self._run(*args, **kwargs)
        self._clock.mark(f"{self._name}_forward_end")
        tensor = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
        if self._grad_mark is not None and tensor.requires_grad:
            grad_mark = self._grad_mark
            tensor.register_hook(lambda grad: self._clock.mark(grad_mark))
        return out


class TrainerStep:
    """One optimizer step of `CJEPATrainer` on `model` (a `CJEPAForPreTraining`, already on its
    device) with the switches of `options`, in a run of `total_steps` (the schedules' length).

    `arguments` go to `CJEPATrainingArguments` (e.g. warmup_steps, learning_rate, seed).
    `step(batch)` returns the loss as a detached tensor without synchronising (reading it syncs);
    `instrumented_step(batch)` runs the same step and returns the time of each part."""

    def __init__(
        self, model: nn.Module, options: StepOptions | None = None, total_steps: int = 1000, output_dir: str | None = None, **arguments: Any
    ) -> None:
        self.options = opts = options if options is not None else StepOptions()
        device = next(model.parameters()).device
        if opts.dtype == "bf16" and device.type != "cuda":
            raise ValueError(
                f"dtype='bf16' means CUDA autocast and is refused on device {device.type!r}: bf16 autocast on the "
                "CPU is about 12x slower than fp32 here; use dtype='fp32' on the CPU"
            )
        self.device = device
        model.set_attn_implementation(opts.attn_implementation)
        if opts.gradient_checkpointing:  # what Trainer.train does for activation_checkpointing
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if output_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cjepa-bench-")
            output_dir = self._tmp.name
        compile_args = dict(torch_compile_backend=opts.compile_backend, torch_compile_mode=opts.compile_mode) if opts.compile else {}
        args = CJEPATrainingArguments(
            **{
                "output_dir": output_dir,
                "use_cpu": device.type == "cpu",
                "report_to": "none",
                "max_steps": total_steps,
                "optim": "adamw_torch_fused" if opts.adamw == "fused" else "adamw_torch",
                "bf16": opts.dtype == "bf16",
                "torch_compile": opts.compile,
                **compile_args,
                "activation_checkpointing": opts.gradient_checkpointing,
                "save_strategy": "no",
                "logging_strategy": "no",
                "disable_tqdm": True,
                "online_probe": False,
                "collapse_monitor": False,
                **arguments,
            }
        )
        self.model = model
        self.trainer = trainer = CJEPATrainer(model=model, args=args)
        # What Trainer.train sets up before its first step (_prepare_for_training, _init_training_state).
        trainer.create_optimizer()
        self.wrapped, trainer.optimizer = trainer.accelerator.prepare(trainer.model, trainer.optimizer)
        trainer.model_wrapped = self.wrapped
        if getattr(trainer, "is_fsdp_enabled", False):  # as Trainer does: under FSDP the model is the wrapped one
            trainer.model = self.wrapped
        trainer.create_scheduler(num_training_steps=total_steps)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(trainer.callback_handler, attr, getattr(trainer, attr))
        trainer.state = TrainerState()
        trainer.state.max_steps = total_steps
        trainer.state.compute_steps(args, total_steps)
        trainer.current_gradient_accumulation_steps = 1
        self.optimizer = trainer.optimizer.optimizer  # torch's, inside Accelerate's wrapper
        self.adamw_implementation = "fused" if self.optimizer.defaults.get("fused") else "foreach"
        self.wrapped.zero_grad()
        self.window_loss = torch.zeros((), device=device)  # Trainer's _tr_loss: no log step in a benchmark
        trainer.control = trainer.callback_handler.on_train_begin(args, trainer.state, trainer.control)
        trainer.control = trainer.callback_handler.on_epoch_begin(args, trainer.state, trainer.control)
        self._stage_runs: dict[str, Callable] | None = None

    # ------------------------------------------------------------------ the step
    def step(self, batch: dict[str, torch.Tensor], clock: _Clock | None = None) -> torch.Tensor:
        """batch: pixel_values (B, C, H, W), context_indices (B, K), target_indices (B, M, T)."""
        trainer, args, state, handler = self.trainer, self.trainer.args, self.trainer.state, self.trainer.callback_handler
        mark = clock.mark if clock is not None else (lambda name: None)
        mark("start")
        trainer.accelerator.gradient_state._set_sync_gradients(True)
        trainer.control = handler.on_step_begin(args, state, trainer.control)
        loss = trainer.training_step(self.wrapped, batch)
        # What the loop does with the loss: the log window's running sum on the device, behind
        # logging_nan_inf_filter's check when it is on (a host sync: `bool` of a device tensor).
        if args.logging_nan_inf_filter and (torch.isnan(loss) or torch.isinf(loss)):
            self.window_loss += self.window_loss / (1 + state.global_step)
        else:
            self.window_loss += loss
        trainer.current_flos += float(trainer.floating_point_ops(batch))
        mark("backward_end")
        self._grad_norm()
        trainer.control = handler.on_pre_optimizer_step(args, state, trainer.control)
        trainer.optimizer.step()
        mark("optimizer_end")
        trainer.control = handler.on_optimizer_step(args, state, trainer.control)
        mark("ema_end")
        if hasattr(trainer, "_get_learning_rate"):
            trainer._get_learning_rate()
        if not trainer.accelerator.optimizer_step_was_skipped:
            trainer.lr_scheduler.step()
        self.wrapped.zero_grad()
        state.global_step += 1
        trainer.control = handler.on_step_end(args, state, trainer.control)
        mark("end")
        return loss.detach()

    __call__ = step

    def _grad_norm(self) -> torch.Tensor | float | None:
        """The gradient norm as Trainer's loop takes it: clipped when max_grad_norm > 0, and in
        transformers 5.x computed at every step even without clipping (for its logs)."""
        trainer, args = self.trainer, self.trainer.args
        if hasattr(trainer, "_get_grad_norm"):  # transformers 5.x: the loop's own calls
            grad_norm = trainer._clip_grad_norm(self.wrapped) if args.max_grad_norm > 0 else None
            return trainer._get_grad_norm(self.wrapped, grad_norm=grad_norm)
        if args.max_grad_norm > 0:
            return trainer.accelerator.clip_grad_norm_(self.wrapped.parameters(), args.max_grad_norm)
        return None

    # ------------------------------------------------------------------ the split
    def _runs(self) -> dict[str, Callable]:
        """How each stage runs in the instrumented step. With compile, the whole-model graph cannot
        be cut, so each stage gets its own compiled copy (parameters shared, compiled once)."""
        if self._stage_runs is None:
            opts = self.options
            self._stage_runs = {
                name: torch.compile(getattr(self.model, name), backend=opts.compile_backend, mode=opts.compile_mode)
                if opts.compile
                else getattr(self.model, name)
                for name in ("target_encoder", "context_encoder", "predictor")
            }
        return self._stage_runs

    def instrumented_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The same step, timed part by part (a sync per mark on the CPU, CUDA events on a GPU).
        Returns (loss, seconds per part in `SPLIT_KEYS` plus "total").

        target_forward: the target encoder. context_forward_backward: the context encoder's forward
        and its share of the backward (with activation checkpointing: the recompute).
        predictor_forward_backward: everything between the context encoder's output and the loss
        (predictor, projector, losses), forward and backward. optimizer: the schedules, the
        non-finite flag, the gradient norm and AdamW's step. ema: the callback's EMA step and buffer restore. other:
        the rest (buffer snapshot, target normalisation, gathers, LR scheduler, zero_grad). With
        compile the stages run as separately compiled graphs (fusion across stage borders is
        lost): the split shows where time goes, the headline figure is `step`."""
        model, clock = self.model, _Clock(self.device)
        runs = self._runs()
        originals = {name: getattr(model, name) for name in runs}
        grad_marks = {"target_encoder": None, "context_encoder": "context_grad_ready", "predictor": None}
        prefixes = {"target_encoder": "target", "context_encoder": "context", "predictor": "predictor"}
        compiled_call = model._compiled_call_impl  # the whole-model graph would bypass the stage timers
        try:
            model._compiled_call_impl = None
            for name, run in runs.items():
                stage = _TimedStage(originals[name], run, prefixes[name], clock, grad_marks[name], self.options.compile)
                setattr(model, name, stage)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            loss = self.step(batch, clock)
        finally:
            model._compiled_call_impl = compiled_call
            for name, module in originals.items():
                setattr(model, name, module)
        t = clock.read()
        split = {
            "target_forward": t["target_forward_end"] - t["target_forward_start"],
            "context_forward_backward": (t["context_forward_end"] - t["context_forward_start"])
            + (t["backward_end"] - t["context_grad_ready"]),
            # from the context tokens to the loss and back to their gradient
            "predictor_forward_backward": t["context_grad_ready"] - t["context_forward_end"],
            "optimizer": t["optimizer_end"] - t["backward_end"],
            "ema": t["ema_end"] - t["optimizer_end"],
        }
        split["total"] = t["end"]
        split["other"] = split["total"] - sum(split[key] for key in SPLIT_KEYS if key != "other")
        return loss, split


def device_batch(pixel_values: torch.Tensor, context_indices: torch.Tensor, target_indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch as `MaskCollator` makes it, on the device of `pixel_values`: pixel_values (B, C, H, W),
    context_indices (B, K), target_indices (B, M, T), and the bookkeeping the trainer reads,
    num_skipped () and data_worker () (0: no bad records, no DataLoader worker)."""
    zero = torch.zeros((), dtype=torch.long, device=pixel_values.device)
    return {
        "pixel_values": pixel_values,
        "context_indices": context_indices,
        "target_indices": target_indices,
        "num_skipped": zero,
        "data_worker": zero.clone(),
    }


def synthetic_masks(
    config: CJEPAConfig, batch_size: int, count: int, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """`count` mask batches [(context (B, K), targets (B, M, T))] from `cjepa_hf.masking.MaskCollator`
    (realistic multi-block masks, sizes changing from batch to batch), and their source."""
    collator = MaskCollator(config, seed=seed)
    masks = [collator.masks_for(i, batch_size) for i in range(count)]
    return [(c.to(device), t.to(device)) for c, t in masks], "cjepa_hf.masking.MaskCollator"


def summarize_times(times: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"median": median, "mean": sum(times) / len(times), "min": ordered[0], "max": ordered[-1], "all": list(times)}


__all__ = [
    "DTYPES",
    "PLAIN_OPTIONS",
    "SPLIT_KEYS",
    "STEP",
    "StepOptions",
    "TrainerStep",
    "device_batch",
    "summarize_times",
    "synthetic_masks",
]
