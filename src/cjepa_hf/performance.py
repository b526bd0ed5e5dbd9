"""Fast paths for the C-JEPA pretraining step, and the tools that measure them.

Every fast path is a switch with a plain counterpart, and the tests check that both
give the same numbers:

- attention: ``"sdpa"`` (or flash / flex kernels) instead of ``"eager"``
  (`CJEPAForPreTraining.set_attn_implementation`);
- bf16 autocast on CUDA with fp32 master weights (`autocast_context`); refused on
  the CPU, where bf16 autocast is about 12x slower than fp32;
- `torch.compile` that does not recompile when the mask sizes change from batch to
  batch (`compile_model` + `mark_dynamic_masks`, optionally `trim_context`);
- fused AdamW (`build_adamw`) and the fused EMA (`model.update_target_encoder`,
  one `torch._foreach_lerp_`) instead of per-parameter loops (`ema_update_loop`);
- gradient checkpointing, a memory switch (it costs speed).

`PretrainingStep` runs one full optimisation step with a chosen set of switches and
can time it split into its parts; `scripts/benchmark.py` is the CLI over it.

No host-device synchronisation happens inside a step: the loss is returned as a
tensor (never `.item()`), the EMA momentum and learning rate are Python floats, the
masks are gathered with `gather` / integer indexing (no boolean masking, no
`nonzero`), and the timers use CUDA events that are read once after the last step.
Pass masks already on the device (or pinned and copied with ``non_blocking=True``):
a pageable host->device copy blocks the host.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .configuration_cjepa import CJEPAConfig

DTYPES = ("fp32", "bf16")
EMA_IMPLEMENTATIONS = ("foreach", "loop")
ADAMW_IMPLEMENTATIONS = ("fused", "foreach", "loop")

# Dense (no sparsity) bf16 tensor-core peaks from the vendor data sheets, FLOP/s.
# Matched in order against `torch.cuda.get_device_name()`: specific names first.
PEAK_BF16_DENSE_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H200", 989.4e12),
    ("H100", 989.4e12),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("A100", 312.0e12),
)

FLOP_FORMULA = (
    "Matmul FLOPs of one step, 2 FLOPs per multiply-add; B batch, N patches, K context tokens, "
    "M target blocks, T patches per block, S = K + T; encoder width D, depth L, MLP width I, "
    "patch embedding C*p*p*D; predictor width P, depth Lp, MLP width Ip. "
    "Per encoder layer and token: 2*(4*D^2 + 2*D*I) (qkv, proj, fc1, fc2); attention per layer "
    "and sequence of n tokens: 4*n^2*D (QK^T and AV). "
    "target = B*[2*N*CppD + L*(2*N*(4D^2+2DI) + 4*N^2*D)] (forward only, no grad); "
    "context = 3 * B*L*(2*K*(4D^2+2DI) + 4*K^2*D) + 2 * B*2*N*CppD "
    "(forward + backward = 3x forward; the patch embedding runs on all N patches before the "
    "context is gathered, and its backward has no input gradient: 2x); "
    "predictor = 3 * [B*2*K*D*P + B*M*(Lp*(2*S*(4P^2+2P*Ip) + 4*S^2*P) + 2*T*P*D)] "
    "(one sequence of K+T tokens per target block); "
    "projector = 3 * 2*R*sum(d_i*d_(i+1)) over the projector's Linear layers, R = B*M rows "
    "(B*(M+1) for vicreg_source='context'); "
    "vicreg = 3 * 2*B*V*d^2 for the per-view covariance matrices (V views of width d). "
    "Total = target + context + predictor + projector + vicreg. Elementwise work (norms, GELU, "
    "softmax, loss, AdamW, EMA) is not counted. MFU = total / step time / device bf16 dense peak."
)


# ============================================================================ EMA and optimizer


@torch.no_grad()
def ema_update_loop(model: nn.Module, momentum: float) -> None:
    """The plain EMA: one `mul_` and one `add_` kernel per parameter.

    target = momentum * target + (1 - momentum) * context. The fused path is
    `CJEPAForPreTraining.update_target_encoder` (one `_foreach_lerp_`)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
    for target, context in zip(model.target_encoder.parameters(), model.context_encoder.parameters()):
        target.mul_(momentum).add_(context, alpha=1.0 - momentum)


