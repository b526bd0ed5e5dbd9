"""`CJEPATrainer`: transformers' Trainer with the C-JEPA objective, EMA and the paper's schedules.

Per optimizer step (PAPER.md section 4):
  - LR: linear warmup warmup_start_lr -> learning_rate over warmup_steps, then cosine to final_lr;
  - weight decay: weight_decay -> final_weight_decay (cosine as the I-JEPA code, or linear as
    the paper says), never on biases, 1-D parameters (norms), the mask token;
  - EMA of the target encoder after the optimizer step: momentum ema_momentum -> final_ema_momentum
    linearly over the run.
Every schedule is a pure function of the global step, so resuming is exact by construction.

Online evaluation (`cjepa_hf.online_eval`): when the training data carries labels, a linear
probe trains on the detached target features at every step (`online_linear_top1` in the
logs); with an `eval_dataset` (a `KNNMonitorSet`) and `eval_strategy="steps"`, `evaluate`
logs `eval_knn_top1` and `eval_linear_top1` every `eval_steps`.

A non-finite loss skips the update, the EMA step and the BatchNorm statistics of its batch
without a host sync (fused AdamW's `found_inf`, buffers restored with `torch.where`): a skipped
step changes no model state. It is counted (`nonfinite_steps`) and its window logs `loss` NaN;
`max_consecutive_nonfinite` of them in a row stop training with an error.

Checkpoints: `cjepa_state.json` is written last (atomically) and marks a checkpoint complete;
old checkpoints are rotated (`save_total_limit`) only after it, so a kill never leaves nothing
to resume. `validate_checkpoint` checks every file a resume reads (sizes, archives, JSON shapes,
finite weights); `latest_valid_checkpoint` skips the ones that fail. A full disk during a save
raises `DiskFullError` (an OSError, errno ENOSPC) naming the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import re
import shutil
import struct
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import DataLoader, IterableDataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from .losses import effective_rank, feature_std
from .modeling_cjepa import CJEPAForPreTraining
from .online_eval import PROBE_OPTIMIZER, PROBE_WEIGHTS, KNNMonitorSet, OnlineLinearProbe, infer_num_labels

logger = logging.getLogger(__name__)

WEIGHT_DECAY_SCHEDULES = ("cosine", "linear")

# ============================================================================ schedules (pure functions)


def lr_at(step: int, total_steps: int, warmup_steps: int, start_lr: float, peak_lr: float, final_lr: float) -> float:
    """Linear warmup start_lr -> peak_lr over warmup_steps, then cosine peak_lr -> final_lr at total_steps."""
    if step < warmup_steps:
        return start_lr + (peak_lr - start_lr) * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return final_lr + (peak_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def weight_decay_at(step: int, total_steps: int, start: float, final: float, schedule: str = "cosine") -> float:
    """start -> final over the run: cosine ramp (I-JEPA code) or linear (the paper's text)."""
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return start + (final - start) * progress
    raise ValueError(f"schedule must be one of {WEIGHT_DECAY_SCHEDULES}, got {schedule!r}")


def momentum_at(step: int, total_steps: int, start: float = 0.996, final: float = 1.0) -> float:
    """EMA momentum rising linearly start -> final over the run."""
    return start + (final - start) * min(step / max(total_steps, 1), 1.0)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: with weight decay (matrices, conv kernels) and without
    (biases, norms and other 1-D tensors, the mask token). The frozen target encoder is excluded."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or name.startswith("target_encoder."):
            continue
        if param.ndim <= 1 or name.endswith(".bias") or "mask_token" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "apply_weight_decay": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_weight_decay": False},
    ]


