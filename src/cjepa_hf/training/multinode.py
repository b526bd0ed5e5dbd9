"""What a run across several machines needs from their disks: one view of the checkpoints, every process's RNG state in each copy, one checkpoint to resume from.

Ranks are the global ones (`args.process_index`, `torch.distributed`); the node's rank is never
used: with torchrun's c10d rendezvous the nodes get their ranks in the order they arrive, and
the same node can hold other ranks after a restart.

Two layouts are supported:
- output_dir on a filesystem every node shares (NFS, Lustre, ...): global rank 0 writes each
  checkpoint, every process writes its own `rng_state_{rank}.pth` into it;
- one output_dir per node, not shared, with `save_on_each_node=True`: the first process of
  every node writes a complete copy (`save_weights_on_this_node` adds the weights that
  transformers writes on rank 0 only), and `share_rng_states` puts every process's RNG state
  into each copy, so that a node can resume whatever ranks it gets next time.

`check_storage` refuses the two mixes that lose checkpoints at the start of a run:
unshared disks without `save_on_each_node` (the other nodes could not resume), and
`save_on_each_node` on a shared output_dir (two writers of the same files).
"""

from __future__ import annotations

import os
import secrets

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from .checkpoints import CorruptCheckpointError, latest_valid_checkpoint, validate_checkpoint

_MARKER = ".cjepa-storage-{token}-rank{rank}"


def _all_gather(obj, world_size: int) -> list:
    everyone = [None] * world_size
    dist.all_gather_object(everyone, obj)
    return everyone


def storage_problem(output_dir: str, writers: list[int], seen: list[list[int]], needs_checkpoints: bool) -> str | None:
    """What is wrong with where the processes save, or None. `writers`: the ranks that write
    checkpoints (`should_save`); `seen[rank]`: the writers whose marker file that rank finds
    in its output_dir. Every process must see exactly one writer: its node's copy (or the
    shared one). `needs_checkpoints`: the run saves checkpoints or resumes from one (a process
    that sees no writer matters only then)."""
    for rank, found in enumerate(seen):
        if len(found) > 1:
            return (
                f"ranks {found} all write checkpoints into the same output_dir {output_dir!r} (rank {rank} sees the files of "
                "each): save_on_each_node is for nodes that do NOT share a filesystem; drop --save_on_each_node, or give "
                "each node an output_dir of its own"
            )
    blind = [rank for rank, found in enumerate(seen) if not found]
    if needs_checkpoints and blind:
        return (
            f"rank(s) {blind} cannot see the files that rank(s) {writers} write into output_dir {output_dir!r}: the nodes "
            "do not share it, so those ranks would find no checkpoint to resume from; pass --save_on_each_node true "
            "(the first process of every node then keeps a complete copy of each checkpoint on its own disk), or put "
            "output_dir on a filesystem that every node shares"
        )
    return None


