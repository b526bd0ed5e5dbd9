"""`CJEPACallback`: the schedules, the EMA step and the non-finite guard, at the right points of Trainer's optimizer step.

Per optimizer step: the weight decay of the decayed group follows `weight_decay_at`; after the
update the target encoder takes an EMA step with momentum `momentum_at` (I-JEPA (Assran et al.,
CVPR 2023), appendix). A non-finite loss on any process skips the update (fused AdamW's
`found_inf`), the EMA step (momentum 1) and the batch's BatchNorm statistics, without a host
sync. Everything the callback and the trainer share is in one `StepState`. At each step's end a
stop signal (`run_guard`) saves and stops; at an epoch's end an empty resumed epoch does not stop
training (`resume.continue_after_resumed_epoch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import TrainerCallback

from .resume import continue_after_resumed_epoch
from .run_guard import stop_at_step_end
from .schedules import momentum_at, weight_decay_at
from .state import StepState

if TYPE_CHECKING:
    from .trainer import CJEPATrainer


class CJEPACallback(TrainerCallback):
    """Reads and writes `state` (the trainer's `step_state`); uses the trainer's accelerator,
    model and optimizer, and asks it to start an epoch and to check the non-finite counters."""

    def __init__(self, trainer: CJEPATrainer, state: StepState) -> None:
        self.trainer = trainer
        self.state = state

    def _optimizer(self):
        optimizer = self.trainer.optimizer
        return getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper holds torch's optimizer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.begin_epoch()

    def on_epoch_end(self, args, state, control, **kwargs):
        continue_after_resumed_epoch(self.trainer, state, control)  # an epoch boundary is a resume point

    def on_step_begin(self, args, state, control, **kwargs):
        # Before the first micro-batch's forward: the BatchNorm statistics of every micro-batch
        # of this step can be undone if the step turns out non-finite.
        self.state.buffers.take(self.trainer.accelerator.unwrap_model(self.trainer.model))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        step, total = state.global_step, state.max_steps
        shared = self.state
        shared.weight_decay = weight_decay_at(step, total, args.weight_decay, args.final_weight_decay, args.weight_decay_schedule)
        shared.ema_momentum = momentum_at(step, total, args.ema_momentum, args.final_ema_momentum)
        optimizer = self._optimizer()
        for group in optimizer.param_groups:
            if group.get("apply_weight_decay"):
                group["weight_decay"] = shared.weight_decay
        # One flag for all processes: a NaN on any rank poisons the all-reduced gradients everywhere.
        nonfinite = shared.step_nonfinite
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            nonfinite = accelerator.reduce(nonfinite, reduction="sum").clamp_(max=1.0)
        shared.skip = nonfinite
        if optimizer.defaults.get("fused"):
            optimizer.found_inf = nonfinite  # fused AdamW skips the whole update, no host sync
        elif nonfinite.item():
            optimizer.zero_grad(set_to_none=True)  # parameters without gradients are not updated

    def on_optimizer_step(self, args, state, control, **kwargs):
        shared = self.state
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        # momentum 1 when the update was skipped: no EMA step either, without a host sync
        model.update_target_encoder(1.0 - (1.0 - shared.skip) * (1.0 - shared.ema_momentum))
        shared.end_step()
        optimizer = self._optimizer()
        if hasattr(optimizer, "found_inf"):  # torch's attribute, set above for the fused kernel only
            del optimizer.found_inf

    def on_step_end(self, args, state, control, **kwargs):
        epochs = self.trainer.data_epochs()
        if epochs is not None:  # before the log of this step reads it
            state.epoch = epochs
        # On the CPU this check costs nothing; on an accelerator only at logging steps (a host sync).
        if self.state.consecutive_nonfinite.device.type == "cpu" or control.should_log:
            self.trainer.check_nonfinite()
        stop_at_step_end(self.trainer, control)  # SIGTERM / SIGINT on any process: save and stop


__all__ = ["CJEPACallback"]