# ============================================================================ arguments


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
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the collated mask tensors."})
    online_probe: bool = field(
        default=True,
        metadata={"help": "Train a linear probe on the detached target features when the training data has labels "
                  "(logged as online_linear_top1; never changes the encoders' updates)."},
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight_decay_schedule not in WEIGHT_DECAY_SCHEDULES:
            raise ValueError(
                f"weight_decay_schedule must be one of {WEIGHT_DECAY_SCHEDULES}, got {self.weight_decay_schedule!r}"
            )
        for name in ("ema_momentum", "final_ema_momentum"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("warmup_start_lr", "final_lr", "final_weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
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


# ============================================================================ checkpoint validation


class CorruptCheckpointError(RuntimeError):
    """A checkpoint folder with missing, truncated or malformed files, or non-finite weights."""


class DiskFullError(OSError):
    """A save that ran out of disk space (errno ENOSPC), naming the folder it was writing."""


_RNG_STATE = re.compile(r"^rng_state(_\d+)?\.pth$")


def _check_safetensors(path: str) -> None:
    """Sizes against the header, then every tensor read: floating tensors must be finite."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptCheckpointError(f"{path} is truncated ({size} bytes)")
        header_len = struct.unpack("<Q", head)[0]
        if 8 + header_len > size:
            raise CorruptCheckpointError(f"{path} is truncated: header of {header_len} bytes but file has {size}")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as error:
            raise CorruptCheckpointError(f"{path} has an unreadable header: {error}") from None
    if not isinstance(header, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2
        for k, v in header.items() if k != "__metadata__"
    ):
        raise CorruptCheckpointError(f"{path} has a malformed header (each tensor needs data_offsets [begin, end])")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise CorruptCheckpointError(f"{path} is truncated: expected {8 + header_len + end} bytes, found {size}")
    # NaN or inf in the weights (BatchNorm statistics included) make every later loss NaN:
    # such a checkpoint cannot be resumed from or exported, so it is not valid.
    try:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    bad = int((~torch.isfinite(tensor)).sum())
                    raise CorruptCheckpointError(
                        f"{path}: tensor {key} holds non-finite values ({bad} of {tensor.numel()} are NaN or inf)"
                    )
    except SafetensorError as error:
        raise CorruptCheckpointError(f"{path} cannot be read: {error}") from None


def _read_json_object(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as error:
        raise CorruptCheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _is_count(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_trainer_state(path: str) -> None:
    """What Trainer's `TrainerState.load_from_json` and our resume read: an object of
    TrainerState's fields, global_step an integer >= 0, log_history a list of objects."""
    state = _read_json_object(path)
    if "global_step" not in state:
        raise CorruptCheckpointError(f"{path} lacks global_step (the number of optimizer steps taken)")
    if not _is_count(state["global_step"]):
        raise CorruptCheckpointError(f"{path}: global_step must be an integer >= 0, got {state['global_step']!r}")
    history = state.get("log_history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CorruptCheckpointError(f"{path}: log_history must be a list of log objects, got {type(history).__name__}")
    known = {f.name for f in dataclasses.fields(TrainerState)}
    unknown = sorted(set(state) - known)
    if unknown:
        raise CorruptCheckpointError(
            f"{path} has unknown field(s) {unknown}: this transformers' TrainerState cannot load it (fields: {sorted(known)})"
        )
    try:
        TrainerState(**state)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise CorruptCheckpointError(f"{path} does not load as a TrainerState: {error}") from None


def _check_cjepa_state(path: str) -> None:
    """The trainer's own state: {"nonfinite_steps": int, "skipped_records": int,
    "dataloader_num_workers": int (newer checkpoints), "online_probe_sums": [3 numbers] (with a
    probe), "data": the stream position (streams): {"epoch", "batches", "world_size",
    "num_workers", "records": world_size lists of num_workers counts}}."""
    state = _read_json_object(path)
    for key in ("nonfinite_steps", "skipped_records"):
        if key not in state:
            raise CorruptCheckpointError(f"{path} lacks {key}")
        if not _is_count(state[key]):
            raise CorruptCheckpointError(f"{path}: {key} must be an integer >= 0, got {state[key]!r}")
    if "dataloader_num_workers" in state and not _is_count(state["dataloader_num_workers"]):
        raise CorruptCheckpointError(
            f"{path}: dataloader_num_workers must be an integer >= 0, got {state['dataloader_num_workers']!r}"
        )
    sums = state.get("online_probe_sums")
    if sums is not None and not (
        isinstance(sums, list) and len(sums) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums)
    ):
        raise CorruptCheckpointError(f"{path}: online_probe_sums must be 3 numbers (loss sum, correct, seen), got {sums!r}")
    data = state.get("data")
    if data is None:
        return
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path}: data (the stream position) must be an object, got {type(data).__name__}")
    missing = sorted({"epoch", "batches", "world_size", "num_workers", "records"} - set(data))
    if missing:
        raise CorruptCheckpointError(
            f"{path}: data lacks {missing} (the stream position needs epoch, batches, world_size, num_workers, records)"
        )
    for key, minimum in (("epoch", 0), ("batches", 0), ("world_size", 1), ("num_workers", 1)):
        if not _is_count(data[key], minimum):
            raise CorruptCheckpointError(f"{path}: data.{key} must be an integer >= {minimum}, got {data[key]!r}")
    world, workers, records = data["world_size"], data["num_workers"], data["records"]
    if not (
        isinstance(records, list) and len(records) == world
        and all(isinstance(r, list) and len(r) == workers and all(_is_count(v) for v in r) for r in records)
    ):
        raise CorruptCheckpointError(
            f"{path}: data.records must be {world} list(s) of {workers} integer(s) >= 0 (records read per process "
            f"and stream worker), got {records!r}"
        )


def _check_rng_state(path: str) -> None:
    """Trainer restores python, numpy and cpu RNG states from it (torch.load, weights_only)."""
    try:
        from transformers.trainer_pt_utils import safe_globals
    except ImportError:  # pragma: no cover - older transformers
        safe_globals = contextlib.nullcontext
    try:
        with safe_globals():
            state = torch.load(path, weights_only=True)
    except Exception as error:  # any unpickling failure: the file is unusable
        raise CorruptCheckpointError(f"{path} cannot be loaded: {error}") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path} must hold a dict of RNG states, got {type(state).__name__}")
    missing = sorted({"python", "numpy", "cpu"} - set(state))
    if missing:
        raise CorruptCheckpointError(f"{path} lacks the RNG state(s) {missing} (Trainer restores python, numpy and cpu)")


def validate_checkpoint(folder: str) -> None:
    """Raise `CorruptCheckpointError` naming what is missing, truncated or malformed in a
    Trainer checkpoint, i.e. every file a resume reads: the model weights (safetensors, sizes
    checked against their header, every tensor read and required finite), optimizer,
    scheduler and RNG states (zip archives checked for integrity; RNG states loaded),
    trainer_state.json, config.json and cjepa_state.json (JSON of the expected shape), and
    the online probe's files when present."""
    if not os.path.isdir(folder):
        raise CorruptCheckpointError(f"checkpoint {folder!r} does not exist")
    weights = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and f != PROBE_WEIGHTS)
    if not weights:
        raise CorruptCheckpointError(f"checkpoint {folder!r} has no *.safetensors weights")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        weight_map = _read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CorruptCheckpointError(f"{index} must hold a weight_map object of tensor name -> shard file")
        missing = sorted(set(weight_map.values()) - set(weights))
        if missing:
            raise CorruptCheckpointError(f"checkpoint {folder!r} lacks weight shards {missing}")
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "config.json", "cjepa_state.json"):
        if not os.path.exists(os.path.join(folder, name)):
            raise CorruptCheckpointError(f"checkpoint {folder!r} lacks {name}")
    # The cheap checks first: a folder that fails them is not worth reading the weights of.
    _check_trainer_state(os.path.join(folder, "trainer_state.json"))
    _read_json_object(os.path.join(folder, "config.json"))
    _check_cjepa_state(os.path.join(folder, "cjepa_state.json"))
    rng_states = sorted(f for f in os.listdir(folder) if _RNG_STATE.match(f))
    archives = ["optimizer.pt", "scheduler.pt", *rng_states]
    if os.path.exists(os.path.join(folder, PROBE_WEIGHTS)):
        archives.append(PROBE_OPTIMIZER)
    for name in archives:
        path = os.path.join(folder, name)
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as error:
            raise CorruptCheckpointError(f"{path} is not a complete torch archive: {error}") from None
        if bad is not None:
            raise CorruptCheckpointError(f"{path} has a corrupt member {bad!r}")
    for name in rng_states:
        _check_rng_state(os.path.join(folder, name))
    for name in weights:
        _check_safetensors(os.path.join(folder, name))
    if os.path.exists(os.path.join(folder, PROBE_WEIGHTS)):
        _check_safetensors(os.path.join(folder, PROBE_WEIGHTS))


