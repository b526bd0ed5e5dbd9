"""C-JEPA pretraining on transformers' Trainer: arguments, schedules, the optimizer builder, checkpoints, shared state, data hooks, the trainer.

Modules: `arguments` (CJEPATrainingArguments), `schedules` (lr_at, weight_decay_at,
momentum_at), `optim` (param_groups, build_adamw), `compile` (one compile for changing mask
sizes), `checkpoints` (validation, atomic writes, rotation, full disks), `state` (StepState,
DataPosition), `data_hooks` (the data's epoch and seek protocols), `callback` (CJEPACallback),
`multinode` (several machines: where checkpoints go, every rank's RNG state in each copy, one
checkpoint to resume from), `fsdp` (FSDP2: the plugin's checks, the gathered target encoder,
sharded checkpoints read back), `resume` (the model config a resume refuses to change, the
arguments it reports and honours, epoch boundaries), `run_guard` (the output folder's lock,
SIGTERM / SIGINT, runs that end early), `preflight` (data sources, evaluation names and columns
checked before training), `trainer` (CJEPATrainer).
"""

from .arguments import CJEPATrainingArguments
from .callback import CJEPACallback
from .checkpoints import CorruptCheckpointError, DiskFullError, latest_valid_checkpoint, validate_checkpoint
from .compile import compile_model, mark_dynamic_masks, trim_context
from .data_hooks import EpochAwareCollator, EpochAwareDataset, SeekableStream
from .optim import ADAMW_IMPLEMENTATIONS, build_adamw, param_groups
from .run_guard import IncompleteRunError, OutputDirInUseError, RunInterrupted
from .schedules import WEIGHT_DECAY_SCHEDULES, lr_at, momentum_at, weight_decay_at
from .state import BufferSnapshot, DataPosition, StepState
from .trainer import CJEPATrainer

__all__ = [
    "ADAMW_IMPLEMENTATIONS",
    "WEIGHT_DECAY_SCHEDULES",
    "BufferSnapshot",
    "CJEPACallback",
    "CJEPATrainer",
    "CJEPATrainingArguments",
    "CorruptCheckpointError",
    "DataPosition",
    "DiskFullError",
    "EpochAwareCollator",
    "EpochAwareDataset",
    "IncompleteRunError",
    "OutputDirInUseError",
    "RunInterrupted",
    "SeekableStream",
    "StepState",
    "build_adamw",
    "compile_model",
    "latest_valid_checkpoint",
    "lr_at",
    "mark_dynamic_masks",
    "momentum_at",
    "param_groups",
    "trim_context",
    "validate_checkpoint",
    "weight_decay_at",
]
