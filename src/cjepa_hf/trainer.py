"""The trainer's public names, re-exported from `cjepa_hf.training` (where the trainer, its arguments, schedules, optimizer builder and checkpoint checks live).

`from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments, lr_at, ...` keeps working;
new code may import from `cjepa_hf.training` directly.
"""

from .training import (
    CJEPATrainer,
    CJEPATrainingArguments,
    CorruptCheckpointError,
    DiskFullError,
    latest_valid_checkpoint,
    lr_at,
    momentum_at,
    param_groups,
    validate_checkpoint,
    weight_decay_at,
)

__all__ = [
    "CJEPATrainer",
    "CJEPATrainingArguments",
    "CorruptCheckpointError",
    "DiskFullError",
    "latest_valid_checkpoint",
    "lr_at",
    "momentum_at",
    "param_groups",
    "validate_checkpoint",
    "weight_decay_at",
]