def latest_valid_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder in output_dir that passes `validate_checkpoint`;
    corrupt ones are skipped with a warning naming the problem."""
    if not os.path.isdir(output_dir):
        return None
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    found = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := pattern.match(name))), reverse=True
    )
    for _, name in found:
        folder = os.path.join(output_dir, name)
        try:
            validate_checkpoint(folder)
        except CorruptCheckpointError as error:
            logger.warning("skipping checkpoint %s: %s", folder, error)
            continue
        return folder
    return None


# ============================================================================ callback


class _CJEPACallback(TrainerCallback):
    """Schedules, the EMA step and the non-finite guard, at the right points of Trainer's loop."""

    def __init__(self, trainer: "CJEPATrainer") -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer._begin_epoch()

    def on_step_begin(self, args, state, control, **kwargs):
        # Before the first micro-batch's forward: the BatchNorm statistics of every
        # micro-batch of this step can be undone if the step turns out non-finite.
        self.trainer._snapshot_buffers()

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        trainer = self.trainer
        step, total = state.global_step, state.max_steps
        wd = weight_decay_at(step, total, args.weight_decay, args.final_weight_decay, args.weight_decay_schedule)
        inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        for group in inner.param_groups:
            if group.get("apply_weight_decay"):
                group["weight_decay"] = wd
        trainer._current = {"weight_decay": wd, "ema_momentum": momentum_at(step, total, args.ema_momentum, args.final_ema_momentum)}
        # One flag for all processes: a NaN on any rank poisons the all-reduced gradients everywhere.
        nonfinite = trainer._step_nonfinite
        if trainer.accelerator.num_processes > 1:
            nonfinite = trainer.accelerator.reduce(nonfinite, reduction="sum").clamp_(max=1.0)
        trainer._skip_flag = nonfinite
        if inner.defaults.get("fused"):
            inner.found_inf = nonfinite  # fused AdamW skips the whole update, no host sync
        elif nonfinite.item():
            inner.zero_grad(set_to_none=True)  # parameters without gradients are not updated

    def on_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        skip = trainer._skip_flag
        # momentum 1 when the update was skipped: no EMA step either, without a host sync
        momentum = 1.0 - (1.0 - skip) * (1.0 - trainer._current["ema_momentum"])
        model.update_target_encoder(momentum)
        trainer._restore_buffers_if(skip)
        trainer._nonfinite_total += skip
        trainer._consecutive_nonfinite = (trainer._consecutive_nonfinite + skip) * skip
        trainer._step_nonfinite = torch.zeros_like(trainer._step_nonfinite)
        inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        if hasattr(inner, "found_inf"):
            del inner.found_inf

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        # On the CPU this check costs nothing; on an accelerator only at logging steps (a host sync).
        if trainer._consecutive_nonfinite.device.type == "cpu" or control.should_log:
            trainer._check_nonfinite()


# ============================================================================ trainer


