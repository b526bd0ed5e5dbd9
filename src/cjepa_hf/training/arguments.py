"""`CJEPATrainingArguments`: transformers' TrainingArguments with the C-JEPA recipe's settings and checks.

The recipe (I-JEPA (Assran et al., CVPR 2023), appendix; C-JEPA (Mo & Tong, NeurIPS 2024)):
AdamW with a weight-decay schedule, linear warmup from `warmup_start_lr` then cosine to
`final_lr`, an EMA target encoder whose momentum rises to `final_ema_momentum`, no gradient
clipping. The schedules themselves are `cjepa_hf.training.schedules`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .schedules import WEIGHT_DECAY_SCHEDULES


@dataclass
class CJEPATrainingArguments(TrainingArguments):
    """TrainingArguments with the C-JEPA recipe. `learning_rate` is the peak LR and
    `weight_decay` the starting weight decay; `warmup_steps` (an int, or a float < 1 for a
    fraction of the run) is the length of the linear warmup."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (after warmup)."})
    warmup_start_lr: float = field(default=1e-4, metadata={"help": "Learning rate at step 0 of the warmup."})
    final_lr: float = field(default=1e-6, metadata={"help": "Learning rate at the end of the cosine decay."})
    weight_decay: float = field(default=0.04, metadata={"help": "Weight decay at step 0."})
    final_weight_decay: float = field(default=0.4, metadata={"help": "Weight decay at the last step."})
    weight_decay_schedule: str = field(default="cosine", metadata={"help": "cosine (I-JEPA code) or linear (paper)."})
    ema_momentum: float = field(default=0.996, metadata={"help": "EMA momentum of the target encoder at step 0."})
    final_ema_momentum: float = field(default=1.0, metadata={"help": "EMA momentum at the last step."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping (0: off, as in I-JEPA)."})
    max_consecutive_nonfinite: int = field(
        default=10, metadata={"help": "Stop after this many consecutive non-finite losses (each one skips its step)."}
    )
    collapse_monitor: bool = field(
        default=True, metadata={"help": "Log feature std and effective rank of the target features at logging steps."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "A fresh run into an output_dir that holds another run's checkpoints deletes them (and its exports) "
            "first; without it such a run refuses (resume it with --resume_from_checkpoint latest instead)."
        },
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the collated mask tensors."})
    online_probe: bool = field(
        default=True,
        metadata={
            "help": "Train a linear probe on the detached target features when the training data has labels "
            "(logged as online_linear_top1; never changes the encoders' updates)."
        },
    )
    online_probe_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the online probe."})
    online_probe_num_labels: int | None = field(
        default=None, metadata={"help": "Classes of the online probe (default: from the data's ClassLabel feature)."}
    )
    knn_k: int = field(default=20, metadata={"help": "Neighbours of the k-NN monitor."})
    knn_temperature: float = field(default=0.07, metadata={"help": "Temperature of the k-NN monitor's weighted vote."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "cosine only: linear warmup from warmup_start_lr, then cosine to final_lr."}
    )
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Images per forward of the k-NN monitor."})
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "transformers' per-step isnan check of the loss (a host sync at every step): off; a log window "
            "with a skipped non-finite step logs loss NaN instead."
        },
    )
    log_on_each_node: bool = field(
        default=False,
        metadata={
            "help": "Log from the first process of every node, not only from global rank 0 (transformers' default "
            "is True: one copy of the logs per node)."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP's search for unused parameters: off, every trainable parameter of C-JEPA gets a "
            "gradient at every step (the search would cost a graph traversal and print a warning)."
        },
    )

    def __post_init__(self) -> None:
        # Accelerate's DataLoader for map-style data copies each batch to the device with a
        # blocking copy (a host sync per tensor) unless non_blocking is set: on by default here,
        # where the batches are pinned (on the CPU transformers turns pinning off: nothing to overlap).
        default_non_blocking = self.accelerator_config is None
        if default_non_blocking:
            self.accelerator_config = {"non_blocking": True}
        super().__post_init__()
        if default_non_blocking and not self.dataloader_pin_memory:
            self.accelerator_config.non_blocking = False
        if self.weight_decay_schedule not in WEIGHT_DECAY_SCHEDULES:
            raise ValueError(f"weight_decay_schedule must be one of {WEIGHT_DECAY_SCHEDULES}, got {self.weight_decay_schedule!r}")
        for name in ("ema_momentum", "final_ema_momentum"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("warmup_start_lr", "final_lr", "weight_decay", "final_weight_decay"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.final_lr > self.learning_rate:
            raise ValueError(
                f"final_lr ({self.final_lr!r}) must not exceed the peak learning_rate ({self.learning_rate!r}): the cosine "
                "schedule decays from the peak to final_lr"
            )
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps must be > 0 (optimizer steps to train), or -1 to train num_train_epochs epochs of a dataset "
                f"with a length, got {self.max_steps!r}"
            )
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ValueError(f"with max_steps -1, num_train_epochs must be > 0, got {self.num_train_epochs!r}")
        if self.per_device_train_batch_size < 1:
            raise ValueError(f"per_device_train_batch_size must be >= 1, got {self.per_device_train_batch_size!r}")
        if self.optim not in ("adamw_torch", "adamw_torch_fused"):
            raise ValueError(
                f"optim must be adamw_torch or adamw_torch_fused (C-JEPA trains with AdamW and its own weight-decay "
                f"schedule), got {str(getattr(self.optim, 'value', self.optim))!r}"
            )
        if self.lr_scheduler_type != "cosine":
            raise ValueError(
                f"lr_scheduler_type must be cosine (C-JEPA's linear warmup from warmup_start_lr, then cosine to "
                f"final_lr), got {str(getattr(self.lr_scheduler_type, 'value', self.lr_scheduler_type))!r}"
            )
        if not self.online_probe_lr > 0:
            raise ValueError(f"online_probe_lr must be > 0, got {self.online_probe_lr!r}")
        if self.online_probe_num_labels is not None and self.online_probe_num_labels < 2:
            raise ValueError(f"online_probe_num_labels must be >= 2, got {self.online_probe_num_labels!r}")
        if self.knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {self.knn_k!r}")
        if not self.knn_temperature > 0:
            raise ValueError(f"knn_temperature must be > 0, got {self.knn_temperature!r}")
        if self.max_consecutive_nonfinite < 1:
            raise ValueError(f"max_consecutive_nonfinite must be >= 1, got {self.max_consecutive_nonfinite!r}")


__all__ = ["CJEPATrainingArguments"]
