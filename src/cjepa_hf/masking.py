"""Multi-block masking for C-JEPA / I-JEPA (Assran et al., CVPR 2023, section 3), vectorised and reproducible.

Patch indices are row-major on the square patch grid: ``index = row * grid_size + col``.

Per batch, one target block size ``(h, w)`` (shared by the M target blocks) and one context block
size are drawn; per sample, every block gets its own position. The target patches are removed from
the context block; the context is then cut to the batch minimum length by keeping a *uniform random*
subset of each sample's context patches (sorted ascending).

Differences from the reference collator (facebookresearch/ijepa), all deliberate:

- the top-left corner is drawn from ``[0, grid - h]`` inclusive, so the last row and column are
  reachable, and a block may span the whole grid (a full-grid context is possible);
- scale and aspect ratio are two independent random numbers;
- the cut to equal context length drops random patches, not the highest indices (bottom rows);
- the masks of a batch are a pure function of ``(seed, epoch, batch position, rank)``, independent of
  the number of DataLoader workers, and restorable from ``MaskCollator.state_dict()``;
- the sampler works on the whole batch at once (no per-sample Python loop).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F

from .configuration_cjepa import CJEPAConfig, MaskingSpec, block_size

_MASK64 = (1 << 64) - 1
# How often the positions of a sample that keeps fewer than `min_keep` context patches (or whose
# non-overlapping targets do not fit) are redrawn before giving up.
DEFAULT_MAX_TRIES = 20


# ---------------------------------------------------------------------------------------- seeding
def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mask_seed(seed: int, epoch: int, batch_position: int, rank: int) -> int:
    """A 64-bit generator seed for one batch: a splitmix64 chain over its coordinates.

    Chaining (rather than e.g. ``seed + position``) keeps neighbouring coordinates far apart, so
    (seed=0, position=1) and (seed=1, position=0) do not share masks."""
    h = _splitmix64(int(seed) & _MASK64)
    for value in (epoch, batch_position, rank):
        h = _splitmix64(h ^ (int(value) & _MASK64))
    return h


def _lerp(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ---------------------------------------------------------------------------------------- sampler
def _block_offsets(h: int, w: int, grid_size: int) -> torch.Tensor:
    """Row-major flat offsets of an h x w block from its top-left patch, ascending. (h*w,)"""
    return (torch.arange(h).unsqueeze(1) * grid_size + torch.arange(w)).reshape(-1)


def _overlapping_corners(n: int, m: int, h: int, w: int, grid_size: int, generator: torch.Generator) -> torch.Tensor:
    rows = torch.randint(0, grid_size - h + 1, (n, m), generator=generator)  # inclusive corner bound
    cols = torch.randint(0, grid_size - w + 1, (n, m), generator=generator)
    return rows * grid_size + cols  # (n, M)


def _disjoint_corners(
    n: int, m: int, h: int, w: int, grid_size: int, offsets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each block uniform over the corners whose window avoids the earlier blocks of its sample.

    The loop runs over the M blocks (each step vectorised over the batch) because block k's free
    corners depend on blocks < k. Returns corners (n, M) and ok (n,), False where some block had
    no free corner (those rows are redrawn by the caller)."""
    nr, nc = grid_size - h + 1, grid_size - w + 1
    occupied = torch.zeros(n, grid_size, grid_size, dtype=torch.int32)
    corners = torch.empty(n, m, dtype=torch.long)
    ok = torch.ones(n, dtype=torch.bool)
    for k in range(m):
        # Occupied count inside each h x w window, from an integral image.
        ii = F.pad(occupied.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (n, G+1, G+1)
        win = ii[:, h:, w:] - ii[:, :nr, w:] - ii[:, h:, :nc] + ii[:, :nr, :nc]  # (n, nr, nc)
        free = (win == 0).reshape(n, nr * nc)
        ok &= free.any(1)
        pick = torch.rand(n, nr * nc, generator=generator).masked_fill_(~free, -1.0).argmax(1)  # (n,)
        corners[:, k] = (pick // nc) * grid_size + pick % nc
        occupied.view(n, -1).scatter_(1, corners[:, k : k + 1] + offsets, 1)
    return corners, ok


def _place_disjoint(
    n: int, m: int, h: int, w: int, grid_size: int, offsets: torch.Tensor, generator: torch.Generator, max_tries: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_disjoint_corners` with up to `max_tries` redraws of the rows that jammed (random sequential
    placement jams often near the packing limit: 4 blocks of 7x5 on 14x14 place in ~8% of draws)."""
    corners, placed = _disjoint_corners(n, m, h, w, grid_size, offsets, generator)
    for _ in range(max_tries - 1):
        todo = (~placed).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        corners[todo], placed[todo] = _disjoint_corners(todo.numel(), m, h, w, grid_size, offsets, generator)
    return corners, placed


def sample_masks(
    batch_size: int, generator: torch.Generator, spec: MaskingSpec, *, max_tries: int = DEFAULT_MAX_TRIES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample I-JEPA multi-block masks for a batch; every random number comes from `generator`.

    Returns:
        context_indices: LongTensor (B, Kc), each row sorted ascending, no index inside any target
            block of the same sample; Kc = the smallest context of the batch (>= min_keep).
        target_indices: LongTensor (B, M, Kt), Kt = h * w, each block row-major (ascending).

    `spec` was validated when it was built (`CJEPAConfig.masking_spec()`); this raises
    `RuntimeError` if some sample still keeps fewer than `min_keep` context patches (or cannot
    place non-overlapping targets) after `max_tries` draws of its positions.
    """
    if not isinstance(spec, MaskingSpec):
        raise TypeError(f"spec must be a MaskingSpec (CJEPAConfig.masking_spec()), got {type(spec).__name__}")
    grid_size, num_target_blocks, min_keep = spec.grid_size, spec.num_target_blocks, spec.min_keep
    target_scale, target_aspect_ratio = spec.target_scale, spec.target_aspect_ratio
    context_scale, context_aspect_ratio = spec.context_scale, spec.context_aspect_ratio
    allow_target_overlap = spec.allow_target_overlap
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("max_tries", max_tries, minimum=1)
    g, m, b = grid_size, num_target_blocks, batch_size
    n = g * g

    # Sizes once per batch; scale and aspect ratio from independent draws.
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    th, tw = block_size(_lerp(target_scale, u[0]), _lerp(target_aspect_ratio, u[1]), g)
    ch, cw = block_size(_lerp(context_scale, u[2]), _lerp(context_aspect_ratio, u[3]), g)
    t_off = _block_offsets(th, tw, g)  # (Kt,)
    c_off = _block_offsets(ch, cw, g)  # (ch*cw,)

    targets = torch.empty(b, m, th * tw, dtype=torch.long)
    context = torch.empty(b, n, dtype=torch.bool)
    todo = torch.arange(b)  # rows still to (re)draw
    for _ in range(max_tries):
        k = todo.numel()
        if allow_target_overlap:
            t_corner = _overlapping_corners(k, m, th, tw, g, generator)
            placed = None
        else:
            t_corner, placed = _place_disjoint(k, m, th, tw, g, t_off, generator, max_tries)
        tgt = t_corner.unsqueeze(-1) + t_off  # (k, M, Kt)
        c_corner = torch.randint(0, g - ch + 1, (k, 1), generator=generator) * g + torch.randint(
            0, g - cw + 1, (k, 1), generator=generator
        )  # (k, 1)
        ctx = torch.zeros(k, n, dtype=torch.bool)
        ctx.scatter_(1, c_corner + c_off, True)
        ctx.scatter_(1, tgt.view(k, -1), False)  # targets leave the context
        short = ctx.sum(1) < min_keep
        ok = ~short if placed is None else ~short & placed
        if k == b:
            targets, context = tgt, ctx
        else:
            targets[todo], context[todo] = tgt, ctx
        todo = todo[~ok]
        if todo.numel() == 0:
            break
    else:
        n_short = int(short[~ok].sum())
        reason = f"{n_short} kept fewer than min_keep={min_keep} context patches"
        if placed is not None:
            reason += f", {int((~placed).sum())} could not place {m} non-overlapping targets"
        raise RuntimeError(
            f"mask sampling failed for {todo.numel()} of {b} samples after max_tries={max_tries} draws "
            f"({reason}; drawn target block {th}x{tw}, context block {ch}x{cw}; grid_size={g}, "
            f"num_target_blocks={m}, target_scale={target_scale}, target_aspect_ratio={target_aspect_ratio}, "
            f"context_scale={context_scale}, context_aspect_ratio={context_aspect_ratio}, "
            f"allow_target_overlap={allow_target_overlap}); lower min_keep or the target scale, or raise "
            "the context scale"
        )

    # Equal length without positional bias: random scores on the context patches (-1 elsewhere),
    # the top Kc of each row are a uniform random subset; then back to ascending order.
    kc = int(context.sum(1).min())
    scores = torch.rand(b, n, generator=generator).masked_fill_(~context, -1.0)
    keep = scores.topk(kc, dim=1, sorted=False).indices.sort(dim=1).values  # (B, Kc)
    return keep, targets


# ---------------------------------------------------------------------------------------- collator
class MaskCollator:
    """DataLoader `collate_fn`: stacks images and attaches multi-block masks.

    Every masking setting comes from the config (`CJEPAConfig`: num_target_blocks, target_scale,
    target_aspect_ratio, context_scale, context_aspect_ratio, min_keep, allow_target_overlap; grid
    from image_size // patch_size).

    Reproducibility: the masks of a batch depend only on (seed, epoch, batch position, rank), through
    a fresh `torch.Generator` per batch (the global RNG is never used). In the main process
    (num_workers=0) the batch position is a counter; in DataLoader worker w of W, its k-th batch is
    global position ``start + k * W + w``, which is the position the DataLoader's round-robin gives
    it (``start`` is the counter when the workers were created, i.e. after `set_epoch` or
    `load_state_dict`). So masks do not depend on num_workers.

    Caveats: with num_workers > 0 the main-process counter does not move (workers collate copies),
    so a trainer resuming mid-epoch should restore ``counter`` to the number of batches it consumed
    (``set_epoch(epoch, start_position=n)`` or `load_state_dict`). ``persistent_workers=True`` keeps
    the workers' copies across epochs, so `set_epoch` cannot reach them: use the default
    ``persistent_workers=False``. Iterable datasets that end unevenly across workers break the
    round-robin assumption.
    """

    def __init__(self, config: CJEPAConfig, seed: int = 0, rank: int = 0) -> None:
        _check_int("seed", seed, minimum=-(1 << 63))
        _check_int("rank", rank, minimum=0)
        self.image_size = int(config.image_size)
        self.spec = config.masking_spec()  # validated there, once
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0
        self._counter = 0  # next position in the main process; start position for workers
        self._worker_calls = 0  # batches collated by this copy inside a worker

    # ------------------------------------------------------------------ masks
    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample_masks` with this collator's settings: ((B, Kc), (B, M, Kt)) long tensors."""
        return sample_masks(batch_size, generator, self.spec)

    def masks_for(self, batch_position: int, batch_size: int, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks the batch at `batch_position` of `epoch` (default: the current epoch) gets.
        Pure: does not touch the counter."""
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(mask_seed(self.seed, epoch, batch_position, self.rank))
        return self.sample(batch_size, generator)

    def _next_position(self) -> int:
        info = torch.utils.data.get_worker_info()
        if info is None:
            position = self._counter
            self._counter += 1
        else:
            position = self._counter + self._worker_calls * info.num_workers + info.id
            self._worker_calls += 1
        return position

    # ------------------------------------------------------------------ state
    def set_epoch(self, epoch: int, start_position: int = 0) -> None:
        """Start `epoch`; the next batch is at `start_position` (0 unless resuming mid-epoch)."""
        _check_int("epoch", epoch, minimum=0)
        _check_int("start_position", start_position, minimum=0)
        self.epoch = epoch
        self._counter = start_position
        self._worker_calls = 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "rank": self.rank, "counter": self._counter}

    def load_state_dict(self, state: dict[str, int]) -> None:
        missing = {"seed", "epoch", "rank", "counter"} - set(state)
        if missing:
            raise KeyError(f"MaskCollator state is missing {sorted(missing)}, got keys {sorted(state)}")
        self.seed, self.rank = int(state["seed"]), int(state["rank"])
        self.set_epoch(int(state["epoch"]), start_position=int(state["counter"]))

    # ------------------------------------------------------------------ collate
    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate examples {"pixel_values": (C, H, W) float (normalised) or uint8 (normalised
        later on the device by the model), optional "label"/"labels": int,
        optional "num_skipped": int} into
        {"pixel_values": (B, C, H, W), "context_indices": (B, Kc) long, "target_indices": (B, M, Kt)
        long, "labels": (B,) long if the examples have labels, "num_skipped": () long, "data_worker": ()
        long}. "data_worker" is the DataLoader worker that collated the batch (0 without workers):
        `CJEPATrainer` counts each worker's records with it, to resume a stream exactly."""
        if not examples:
            raise ValueError("MaskCollator needs at least one example, got an empty list")
        pixel_values = torch.stack([torch.as_tensor(ex["pixel_values"]) for ex in examples])  # (B, C, H, W)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"pixel_values must be (C, {self.image_size}, {self.image_size}) per example to match "
                f"image_size={self.image_size}, got {tuple(pixel_values.shape[1:])}"
            )
        if not (pixel_values.is_floating_point() or pixel_values.dtype == torch.uint8):
            raise ValueError(f"pixel_values must be floating-point (normalised images) or uint8 (0..255 pixels), got {pixel_values.dtype}")

        batch_size = pixel_values.shape[0]
        context_indices, target_indices = self.masks_for(self._next_position(), batch_size)
        batch = {
            "pixel_values": pixel_values,
            "context_indices": context_indices,
            "target_indices": target_indices,
        }
        label_keys = [("labels" if "labels" in ex else "label" if "label" in ex else None) for ex in examples]
        if any(key is not None for key in label_keys):
            if any(key is None for key in label_keys):
                raise ValueError("either every example or none must have a 'label'/'labels' entry")
            batch["labels"] = torch.tensor([int(ex[key]) for ex, key in zip(examples, label_keys)], dtype=torch.long)
        batch["num_skipped"] = torch.tensor(sum(int(ex.get("num_skipped", 0)) for ex in examples), dtype=torch.long)
        info = torch.utils.data.get_worker_info()
        batch["data_worker"] = torch.tensor(info.id if info is not None else 0, dtype=torch.long)
        return batch


__all__ = ["MaskCollator", "MaskingSpec", "sample_masks", "block_size", "mask_seed", "DEFAULT_MAX_TRIES"]