class CJEPATrainer(Trainer):
    """Trainer for `CJEPAForPreTraining` on batches from `cjepa_hf.masking.MaskCollator`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.accelerator.unwrap_model(self.model), CJEPAForPreTraining):
            raise TypeError(f"CJEPATrainer trains CJEPAForPreTraining, got {type(self.model).__name__}")
        if not isinstance(self.args, CJEPATrainingArguments):
            raise TypeError(f"CJEPATrainer needs CJEPATrainingArguments, got {type(self.args).__name__}")
        device = self.args.device
        self._step_nonfinite = torch.zeros((), device=device)
        self._skip_flag = torch.zeros((), device=device)
        self._nonfinite_total = torch.zeros((), device=device)
        self._consecutive_nonfinite = torch.zeros((), device=device)
        self._nonfinite_logged = 0  # nonfinite_steps at the last training log
        # The model's buffers (BatchNorm running statistics) at the start of the step, and the
        # buffers themselves: a skipped step puts them back (see _restore_buffers_if).
        self._buffer_refs: list[torch.Tensor] = []
        self._buffer_snapshot: list[torch.Tensor] = []
        self._skipped_records = torch.zeros((), dtype=torch.long, device=device)
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._metric_count = 0
        self._last_target_features: torch.Tensor | None = None
        self._current: dict[str, float] = {}
        self._epoch = 0
        self._start_position = 0
        # Where an iterable dataset stands in its current epoch: batches taken and, per
        # DataLoader worker (round-robin), records consumed (good ones + the bad ones skipped).
        self._epoch_batches = 0
        self._epoch_records = torch.zeros(self._stream_workers(), dtype=torch.long, device=device)
        self._resume_records: list[int] | None = None
        self._resume_checkpoint: str | None = None
        self.online_probe = self._build_online_probe()
        self._probe_sums = torch.zeros(3, device=device)  # loss sum, correct, seen: since the last log
        self.add_callback(_CJEPACallback(self))

    def _build_online_probe(self) -> OnlineLinearProbe | None:
        """The online probe, when asked for and the data has labels (or the classes are given)."""
        args = self.args
        if not args.online_probe:
            return None
        num_labels = args.online_probe_num_labels or infer_num_labels(self.train_dataset)
        if num_labels is None:
            if getattr(self.train_dataset, "label_column", None) is not None:
                raise ValueError(
                    f"the training data has a label column ({self.train_dataset.label_column!r}) but its feature does "
                    "not give the number of classes: set --online_probe_num_labels, or --online_probe false"
                )
            return None  # no labels: nothing to probe
        hidden = self.accelerator.unwrap_model(self.model).config.hidden_size
        with torch.random.fork_rng(devices=[]):  # the probe's init must not shift the run's RNG
            torch.manual_seed(args.seed)
            probe = OnlineLinearProbe(hidden, num_labels, lr=args.online_probe_lr).to(args.device)
        probe.build_optimizer()
        return probe

    # ---------------------------------------------------------------- skipped steps
    def _snapshot_buffers(self) -> None:
        """Copy the model's buffers (BatchNorm running_mean/running_var (C,), num_batches_tracked
        (), the fixed position embeddings) into preallocated tensors; no host sync."""
        buffers = [b for b in self.accelerator.unwrap_model(self.model).buffers()]
        same = len(buffers) == len(self._buffer_refs) and all(a is b for a, b in zip(buffers, self._buffer_refs))
        if not same:
            self._buffer_refs = buffers
            self._buffer_snapshot = [b.detach().clone() for b in buffers]
            return
        with torch.no_grad():
            for saved, buffer in zip(self._buffer_snapshot, buffers):
                saved.copy_(buffer)

    def _restore_buffers_if(self, skip: torch.Tensor) -> None:
        """Where `skip` (0-dim, 1.0 for a skipped step) is set, put the buffers back as they were
        at the start of the step: the NaN batch's statistics must not stay in running_mean and
        running_var (every later eval-mode output and checkpoint would be NaN). torch.where
        on the flag, not a Python branch: no host sync on accelerators."""
        if not self._buffer_refs:
            return
        flag = skip > 0
        with torch.no_grad():
            for saved, buffer in zip(self._buffer_snapshot, self._buffer_refs):
                buffer.copy_(torch.where(flag.to(buffer.device), saved, buffer))

    # ---------------------------------------------------------------- optimizer and schedule
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = model if model is not None else self.model
            groups = param_groups(self.accelerator.unwrap_model(model), self.args.weight_decay)
            kwargs = dict(lr=self.args.learning_rate, betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon)
            try:
                self.optimizer = torch.optim.AdamW(groups, fused=True, **kwargs)
            except (RuntimeError, TypeError):  # devices without a fused kernel
                self.optimizer = torch.optim.AdamW(groups, foreach=True, **kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            args = self.args
            warmup = args.get_warmup_steps(num_training_steps)
            peak = args.learning_rate

            def factor(step: int) -> float:
                return lr_at(step, num_training_steps, warmup, args.warmup_start_lr, peak, args.final_lr) / peak

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    # ---------------------------------------------------------------- data
    def get_train_dataloader(self) -> DataLoader:
        """Iterable (streaming) datasets come already split per process by `cjepa_hf.data`
        (`split_dataset_by_node`); they get a plain DataLoader so that Accelerate neither
        re-shards them nor makes rank 0 decode for everybody. Map-style datasets go
        through Trainer's own sampler and Accelerate."""
        dataset = self.train_dataset
        if not isinstance(dataset, IterableDataset) and not _is_datasets_iterable(dataset):
            return super().get_train_dataloader()
        args = self.args
        return DataLoader(
            dataset,
            batch_size=args.per_device_train_batch_size,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
            drop_last=True,  # equal batches on every process: the VICReg all-gather needs them
            prefetch_factor=args.dataloader_prefetch_factor if args.dataloader_num_workers > 0 else None,
            persistent_workers=False,  # workers must see the collator's epoch each epoch
        )

    def _stream_workers(self) -> int:
        return max(self.args.dataloader_num_workers, 1)

    def _begin_epoch(self) -> None:
        """Tell the dataset and the mask collator which epoch starts (before workers are created)."""
        epoch, position = self._epoch, self._start_position
        records = self._resume_records
        for obj in (self.train_dataset, self.data_collator):
            if obj is self.data_collator and hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch, start_position=position)
            elif records is not None and hasattr(obj, "resume_at"):
                obj.resume_at(epoch, records)
            elif hasattr(obj, "set_epoch") and _is_iterable(obj):
                obj.set_epoch(epoch)
        self._epoch_batches = position
        self._epoch_records = torch.tensor(
            records or [0] * self._stream_workers(), dtype=torch.long, device=self._epoch_records.device
        )
        if self._resume_checkpoint is not None:
            # Trainer restores the RNG state only when it replays the data itself.
            self._load_rng_state(self._resume_checkpoint)
        self._epoch, self._start_position = epoch + 1, 0
        self._resume_records = self._resume_checkpoint = None

    def _count_batch(self, batch_size: int, skipped: torch.Tensor | None, worker: torch.Tensor | None) -> None:
        """Account a training batch's records to the DataLoader worker that produced it
        (the batch's "data_worker"; without one, round-robin order is assumed). No host sync."""
        records = self._epoch_records
        if worker is None:
            worker = torch.tensor(self._epoch_batches % records.numel())
        count = torch.full((1,), batch_size, dtype=torch.long, device=records.device)
        if skipped is not None:
            count += skipped.to(records.device)
        records.index_add_(0, worker.reshape(1).to(records.device).clamp_(0, records.numel() - 1), count)
        self._epoch_batches += 1

    def _resume_stream(self, checkpoint: str, data: dict | None, loader_workers: int | None = None) -> bool:
        """Position an iterable dataset where the checkpoint left it: the data epoch, the mask
        positions and, per worker, the records to pass over undecoded. Returns False when
        Trainer's own replay must be used (a checkpoint without the data position, or a
        dataset that cannot seek: not a `cjepa_hf.data` stream). `loader_workers`: the
        checkpoint's dataloader_num_workers (None in older checkpoints)."""
        if loader_workers is not None and loader_workers != self.args.dataloader_num_workers:
            # 1 -> 0 keeps one stream worker (_stream_workers), so the check below is silent,
            # yet the data is no longer read in a worker process.
            logger.warning(
                "checkpoint %s was written with dataloader_num_workers=%d, this run has %d: the stream is read by "
                "other worker processes, so the order of the data and any randomness drawn in DataLoader workers can "
                "differ from the interrupted run's; resume with dataloader_num_workers=%d for an exact resume",
                checkpoint, loader_workers, self.args.dataloader_num_workers, loader_workers,
            )
        if data is None or not hasattr(self.train_dataset, "resume_at"):
            logger.warning(
                "%s: %s; Trainer replays the stream from its start", checkpoint,
                "no data position (an older checkpoint)" if data is None
                else f"{type(self.train_dataset).__name__} has no resume_at(epoch, records) to seek with",
            )
            self._epoch, self._start_position = 0, 0
            return False
        rank, world = self.args.process_index, self.args.world_size
        self._epoch, self._resume_checkpoint = int(data["epoch"]), checkpoint
        if data["world_size"] != world or data["num_workers"] != self._stream_workers():
            logger.warning(
                "checkpoint %s was written by %d process(es) with %d stream worker(s) each, this run has %d and %d: "
                "resuming at the start of data epoch %d (part of that epoch is seen again)",
                checkpoint, data["world_size"], data["num_workers"], world, self._stream_workers(), self._epoch,
            )
            self._start_position, self._resume_records = 0, None
            return True
        self._start_position, self._resume_records = int(data["batches"]), [int(r) for r in data["records"][rank]]
        return True

    def _resume_position(self, global_step: int) -> None:
        """Where the data and the masks stand after `global_step` optimizer steps, for map-style
        datasets: Trainer skips batches in the sampler, so the collator starts at the number of
        skipped batches. (Iterable datasets: `_resume_stream`.)"""
        steps_per_epoch = max(len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps, 1)
        self._epoch = global_step // steps_per_epoch
        self._start_position = (global_step % steps_per_epoch) * self.args.gradient_accumulation_steps

    def _planned_steps(self) -> int | None:
        """The optimizer steps this run is to reach, as Trainer computes them: max_steps, or
        ceil(num_train_epochs * update steps per epoch) for a map-style dataset; None when it
        cannot be known here (a stream without max_steps, which Trainer refuses anyway)."""
        args = self.args
        if args.max_steps > 0:
            return args.max_steps
        if _is_iterable(self.train_dataset):
            return None
        batches, accumulation = len(self.get_train_dataloader()), args.gradient_accumulation_steps
        per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
        return math.ceil(args.num_train_epochs * per_epoch)

    def _already_complete(self, checkpoint: str, planned: int) -> TrainOutput:
        """Resuming a run that already took its `planned` steps: train nothing and write nothing
        (Trainer would take one more step and write checkpoint-{planned + 1}). The model and
        the trainer state are the checkpoint's, so what the caller saves or exports next is the
        finished model."""
        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        logger.warning(
            "the run is already complete: %s is at step %d of %d; nothing to train, no checkpoint written",
            checkpoint, self.state.global_step, planned,
        )
        losses = [h["loss"] for h in self.state.log_history if "loss" in h and math.isfinite(h["loss"])]
        train_loss = sum(losses) / len(losses) if losses else float("nan")  # the logged windows' mean
        return TrainOutput(self.state.global_step, train_loss, {"train_runtime": 0.0, "train_loss": train_loss})

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        if resume_from_checkpoint is True or resume_from_checkpoint == "latest":
            found = latest_valid_checkpoint(self.args.output_dir)
            if found is None:
                raise CorruptCheckpointError(f"no valid checkpoint to resume from in {self.args.output_dir!r}")
            resume_from_checkpoint = found
        skip_replay = False
        if resume_from_checkpoint:
            validate_checkpoint(resume_from_checkpoint)  # also the shapes of the JSON read below
            with open(os.path.join(resume_from_checkpoint, "cjepa_state.json")) as f:
                saved = json.load(f)
            with open(os.path.join(resume_from_checkpoint, "trainer_state.json")) as f:
                global_step = json.load(f)["global_step"]
            self._nonfinite_total.fill_(saved["nonfinite_steps"])
            self._nonfinite_logged = saved["nonfinite_steps"]
            self._skipped_records.fill_(saved["skipped_records"])
            if self.online_probe is not None:
                self.online_probe.load(resume_from_checkpoint)
                self._probe_sums.copy_(torch.tensor(saved.get("online_probe_sums", [0.0, 0.0, 0.0])))
            planned = self._planned_steps()
            if planned is not None and global_step >= planned:
                return self._already_complete(resume_from_checkpoint, planned)
            if not _is_iterable(self.train_dataset):
                self._resume_position(global_step)
            elif self.args.ignore_data_skip:
                self._epoch, self._start_position = 0, 0  # the user asked for no data skip
            else:
                # Trainer would replay the stream from epoch 0, decoding every skipped batch,
                # and restart the next epoch at its beginning: the stream seeks itself instead.
                skip_replay = self._resume_stream(
                    resume_from_checkpoint, saved.get("data"), saved.get("dataloader_num_workers")
                )
        if not skip_replay:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        self.args.ignore_data_skip = True
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self.args.ignore_data_skip = False

    # ---------------------------------------------------------------- the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        skipped = inputs.pop("num_skipped", None)
        data_worker = inputs.pop("data_worker", None)
        labels = inputs.pop("labels", None)
        if skipped is not None and model.training:
            self._skipped_records += skipped.to(self._skipped_records.device)
        if model.training:
            self._count_batch(inputs["pixel_values"].shape[0], skipped, data_worker)
        outputs = model(
            pixel_values=inputs["pixel_values"],
            context_indices=inputs["context_indices"],
            target_indices=inputs["target_indices"],
            gather_distributed=self.accelerator.num_processes > 1,
        )
        loss = outputs.loss
        if model.training:
            self._step_nonfinite = torch.maximum(self._step_nonfinite, (~torch.isfinite(loss.detach())).float())
            for key in (
                "jepa_loss", "vicreg_loss", "vicreg_invariance", "vicreg_variance", "vicreg_covariance",
                "encoder_vicreg_loss", "encoder_variance", "encoder_covariance",
            ):
                value = getattr(outputs, key)
                if value is not None:
                    self._metric_sums[key] = self._metric_sums.get(key, 0.0) + value.detach().float()
            self._metric_count += 1
            self._last_target_features = outputs.target_pooled_output.detach()
            if self.online_probe is not None and labels is not None:
                self._probe_step(outputs.target_pooled_output, labels)
        return (loss, outputs) if return_outputs else loss

    def _probe_step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One online-probe update on the batch of every process (gathered, so that all
        copies of the probe see the same data and stay equal)."""
        features, labels = features.detach(), labels.to(features.device)
        if self.accelerator.num_processes > 1:
            features, labels = self.accelerator.gather(features), self.accelerator.gather(labels)
        loss, correct, used = self.online_probe.step(features, labels)
        self._probe_sums += torch.stack([loss * labels.numel(), correct, used * labels.numel()])

    # ---------------------------------------------------------------- online evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The k-NN monitor: encode the `KNNMonitorSet` with the target encoder (each process
        its share, features gathered), score its queries against its memory bank with
        `cjepa_hf.evaluation.knn_accuracy` and, when there is one, with the online probe.
        Logs `{prefix}_knn_top1`, `{prefix}_linear_top1` and `{prefix}_runtime`."""
        from .evaluation import encode, knn_accuracy

        monitor = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(monitor, KNNMonitorSet):
            raise TypeError(
                f"CJEPATrainer evaluates with a cjepa_hf.online_eval.KNNMonitorSet, got {type(monitor).__name__}"
            )
        start = time.time()
        encoder = self.accelerator.unwrap_model(self.model).target_encoder
        device = self.args.device
        positions, features, labels = [], [], []
        with torch.no_grad():
            for index, pixels, y in monitor.batches(
                self.args.process_index, self.args.world_size, self.args.per_device_eval_batch_size
            ):
                features.append(encode(encoder, pixels.to(device)).float())
                positions.append(index.to(device))
                labels.append(y.to(device))
        dim = encoder.config.hidden_size
        positions = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long, device=device)
        features = torch.cat(features) if features else torch.zeros(0, dim, device=device)
        labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
        if self.accelerator.num_processes > 1:  # shares differ by at most one example: pad, gather, drop
            positions = self.accelerator.gather(self.accelerator.pad_across_processes(positions, pad_index=-1))
            features = self.accelerator.gather(self.accelerator.pad_across_processes(features))
            labels = self.accelerator.gather(self.accelerator.pad_across_processes(labels))
            keep = positions >= 0
            positions, features, labels = positions[keep], features[keep], labels[keep]
        order = positions.argsort()
        positions, features, labels = positions[order], features[order], labels[order]
        bank = positions < monitor.bank_size
        metrics = {
            f"{metric_key_prefix}_knn_top1": knn_accuracy(
                features[bank].cpu(), labels[bank].cpu(), features[~bank].cpu(), labels[~bank].cpu(),
                k=self.args.knn_k, temperature=self.args.knn_temperature,
            ),
        }
        if self.online_probe is not None:
            metrics[f"{metric_key_prefix}_linear_top1"] = self.online_probe.accuracy(features[~bank], labels[~bank])
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metric_count:  # a training log: add our figures
            for key, total in self._metric_sums.items():
                value = total / self._metric_count
                if self.accelerator.num_processes > 1:
                    value = self.accelerator.reduce(value.reshape(1), reduction="mean")[0]
                logs[key] = value.item()
            self._metric_sums, self._metric_count = {}, 0
            logs.update({k: float(v) for k, v in self._current.items()})
            skipped = self._skipped_records
            if self.accelerator.num_processes > 1:
                skipped = self.accelerator.reduce(skipped.reshape(1).clone(), reduction="sum")[0]
            logs["skipped_records"] = int(skipped.item())
            nonfinite = int(self._nonfinite_total.item())
            logs["nonfinite_steps"] = nonfinite
            if nonfinite > self._nonfinite_logged and math.isfinite(logs["loss"]):
                # Trainer's logging_nan_inf_filter replaces a non-finite loss by the mean of the
                # window's earlier ones (0 right after a log): a skipped step would look like a
                # perfect one. The window's mean loss is not finite; say so (a float NaN, which
                # Trainer's json.dumps writes and json.loads reads back).
                logs["loss"] = float("nan")
            self._nonfinite_logged = nonfinite
            if self.online_probe is not None:
                loss_sum, correct, seen = self._probe_sums.tolist()
                if seen > 0:
                    logs["online_probe_loss"] = loss_sum / seen
                    logs["online_linear_top1"] = correct / seen
                self._probe_sums.zero_()
            if self.args.collapse_monitor and self._last_target_features is not None:
                features = self._last_target_features
                if self.accelerator.num_processes > 1:
                    features = self.accelerator.gather(features)
                if torch.isfinite(features).all():
                    logs["target_feature_std"] = feature_std(features).item()
                    logs["target_effective_rank"] = effective_rank(features).item()
                    # Mean-pooled features share a large mean direction that dominates the raw
                    # RankMe even at random init; the centred rank shows the spread around it.
                    logs["target_effective_rank_centered"] = effective_rank(features - features.mean(dim=0)).item()
                else:  # the batch of a skipped non-finite step
                    for key in ("target_feature_std", "target_effective_rank", "target_effective_rank_centered"):
                        logs[key] = float("nan")
        super().log(logs, start_time)

    def _check_nonfinite(self) -> None:
        consecutive = int(self._consecutive_nonfinite.item())
        if consecutive >= self.args.max_consecutive_nonfinite:
            model = self.accelerator.unwrap_model(self.model)
            finite = all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
            where = (
                "their updates were skipped and no NaN weights were written" if finite else
                "their updates were skipped, but the weights themselves are no longer finite (an update with a finite "
                "loss overflowed them): checkpoints written since then fail validate_checkpoint; resume from the "
                "latest valid one"
            )
            raise FloatingPointError(
                f"{consecutive} consecutive non-finite losses (max_consecutive_nonfinite="
                f"{self.args.max_consecutive_nonfinite}) at step {self.state.global_step}: {where}; lower the "
                "learning rate or check the data"
            )

    # ---------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint, then cjepa_state.json, which marks it complete, then rotation.

        Trainer deletes old checkpoints (save_total_limit) at the end of its own save, before
        cjepa_state.json exists: a kill in between left only an incomplete checkpoint. Here its
        rotation is off during its save and runs after the marker is written."""
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        limit = self.args.save_total_limit
        marker = os.path.join(folder, "cjepa_state.json")
        if self.args.should_save and os.path.exists(marker):
            # A folder of this step from an earlier run (resumed from an older checkpoint):
            # until the new save completes, its files are a mix, so it must not look complete.
            os.remove(marker)
        try:
            self.args.save_total_limit = None
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.save_total_limit = limit
            data = None
            if _is_iterable(self.train_dataset):  # every process takes part in the gather
                records = self._epoch_records
                if self.accelerator.num_processes > 1:
                    records = self.accelerator.gather(records.reshape(1, -1))
                data = {
                    "epoch": self._epoch - 1,  # the epoch in progress (_begin_epoch moved past it)
                    "batches": self._epoch_batches,
                    "world_size": self.args.world_size,
                    "num_workers": self._stream_workers(),
                    "records": records.reshape(self.args.world_size, -1).tolist(),
                }
            # Every process's files (rng_state_{rank}.pth) exist before the checkpoint is marked complete.
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                state = {
                    "nonfinite_steps": int(self._nonfinite_total.item()),
                    "skipped_records": int(self._skipped_records.item()),
                    # beside "data", whose layout (stream workers) 0 and 1 workers share
                    "dataloader_num_workers": self.args.dataloader_num_workers,
                }
                if data is not None:
                    state["data"] = data  # the stream's position, for an exact resume
                if self.online_probe is not None:
                    self.online_probe.save(folder)
                    state["online_probe_sums"] = self._probe_sums.tolist()
                _write_json_atomically(marker, state)
        except (OSError, RuntimeError, SafetensorError) as error:
            full = _as_disk_full(error, folder)
            if full is None or full is error:
                raise
            raise full from error
        if self.args.should_save:
            self._rotate_checkpoints_after_save(run_dir, folder)

    def _rotate_checkpoints_after_save(self, run_dir: str, newest: str) -> None:
        """Keep at most save_total_limit checkpoint-N folders in run_dir, deleting the lowest
        steps first; never the one just completed (`newest`) nor the best one. (Trainer keeps
        the newest by mtime or step, which can be a stale, incomplete later folder of an
        interrupted run.)"""
        limit = self.args.save_total_limit
        if limit is None or limit <= 0:
            return
        pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
        found = sorted(
            (int(m.group(1)), os.path.join(run_dir, name))
            for name in os.listdir(run_dir)
            if (m := pattern.match(name)) and os.path.isdir(os.path.join(run_dir, name))
        )
        protected = {os.path.abspath(newest)}
        if self.state.best_model_checkpoint is not None:
            protected.add(os.path.abspath(self.state.best_model_checkpoint))
        remaining = len(found)
        for _, path in found:
            if remaining <= max(limit, len(protected)):
                break
            if os.path.abspath(path) in protected:
                continue
            logger.info("deleting older checkpoint %s (save_total_limit=%d)", path, limit)
            shutil.rmtree(path, ignore_errors=True)
            remaining -= 1

    def create_model_card(self, model_name: str | None = None, dataset: str | list[str] | None = None, **kwargs: Any) -> None:
        """The C-JEPA card (cjepa_hf.hub) instead of transformers' generic one: Trainer's
        `push_to_hub` writes it to output_dir/README.md before uploading. Only facts of this
        run go in: its config, arguments and trainer state; no result numbers."""
        if not self.is_world_process_zero():
            return
        from dataclasses import asdict

        from .hub import render_model_card

        config = self.accelerator.unwrap_model(self.model).config
        name = model_name or self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        card = render_model_card(
            config, model_name=name, model_path=self.args.output_dir, training_args=self.args.to_dict(), datasets=dataset,
            image_processor=self.processing_class,
            trainer_state=json.loads(json.dumps(asdict(self.state), default=str)),
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's save plus a readable `training_args.json` (Trainer's `training_args.bin` is a
        pickle; release export and model cards read the JSON instead). Checkpoints come here too."""
        folder = output_dir if output_dir is not None else self.args.output_dir
        try:
            super().save_model(output_dir, _internal_call)
            if self.args.should_save:
                with open(os.path.join(folder, "training_args.json"), "w") as f:
                    f.write(self.args.to_json_string())
        except (OSError, RuntimeError, SafetensorError) as error:
            full = _as_disk_full(error, folder)
            if full is None or full is error:
                raise
            raise full from error