def check_storage(args: TrainingArguments, needs_checkpoints: bool, sharded: bool = False) -> None:
    """With several processes: every writer (`args.should_save`) leaves a marker in
    output_dir, every process looks for them, and all raise the same ValueError when
    `storage_problem` finds one (a process failing alone would leave the others waiting in
    their next collective). The marker names carry a fresh token: no stale file and no cached
    lookup of an earlier run can answer for this one. `sharded` (FSDP): each process writes
    only its shards, so a node's copy could never be complete: save_on_each_node is refused."""
    world = args.world_size
    if world <= 1:
        return
    if sharded and args.save_on_each_node:
        raise ValueError(
            "save_on_each_node with a sharded model (FSDP) is not supported: each process writes its own shards, so no "
            "node would hold a complete checkpoint; put output_dir on a filesystem every node shares and drop "
            "--save_on_each_node"
        )
    rank = args.process_index
    token = [secrets.token_hex(8) if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    writers = [r for r, saves in enumerate(_all_gather(bool(args.should_save), world)) if saves]
    marker = os.path.join(args.output_dir, _MARKER.format(token=token[0], rank=rank))
    if args.should_save:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(marker, "w") as f:
            f.write(f"rank {rank}\n")
    dist.barrier()
    mine = [w for w in writers if os.path.exists(os.path.join(args.output_dir, _MARKER.format(token=token[0], rank=w)))]
    seen = _all_gather(mine, world)
    dist.barrier()  # everybody has looked before the markers go
    if args.should_save:
        os.remove(marker)
    problem = storage_problem(args.output_dir, writers, seen, needs_checkpoints)
    if problem is not None:
        raise ValueError(problem)


def share_rng_states(folder: str, args: TrainingArguments) -> None:
    """With `save_on_each_node` (one output_dir per node): after every process has written its
    `rng_state_{rank}.pth` into its node's copy of the checkpoint, the first process of each
    node writes the other processes' files too. Every copy is then complete, whichever node
    gets which ranks at the resume (Trainer restores `rng_state_{process_index}.pth`, and skips
    it with only an info log when the file is missing)."""
    if not args.save_on_each_node or args.world_size <= 1 or args.save_only_model:
        return
    with open(os.path.join(folder, f"rng_state_{args.process_index}.pth"), "rb") as f:
        everyone = _all_gather(f.read(), args.world_size)
    if not args.should_save:
        return
    for rank, blob in enumerate(everyone):
        path = os.path.join(folder, f"rng_state_{rank}.pth")
        if not os.path.exists(path):  # the node's own processes wrote theirs
            with open(path + ".tmp", "wb") as f:
                f.write(blob)
            os.replace(path + ".tmp", path)


class GlobalRankPrinterCallback(PrinterCallback):
    """transformers' PrinterCallback (the logs printed when tqdm is off) prints on the first
    process of every node; this one prints where `args.should_log`: global rank 0 (or each
    node's first process with log_on_each_node)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        logs.pop("total_flos", None)
        if args.should_log:
            print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items()})


def print_logs_on_global_rank(trainer: Trainer) -> None:
    """Put `GlobalRankPrinterCallback` in the place of the trainer's PrinterCallback, if it has one."""
    if trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(GlobalRankPrinterCallback)


def save_weights_on_this_node(model: torch.nn.Module, folder: str, args: TrainingArguments) -> None:
    """With `save_on_each_node`, the first process of every node but rank 0's writes the
    weights and config.json into its node's copy of `folder`. transformers 5.x's
    `save_pretrained` writes them on global rank 0 only once torch.distributed is initialised,
    whatever `is_main_process` says (`should_save_on_this_rank`), so Trainer's
    save_on_each_node would leave the other nodes' copies without them. DDP keeps every
    rank's weights equal: the files are rank 0's, byte for byte. A sharded model (FSDP) would
    need a gather on every rank: refused."""
    if not (args.save_on_each_node and args.should_save and args.process_index != 0):
        return
    if any(isinstance(p, DTensor) for p in model.parameters()):
        raise ValueError(
            "save_on_each_node with a sharded model (FSDP) is not supported: put output_dir on a filesystem every node "
            "shares and drop --save_on_each_node"
        )
    # the rank check of transformers' mixin, lifted for this one call on this instance
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    try:
        model.save_pretrained(folder, is_main_process=True)
    finally:
        del model.should_save_on_this_rank


def resolve_resume_checkpoint(resume: str | bool | None, output_dir: str, world_size: int) -> str | None:
    """The checkpoint to resume from, validated: `resume` itself, or with True / "latest" the
    newest valid checkpoint-N in output_dir. With several processes, each resolves and
    validates it on its own disk and they must agree on one step: nodes with an output_dir each
    look at their own copies, and a node whose latest save did not complete would otherwise
    resume from an older step than the others. A failure on any process fails them all, with
    every process's reason."""
    if not resume:
        return None
    path, error = None, None
    try:
        if resume is True or resume == "latest":
            path = latest_valid_checkpoint(output_dir)
            if path is None:
                raise CorruptCheckpointError(f"no valid checkpoint to resume from in {output_dir!r}")
        else:
            path = str(resume)
            validate_checkpoint(path)
    except CorruptCheckpointError as failure:
        if world_size <= 1:
            raise
        error = str(failure)
    if world_size <= 1:
        return path
    everyone = _all_gather((None if path is None else os.path.basename(os.path.normpath(path)), error), world_size)
    failures = [f"rank {rank}: {reason}" for rank, (_, reason) in enumerate(everyone) if reason is not None]
    if failures:
        raise CorruptCheckpointError(
            "cannot resume on every process (" + "; ".join(failures) + "); nodes that do not share output_dir need "
            "--save_on_each_node true when the checkpoints are written"
        )
    names = sorted({name for name, _ in everyone})
    if len(names) > 1:
        by_rank = ", ".join(f"rank {rank}: {name}" for rank, (name, _) in enumerate(everyone))
        raise CorruptCheckpointError(
            f"the processes found different checkpoints to resume from ({by_rank}): a node's copy of the latest one is "
            "missing or incomplete; pass --resume_from_checkpoint with a checkpoint-N that every node holds"
        )
    return path


__all__ = [
    "GlobalRankPrinterCallback",
    "check_storage",
    "print_logs_on_global_rank",
    "resolve_resume_checkpoint",
    "save_weights_on_this_node",
    "share_rng_states",
    "storage_problem",
]