def ema_update(model: nn.Module, momentum: float, implementation: str = "foreach") -> None:
    """EMA of the target encoder with the chosen implementation ("foreach" or "loop")."""
    if implementation == "foreach":
        model.update_target_encoder(momentum)
    elif implementation == "loop":
        ema_update_loop(model, momentum)
    else:
        raise ValueError(f"implementation must be one of {EMA_IMPLEMENTATIONS}, got {implementation!r}")


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weight decay on matrices, none on biases,
    norms and other 1-D parameters (the paper's recipe)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(
    params: Any, implementation: str = "fused", lr: float = 1e-3, weight_decay: float = 0.04, **kwargs: Any
) -> tuple[torch.optim.AdamW, str]:
    """`torch.optim.AdamW` with the chosen kernel; returns (optimizer, implementation used).

    "fused": one fused kernel for all parameters (CUDA and, from torch 2.4, CPU); falls
    back to "foreach" where the device or dtype is not supported. "foreach": multi-tensor
    kernels. "loop": the plain per-parameter loop (`foreach=False`)."""
    if implementation not in ADAMW_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {ADAMW_IMPLEMENTATIONS}, got {implementation!r}")
    params = list(params)
    if implementation == "fused":
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs), "fused"
        except (RuntimeError, ValueError):  # device or dtype without a fused kernel
            implementation = "foreach"
    foreach = implementation == "foreach"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=foreach, **kwargs), implementation


# ============================================================================ mixed precision


def autocast_context(device: torch.device | str, dtype: str = "fp32") -> contextlib.AbstractContextManager:
    """The forward's precision context. "fp32": nothing. "bf16": `torch.autocast("cuda",
    torch.bfloat16)`; the parameters, their gradients and the optimizer state stay fp32
    (master weights), only the matmuls run in bf16. Refused on the CPU."""
    device = torch.device(device)
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype != "bf16":
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if device.type != "cuda":
        raise ValueError(
            f"dtype='bf16' means CUDA autocast and is refused on device {device.type!r}: bf16 autocast on the "
            "CPU is about 12x slower than fp32 here; use dtype='fp32' on the CPU"
        )
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


# ============================================================================ torch.compile


def compile_model(
    model: nn.Module,
    backend: str | Callable = "inductor",
    mode: str | None = None,
    fullgraph: bool = False,
    dynamic: bool | None = None,
) -> nn.Module:
    """Compile `model` in place (`nn.Module.compile`: parameter names and `state_dict`
    keys do not change, so saving and the EMA work as before) and return it.

    The context length K and the block size T change from batch to batch. Call
    `mark_dynamic_masks` on each batch's mask tensors before the forward: the first
    call then compiles one graph that is symbolic in K and T, and later batches reuse
    it (one compile in all). Without marking, dynamo's automatic dynamic shapes
    recompile twice (static, then K dynamic, then T dynamic) and then stay put.
    `dynamic=True` also works but makes every dimension symbolic, batch and image
    size included."""
    model.compile(backend=backend, mode=mode, fullgraph=fullgraph, dynamic=dynamic)
    return model


