"""What `CJEPATrainer` and its callback share, in the open: the step's non-finite flags and counters, schedule values, buffer snapshot, data position.

`StepState` is the one object through which the callback (at Trainer's optimizer-step hooks)
and the trainer (in `compute_loss`, `log`, checkpoints and resume) see the optimizer step in
progress; `DataPosition` is where the training data stands, for an exact resume. Every
per-step quantity is a device tensor, so that nothing here forces a host-device sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BufferSnapshot:
    """The model's buffers (BatchNorm running_mean/running_var (C,), num_batches_tracked (), the
    fixed position embeddings) at the start of a step, in preallocated tensors, and the buffers
    themselves: a skipped step puts them back."""

    refs: list[torch.Tensor] = field(default_factory=list)
    saved: list[torch.Tensor] = field(default_factory=list)

    def take(self, model: torch.nn.Module) -> None:
        """Copy the buffers of `model` (no host sync; reallocated only when they change)."""
        buffers = list(model.buffers())
        same = len(buffers) == len(self.refs) and all(a is b for a, b in zip(buffers, self.refs))
        if not same:
            self.refs = buffers
            self.saved = [b.detach().clone() for b in buffers]
            return
        with torch.no_grad():
            for saved, buffer in zip(self.saved, buffers):
                saved.copy_(buffer)

    def restore_if(self, skip: torch.Tensor) -> None:
        """Where `skip` (0-dim, 1.0 for a skipped step) is set, put the buffers back as they were at
        the start of the step: a NaN batch's statistics must not stay in running_mean and running_var
        (every later eval-mode output and checkpoint would be NaN). torch.where on the flag, not a
        Python branch: no host sync on accelerators."""
        if not self.refs:
            return
        flag = skip > 0
        with torch.no_grad():
            for saved, buffer in zip(self.saved, self.refs):
                buffer.copy_(torch.where(flag.to(buffer.device), saved, buffer))


@dataclass
class StepState:
    """The optimizer step in progress and the run's non-finite steps.

    step_nonfinite: 1.0 once a micro-batch of this step had a non-finite loss (this process).
    skip: the flag all processes agreed on before the optimizer step (1.0: skip the update, the EMA
    step and the batch's BatchNorm statistics). nonfinite_total / consecutive_nonfinite: skipped
    steps in the run / in a row; nonfinite_logged: nonfinite_total at the last training log.
    skipped_records: undecodable records the data passed over. weight_decay / ema_momentum: the
    schedule values of the step in progress (None before the first step)."""

    step_nonfinite: torch.Tensor
    skip: torch.Tensor
    nonfinite_total: torch.Tensor
    consecutive_nonfinite: torch.Tensor
    skipped_records: torch.Tensor
    nonfinite_logged: int = 0
    weight_decay: float | None = None
    ema_momentum: float | None = None
    buffers: BufferSnapshot = field(default_factory=BufferSnapshot)

    @classmethod
    def on(cls, device: torch.device | str) -> StepState:
        def zero() -> torch.Tensor:
            return torch.zeros((), device=device)

        return cls(zero(), zero(), zero(), zero(), torch.zeros((), dtype=torch.long, device=device))

    def schedule_values(self) -> dict[str, float]:
        """The schedule values of the latest step, for the logs."""
        values = {"weight_decay": self.weight_decay, "ema_momentum": self.ema_momentum}
        return {key: float(value) for key, value in values.items() if value is not None}

    def see_loss(self, loss: torch.Tensor) -> None:
        """Flag the step when a micro-batch's loss is not finite (no host sync)."""
        self.step_nonfinite = torch.maximum(self.step_nonfinite, (~torch.isfinite(loss.detach())).float())

    def end_step(self) -> None:
        """After the optimizer step: count a skipped one, restore the buffers it changed, clear the flag."""
        skip = self.skip
        self.buffers.restore_if(skip)
        self.nonfinite_total += skip
        self.consecutive_nonfinite = (self.consecutive_nonfinite + skip) * skip
        self.step_nonfinite = torch.zeros_like(self.step_nonfinite)

    def restore_counts(self, saved: dict) -> None:
        """The counters of a checkpoint's cjepa_state.json."""
        self.nonfinite_total.fill_(saved["nonfinite_steps"])
        self.nonfinite_logged = saved["nonfinite_steps"]
        self.skipped_records.fill_(saved["skipped_records"])


@dataclass
class DataPosition:
    """Where the training data stands. epoch / start_position: the data epoch and the batch
    position the next epoch starts at (the mask collator's position). For a stream: batches taken
    in the current epoch and, per DataLoader worker (round-robin), records consumed (good ones and
    the bad ones skipped); resume_records / resume_checkpoint: a seek pending for the next epoch;
    seeked / begun_at: whether the epoch in progress began with a seek, and at which batch."""

    workers: int
    device: torch.device | str = "cpu"
    epoch: int = 0
    start_position: int = 0
    epoch_batches: int = 0
    epoch_records: torch.Tensor = field(init=False)
    resume_records: list[int] | None = None
    resume_checkpoint: str | None = None
    seeked: bool = False  # the epoch in progress was entered by a seek (a resume mid-epoch)
    begun_at: int = 0  # its batch position when it began

    def __post_init__(self) -> None:
        self.epoch_records = torch.zeros(self.workers, dtype=torch.long, device=self.device)

    def begin_epoch(self) -> None:
        """The epoch now starting has been handed to the data: count from its start position."""
        self.epoch_batches = self.begun_at = self.start_position
        self.seeked = self.resume_records is not None
        records = self.resume_records or [0] * self.workers
        self.epoch_records = torch.tensor(records, dtype=torch.long, device=self.epoch_records.device)
        self.epoch, self.start_position = self.epoch + 1, 0
        self.resume_records = self.resume_checkpoint = None

    def count_batch(self, batch_size: int, skipped: torch.Tensor | None, worker: torch.Tensor | None) -> None:
        """Account a training batch's records to the DataLoader worker that produced it (the batch's
        "data_worker"; without one, round-robin order is assumed). No host sync."""
        records = self.epoch_records
        if worker is None:
            # a fill on the device, not a host tensor copied over (a sync on an accelerator)
            worker = torch.full((1,), self.epoch_batches % records.numel(), dtype=torch.long, device=records.device)
        count = torch.full((1,), batch_size, dtype=torch.long, device=records.device)
        if skipped is not None:
            count += skipped.to(records.device)
        records.index_add_(0, worker.reshape(1).to(records.device).clamp_(0, records.numel() - 1), count)
        self.epoch_batches += 1

    def checkpoint_entry(self, gather, world_size: int) -> dict:
        """The stream's position for the checkpoint (cjepa_state.json "data"): the epoch in progress
        (begin_epoch moved past it), its batches so far, and every rank's records per worker.
        `gather` concatenates a tensor over the processes (every process calls this)."""
        records = gather(self.epoch_records.reshape(1, -1)) if world_size > 1 else self.epoch_records
        return {
            "epoch": self.epoch - 1,
            "batches": self.epoch_batches,
            "world_size": world_size,
            "num_workers": self.workers,
            "records": records.reshape(world_size, -1).tolist(),
        }

    def restart(self, epoch: int = 0, start_position: int = 0, records: list[int] | None = None) -> None:
        self.epoch, self.start_position, self.resume_records = epoch, start_position, records


__all__ = ["BufferSnapshot", "DataPosition", "StepState"]
