"""Memory of a training step: bytes held between steps (parameters, buffers, optimizer state) and the peak above them during a step.

On CUDA the peak is exact (the allocator's `max_memory_allocated`); on the CPU (Linux) it is the
peak resident set size (VmHWM, reset through /proc/self/clear_refs) above the resident size at
the start, after freed heap is handed back (`malloc_trim`): approximate (allocator caching).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn


def _rss_bytes(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _bytes(tensor: torch.Tensor) -> int:
    local = getattr(tensor, "_local_tensor", tensor)  # a DTensor (FSDP): this process's shard
    return local.numel() * local.element_size()


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes held between steps by this process: parameters, buffers and optimizer state (the
    local shards of sharded ones)."""
    total = sum(_bytes(t) for t in model.parameters())
    total += sum(_bytes(t) for t in model.buffers())
    if optimizer is not None:
        for state in optimizer.state.values():
            total += sum(_bytes(v) for v in state.values() if torch.is_tensor(v))
    return total


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`), so that the resident size
    at the start of a measurement is what is in use, not what earlier steps freed: otherwise
    a step that reuses those pages shows no RSS growth at all."""
    gc.collect()
    try:
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


__all__ = ["measure_peak_memory", "state_bytes"]