def mark_dynamic_masks(context_indices: torch.Tensor, target_indices: torch.Tensor) -> None:
    """Tell `torch.compile` that the context length (dim 1 of context_indices (B, K))
    and the block size (dim 2 of target_indices (B, M, T)) vary between batches.

    Uses `torch._dynamo.maybe_mark_dynamic`: if some code specialises on the size anyway
    the step recompiles rather than failing. Cheap (sets an attribute on the tensors);
    call it on every batch, before the forward."""
    if context_indices.dim() != 2 or target_indices.dim() != 3:
        raise ValueError(
            "context_indices must be (B, K) and target_indices (B, M, T), got "
            f"{tuple(context_indices.shape)} and {tuple(target_indices.shape)}"
        )
    torch._dynamo.maybe_mark_dynamic(context_indices, 1)
    torch._dynamo.maybe_mark_dynamic(target_indices, 2)


def trim_context(
    context_indices: torch.Tensor, multiple: int = 8, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cut the context (B, K) to K' = multiple * floor(K / multiple) patches, keeping a
    uniformly random subset of each row (sorted ascending), or return it unchanged when
    K is already a multiple or smaller than `multiple`.

    Exact, not a padding trick: the collator's context is already a uniform random
    subset of the context block (cut to the batch minimum), and a uniform random subset
    of it is one too, with the same positional statistics (dropping the last columns
    instead would drop the bottom rows, the reference collator's defect). It bounds the
    number of distinct context lengths (for static-shape compilation or CUDA graphs) at
    the price of at most `multiple - 1` context tokens per batch."""
    if context_indices.dim() != 2:
        raise ValueError(f"context_indices must have shape (batch, kept), got {tuple(context_indices.shape)}")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}")
    batch, kept = context_indices.shape
    target_len = (kept // multiple) * multiple
    if target_len == kept or target_len == 0:
        return context_indices
    scores = torch.rand(batch, kept, generator=generator, device="cpu").to(context_indices.device)
    columns = scores.topk(target_len, dim=1, sorted=False).indices  # (B, K') random columns per row
    return context_indices.gather(1, columns).sort(dim=1).values


# ============================================================================ FLOPs


def pretraining_step_flops(
    config: CJEPAConfig, batch_size: int, num_context: int, num_blocks: int, per_block: int, num_patches: int | None = None
) -> dict[str, float]:
    """Matmul FLOPs of one pretraining step (forward + backward), split by part.

    See `FLOP_FORMULA` for the formula; returns the keys "target", "context",
    "predictor", "projector", "vicreg" and "total"."""
    c = config
    b, k, m, t = batch_size, num_context, num_blocks, per_block
    n = num_patches if num_patches is not None else c.num_patches
    d, layers, inter = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    p, p_layers, p_inter = c.predictor_hidden_size, c.predictor_num_hidden_layers, c.predictor_intermediate_size
    patch = c.num_channels * c.patch_size**2 * d
    enc_layer = 4 * d * d + 2 * d * inter

    def encoder_layers(tokens: int) -> float:  # per sequence, forward
        return layers * (2 * tokens * enc_layer + 4 * tokens**2 * d)

    target = b * (2 * n * patch + encoder_layers(n))
    context = 3 * b * encoder_layers(k) + 2 * b * 2 * n * patch
    s = k + t
    pred_layer = 4 * p * p + 2 * p * p_inter
    predictor = 3 * (b * 2 * k * d * p + b * m * (p_layers * (2 * s * pred_layer + 4 * s * s * p) + 2 * t * p * d))
    projector = vicreg = 0.0
    if c.vicreg_weight > 0:
        views = m if c.vicreg_source == "predictor" else m + 1
        dims = [d, *c.projector_dims]
        projector = 3 * 2 * b * views * sum(a * z for a, z in zip(dims[:-1], dims[1:]))
        vicreg = 3 * 2 * b * views * dims[-1] ** 2
    parts = dict(target=target, context=context, predictor=predictor, projector=projector, vicreg=vicreg)
    parts = {key: float(value) for key, value in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def peak_flops_for_name(name: str) -> float | None:
    """bf16 dense peak FLOP/s of a GPU named like `torch.cuda.get_device_name()`, or None."""
    for key, peak in PEAK_BF16_DENSE_FLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def device_peak_flops(device: torch.device | str) -> tuple[str, float | None]:
    """(device name, bf16 dense peak FLOP/s or None when unknown, e.g. on the CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        import platform

        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    return name, peak_flops_for_name(name)


# ============================================================================ the step


@dataclass
class StepOptions:
    """The switches of one pretraining step. `PLAIN_OPTIONS` is the reference path."""

    attn_implementation: str = "sdpa"
    dtype: str = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    gradient_checkpointing: bool = False
    ema: str = "foreach"
    adamw: str = "fused"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.ema not in EMA_IMPLEMENTATIONS:
            raise ValueError(f"ema must be one of {EMA_IMPLEMENTATIONS}, got {self.ema!r}")
        if self.adamw not in ADAMW_IMPLEMENTATIONS:
            raise ValueError(f"adamw must be one of {ADAMW_IMPLEMENTATIONS}, got {self.adamw!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Eager attention, fp32, no compile, per-parameter EMA loop, AdamW(foreach=False).
PLAIN_OPTIONS = StepOptions(attn_implementation="eager", ema="loop", adamw="loop")


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
        if self.cuda:
            torch.cuda.synchronize()
            start = self.marks["start"]
            return {name: start.elapsed_time(event) / 1e3 for name, event in self.marks.items()}
        start = self.marks["start"]
        return {name: value - start for name, value in self.marks.items()}


class _TimedStage(nn.Module):
    """Wraps a stage module for an instrumented step: marks the start and end of its
    forward and, through a tensor hook on its output, when the gradient of that output
    is ready (the end of the backward of everything downstream)."""

    def __init__(
        self, module: nn.Module, run: Callable, name: str, clock: _Clock, grad_mark: str | None, mark_dynamic: bool
    ) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "_run", run)  # not a submodule: may be a compiled wrapper of `module`
        self._name = name
        self._clock = clock
        self._grad_mark = grad_mark
        self._mark_dynamic = mark_dynamic

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

            def hook(grad: torch.Tensor) -> None:
                self._clock.mark(grad_mark)

            tensor.register_hook(hook)
        return out


SPLIT_KEYS = ("target_forward", "context_forward_backward", "predictor_forward_backward", "optimizer", "ema", "other")


class PretrainingStep:
    """One full C-JEPA optimisation step on `model` (a `CJEPAForPreTraining`) with the
    switches of `options`: forward (target encoder under no_grad, context encoder,
    predictor, loss), backward, AdamW step, zero_grad, EMA update.

    Configures the model in place (attention kernel, gradient checkpointing, compile).
    `step(...)` returns the loss as a detached tensor without synchronising;
    `instrumented_step(...)` runs the same step and returns the time of each part."""

    def __init__(
        self,
        model: nn.Module,
        options: StepOptions | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.04,
        momentum: float = 0.996,
    ) -> None:
        self.model = model
        self.options = options if options is not None else StepOptions()
        self.momentum = momentum
        self.device = next(model.parameters()).device
        opts = self.options
        self._autocast = lambda: autocast_context(self.device, opts.dtype)
        self._autocast()  # fail early (bf16 on the CPU)
        model.set_attn_implementation(opts.attn_implementation)
        if opts.gradient_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:  # transformers < 5
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        self.optimizer, self.adamw_implementation = build_adamw(
            adamw_param_groups(model, weight_decay), opts.adamw, lr=lr, weight_decay=weight_decay
        )
        self._stage_runs: dict[str, Callable] | None = None
        if opts.compile:
            compile_model(model, backend=opts.compile_backend, mode=opts.compile_mode)

    # ------------------------------------------------------------------ the step
    def _forward(self, forward: Callable, pixel_values, context_indices, target_indices) -> torch.Tensor:
        if self.options.compile:
            mark_dynamic_masks(context_indices, target_indices)
        with self._autocast():
            return forward(pixel_values, context_indices, target_indices).loss

    def _update(self, clock: _Clock | None = None) -> None:
        if clock:
            clock.mark("optimizer_start")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if clock:
            clock.mark("optimizer_end")
        ema_update(self.model, self.momentum, self.options.ema)
        if clock:
            clock.mark("ema_end")

    def step(self, pixel_values: torch.Tensor, context_indices: torch.Tensor, target_indices: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, C, H, W), context_indices (B, K), target_indices (B, M, T), on the
        model's device. Returns the loss (a detached 0-d tensor; reading it syncs)."""
        loss = self._forward(self.model, pixel_values, context_indices, target_indices)
        loss.backward()
        self._update()
        return loss.detach()

    __call__ = step

    # ------------------------------------------------------------------ the split
    def _runs(self) -> dict[str, Callable]:
        """How each stage runs in the instrumented step. With compile, the whole-model
        graph cannot be cut, so each stage gets its own compiled copy (parameters shared,
        compiled once, on the first instrumented step)."""
        if self._stage_runs is None:
            model = self.model
            runs = {}
            for name in ("target_encoder", "context_encoder", "predictor"):
                module = getattr(model, name)
                if self.options.compile:
                    runs[name] = torch.compile(module, backend=self.options.compile_backend, mode=self.options.compile_mode)
                else:
                    runs[name] = module
            self._stage_runs = runs
        return self._stage_runs

    def instrumented_step(
        self, pixel_values: torch.Tensor, context_indices: torch.Tensor, target_indices: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The same step, timed part by part (a sync per mark on the CPU, CUDA events on a
        GPU). Returns (loss, seconds per part in `SPLIT_KEYS` plus "total").

        target_forward: the target encoder. context_forward_backward: the context encoder's
        forward and its share of the backward (with gradient checkpointing: the recompute).
        predictor_forward_backward: everything between the context encoder's output and the
        loss (predictor, projector, losses), forward and backward. optimizer: AdamW step and
        zero_grad. ema: the target update. other: the rest (target normalisation, gathers).
        With compile the stages run as separately compiled graphs, so fusion across stage
        borders is lost: the split shows where time goes, the headline figure is `step`."""
        model = self.model
        clock = _Clock(self.device)
        runs = self._runs()
        originals = {name: getattr(model, name) for name in runs}
        grad_marks = {"target_encoder": None, "context_encoder": "context_grad_ready", "predictor": None}
        prefixes = {"target_encoder": "target", "context_encoder": "context", "predictor": "predictor"}
        try:
            for name, run in runs.items():
                stage = _TimedStage(originals[name], run, prefixes[name], clock, grad_marks[name], self.options.compile)
                setattr(model, name, stage)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            clock.mark("start")
            with self._autocast():
                # model.forward, not model(...): with compile, model(...) would run the
                # whole-model graph and bypass the stage timers.
                loss = model.forward(pixel_values, context_indices, target_indices).loss
            clock.mark("forward_end")
            loss.backward()
            clock.mark("backward_end")
        finally:
            for name, module in originals.items():
                setattr(model, name, module)
        self._update(clock)
        t = clock.read()
        split = {
            "target_forward": t["target_forward_end"] - t["target_forward_start"],
            "context_forward_backward": (t["context_forward_end"] - t["context_forward_start"])
            + (t["backward_end"] - t["context_grad_ready"]),
            # from the context tokens to the loss and back to their gradient
            "predictor_forward_backward": t["context_grad_ready"] - t["context_forward_end"],
            "optimizer": t["optimizer_end"] - t["optimizer_start"],
            "ema": t["ema_end"] - t["optimizer_end"],
        }
        split["total"] = t["ema_end"]
        split["other"] = split["total"] - sum(split[key] for key in SPLIT_KEYS if key != "other")
        return loss.detach(), split


# ============================================================================ memory


def _rss_bytes(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes held between steps: parameters, buffers and optimizer state."""
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    if optimizer is not None:
        for state in optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`), so that the resident size
    at the start of a measurement is what is in use, not what earlier steps freed: otherwise
    a step that reuses those pages shows no RSS growth at all."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def measure_peak_memory(device: torch.device | str) -> Iterator[dict[str, Any]]:
    """Peak memory of the code in the block above what was held when it started.

    Yields a dict that gets "transient_bytes" and "method" when the block ends. CUDA:
    `max_memory_allocated` (exact, allocator level). CPU (Linux): the peak resident set
    size (VmHWM, reset through /proc/self/clear_refs) minus the resident size at the start,
    after `malloc_trim`; approximate (allocator caching and fragmentation), None when /proc is
    not available."""
    device = torch.device(device)
    result: dict[str, Any] = {"transient_bytes": None, "method": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["transient_bytes"] = torch.cuda.max_memory_allocated(device) - before
        result["method"] = "cuda max_memory_allocated"
        return
    _release_free_heap()
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        reset = True
    except OSError:
        pass
    before = _rss_bytes("VmRSS")
    yield result
    peak = _rss_bytes("VmHWM")
    if reset and before is not None and peak is not None:
        result["transient_bytes"] = max(peak - before, 0)
        result["method"] = "cpu peak RSS (VmHWM) above the RSS at the start"


# ============================================================================ masks for benchmarks


def synthetic_masks(
    config: CJEPAConfig, batch_size: int, count: int, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """`count` mask batches [(context (B, K), targets (B, M, T))] and where they came from.

    Uses `cjepa_hf.masking.MaskCollator` (realistic multi-block masks, sizes changing from
    batch to batch) when it is importable; else random index masks of I-JEPA's typical
    sizes: M blocks of about 17.5% of the patches each (33 of 196 at 224/16), a context of
    92.5% of the patches minus the targets (about 50 of 196), both varying a little."""
    try:
        from .masking import MaskCollator

        collator = MaskCollator(config, seed=seed)
        masks = [collator.masks_for(i, batch_size) for i in range(count)]
        source = "cjepa_hf.masking.MaskCollator"
    except ImportError:
        n, m = config.num_patches, config.num_target_blocks
        g = torch.Generator().manual_seed(seed)
        masks = []
        for _ in range(count):
            per_block = max(1, round(n * (0.165 + 0.02 * torch.rand(1, generator=g).item())))
            kept = max(config.min_keep, min(n, round(n * 0.925)) - m * per_block + int(torch.randint(-4, 5, (1,), generator=g)))
            kept = min(max(kept, 1), n)
            context = torch.rand(batch_size, n, generator=g).topk(kept, dim=1).indices.sort(dim=1).values
            targets = torch.rand(batch_size * m, n, generator=g).topk(per_block, dim=1).indices.sort(dim=1).values
            masks.append((context, targets.view(batch_size, m, per_block)))
        source = "random index masks (cjepa_hf.masking not importable)"
    return [(c.to(device), t.to(device)) for c, t in masks], source


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy (same weights) for a second setup in the same process."""
    return copy.deepcopy(model)


def summarize_times(times: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"median": median, "mean": sum(times) / len(times), "min": ordered[0], "max": ordered[-1], "all": list(times)}


__all__ = [
    "ADAMW_IMPLEMENTATIONS",
    "DTYPES",
    "EMA_IMPLEMENTATIONS",
    "FLOP_FORMULA",
    "PEAK_BF16_DENSE_FLOPS",
    "PLAIN_OPTIONS",
    "SPLIT_KEYS",
    "PretrainingStep",
    "StepOptions",
    "adamw_param_groups",
    "autocast_context",
    "build_adamw",
    "compile_model",
    "copy_model",
    "device_peak_flops",
    "ema_update",
    "ema_update_loop",
    "mark_dynamic_masks",
    "measure_peak_memory",
    "peak_flops_for_name",
    "pretraining_step_flops",
    "state_bytes",
    "summarize_times",
    "synthetic_masks",
    "trim_context",
]