def _write_json_atomically(path: str, obj: Any) -> None:
    """Write JSON to path.tmp, then rename it to path: path is complete or absent, never a
    half-written file (a kill or a full disk mid-write)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


_DISK_FULL_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def _as_disk_full(error: BaseException, folder: str) -> DiskFullError | None:
    """A `DiskFullError` naming `folder` when `error` (from writing it) came from a full disk:
    an OSError with errno ENOSPC/EDQUOT, safetensors' error text, or a failed write of
    torch.save (its zip writer drops the OS reason) with less than 1 MiB left. Else None."""
    if isinstance(error, DiskFullError):
        return error
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    full = full or any(text in str(error) for text in _DISK_FULL_TEXT)
    free = None
    probe = folder
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(probe or ".").free
    if not full and not (isinstance(error, RuntimeError) and free is not None and free < 1 << 20):
        return None
    left = f" ({free:,} bytes free)" if free is not None else ""
    return DiskFullError(
        errno.ENOSPC,
        f"the disk is full{left}: no space left while writing {folder!r} ({type(error).__name__}: {error}). "
        "That checkpoint is incomplete and is never resumed from (validate_checkpoint rejects it); free some space "
        "(or lower save_total_limit) and resume with resume_from_checkpoint='latest'",
    )


def _is_datasets_iterable(dataset: Any) -> bool:
    try:
        from datasets import IterableDataset as HFIterableDataset
    except ImportError:  # pragma: no cover
        return False
    return isinstance(dataset, HFIterableDataset)


def _is_iterable(dataset: Any) -> bool:
    return isinstance(dataset, IterableDataset) or _is_datasets_iterable(dataset)


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
