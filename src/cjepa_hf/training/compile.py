"""torch.compile for changing mask sizes: one in-place compile, the mask tensors' varying dims marked dynamic, and an exact context trim.

The context length K and the block size T change from batch to batch (the multi-block masks of
I-JEPA (Assran et al., CVPR 2023), section 3). `compile_model` compiles in place and
`mark_dynamic_masks`, called on each batch's masks before the forward, makes the first call
compile one graph symbolic in K and T that every later batch reuses: one compile in all.
`CJEPATrainer` does both when `torch_compile` is set (instead of Accelerate's wrapper compile,
whose automatic dynamic shapes recompile on the first changes of K and of T).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def compile_model(
    model: nn.Module, backend: str | Callable = "inductor", mode: str | None = None, dynamic: bool | None = None
) -> nn.Module:
    """Compile `model` in place (`nn.Module.compile`: parameter names and `state_dict` keys do not
    change, so saving, resuming and the EMA work as before) and return it. `dynamic=True` also
    avoids recompiles but makes every dimension symbolic, batch and image size included."""
    model.compile(backend=backend, mode=mode, dynamic=dynamic)
    return model


def mark_dynamic_masks(context_indices: torch.Tensor, target_indices: torch.Tensor) -> None:
    """Tell `torch.compile` that the context length (dim 1 of context_indices (B, K)) and the block
    size (dim 2 of target_indices (B, M, T)) vary between batches.

    `torch._dynamo.maybe_mark_dynamic`: if some code specialises on the size anyway the step
    recompiles rather than failing. Cheap (an attribute on the tensors); call it on every batch,
    before the forward."""
    if context_indices.dim() != 2 or target_indices.dim() != 3:
        raise ValueError(
            "context_indices must be (B, K) and target_indices (B, M, T), got "
            f"{tuple(context_indices.shape)} and {tuple(target_indices.shape)}"
        )
    torch._dynamo.maybe_mark_dynamic(context_indices, 1)
    torch._dynamo.maybe_mark_dynamic(target_indices, 2)


def trim_context(context_indices: torch.Tensor, multiple: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut the context (B, K) to K' = multiple * floor(K / multiple) patches, keeping a uniformly
    random subset of each row (sorted ascending), or return it unchanged when K is already a
    multiple or smaller than `multiple`.

    Exact, not a padding trick: the collator's context is already a uniform random subset of the
    context block (cut to the batch minimum), and a uniform random subset of it is one too, with
    the same positional statistics (dropping the last columns instead would drop the bottom rows,
    the reference collator's defect). It bounds the number of distinct context lengths (for
    static-shape compilation or CUDA graphs) at the price of at most `multiple - 1` context tokens
    per batch."""
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


__all__ = ["compile_model", "mark_dynamic_masks", "trim_context"]
