"""Checkpoint integrity: what makes a Trainer checkpoint resumable, how it is written, and how a full disk is reported.

`cjepa_state.json` is written last (atomically, `write_json_atomically`) and marks a checkpoint
complete; old checkpoints are rotated (`rotate_checkpoints`) only after it, so a kill never
leaves nothing to resume. `validate_checkpoint` checks every file a resume reads (sizes,
archives, JSON shapes, finite weights read with `safetensors.safe_open`);
`latest_valid_checkpoint` skips the ones that fail. FSDP checkpoints hold shards instead of
model.safetensors and optimizer.pt (`pytorch_model_fsdp_0/`, `optimizer_0/`, written by
torch.distributed.checkpoint): their byte ranges are checked against their metadata and the
weights read back whole and required finite. A full disk during a save becomes a
`DiskFullError` (an OSError, errno ENOSPC) naming the checkpoint (`as_disk_full`). Nothing
non-finite is written: `refuse_nonfinite_save` stops a save whose weights or optimizer state
hold a NaN or an infinity (an update with a finite loss can overflow them) before any file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import struct
import zipfile
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers.trainer_callback import TrainerState
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..online_eval import PROBE_OPTIMIZER, PROBE_WEIGHTS
from .fsdp import MODEL_DIR, OPTIMIZER_DIR, read_sharded_model

logger = logging.getLogger(__name__)

STATE_FILE = "cjepa_state.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


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
        for k, v in header.items()
        if k != "__metadata__"
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
                    raise CorruptCheckpointError(f"{path}: tensor {key} holds non-finite values ({bad} of {tensor.numel()} are NaN or inf)")
    except SafetensorError as error:
        raise CorruptCheckpointError(f"{path} cannot be read: {error}") from None


def _check_shards(path: str, weights: bool) -> None:
    """A torch.distributed.checkpoint folder (FSDP shards): its .metadata readable, every byte
    range it names inside a file that long; with `weights`, every tensor read and required finite."""
    from torch.distributed.checkpoint import FileSystemReader

    if not os.path.isfile(os.path.join(path, ".metadata")):
        raise CorruptCheckpointError(f"{path} lacks .metadata (its sharded save did not complete)")
    try:
        metadata = FileSystemReader(path).read_metadata()
    except Exception as error:  # any unpickling failure: the file is unusable
        raise CorruptCheckpointError(f"{path}/.metadata cannot be read: {error}") from None
    ends: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(ends.items()):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CorruptCheckpointError(f"{path} lacks the shard file {name}")
        if os.path.getsize(file) < end:
            raise CorruptCheckpointError(f"{file} is truncated: expected at least {end} bytes, found {os.path.getsize(file)}")
    if not weights:
        return
    try:
        state = read_sharded_model(path)
    except Exception as error:  # a shard that does not decode
        raise CorruptCheckpointError(f"{path} cannot be read: {error}") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CorruptCheckpointError(f"{path}: tensor {key} holds non-finite values ({bad} of {tensor.numel()} are NaN or inf)")


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
        raise CorruptCheckpointError(f"{path}: dataloader_num_workers must be an integer >= 0, got {state['dataloader_num_workers']!r}")
    sums = state.get("online_probe_sums")
    if sums is not None and not (
        isinstance(sums, list) and len(sums) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums)
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
        isinstance(records, list)
        and len(records) == world
        and all(isinstance(r, list) and len(r) == workers and all(_is_count(v) for v in r) for r in records)
    ):
        raise CorruptCheckpointError(
            f"{path}: data.records must be {world} list(s) of {workers} integer(s) >= 0 (records read per process "
            f"and stream worker), got {records!r}"
        )


def _check_rng_state(path: str) -> None:
    """Trainer restores python, numpy and cpu RNG states from it (torch.load, weights_only)."""
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
    the online probe's files when present. An FSDP checkpoint's model and optimizer shards
    (`pytorch_model_fsdp_0/`, `optimizer_0/`) stand for model.safetensors and optimizer.pt."""
    if not os.path.isdir(folder):
        raise CorruptCheckpointError(f"checkpoint {folder!r} does not exist")
    sharded = os.path.isdir(os.path.join(folder, MODEL_DIR))
    weights = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and f != PROBE_WEIGHTS)
    if not weights and not sharded:
        raise CorruptCheckpointError(f"checkpoint {folder!r} has no *.safetensors weights (nor FSDP shards in {MODEL_DIR}/)")
    if sharded and not os.path.isdir(os.path.join(folder, OPTIMIZER_DIR)):
        raise CorruptCheckpointError(f"checkpoint {folder!r} has FSDP model shards but lacks {OPTIMIZER_DIR}/ (the optimizer's)")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        weight_map = _read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CorruptCheckpointError(f"{index} must hold a weight_map object of tensor name -> shard file")
        missing = sorted(set(weight_map.values()) - set(weights))
        if missing:
            raise CorruptCheckpointError(f"checkpoint {folder!r} lacks weight shards {missing}")
    required = ("scheduler.pt", "trainer_state.json", "config.json", "cjepa_state.json")
    for name in required if sharded else ("optimizer.pt", *required):
        if not os.path.exists(os.path.join(folder, name)):
            raise CorruptCheckpointError(f"checkpoint {folder!r} lacks {name}")
    # The cheap checks first: a folder that fails them is not worth reading the weights of.
    _check_trainer_state(os.path.join(folder, "trainer_state.json"))
    _read_json_object(os.path.join(folder, "config.json"))
    _check_cjepa_state(os.path.join(folder, "cjepa_state.json"))
    rng_states = sorted(f for f in os.listdir(folder) if _RNG_STATE.match(f))
    archives = ["scheduler.pt", *rng_states] if sharded else ["optimizer.pt", "scheduler.pt", *rng_states]
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
    if sharded:
        _check_shards(os.path.join(folder, OPTIMIZER_DIR), weights=False)
        _check_shards(os.path.join(folder, MODEL_DIR), weights=True)
    for name in weights:
        _check_safetensors(os.path.join(folder, name))
    if os.path.exists(os.path.join(folder, PROBE_WEIGHTS)):
        _check_safetensors(os.path.join(folder, PROBE_WEIGHTS))


def latest_valid_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder in output_dir that passes `validate_checkpoint`;
    corrupt ones are skipped with a warning naming the problem."""
    if not os.path.isdir(output_dir):
        return None
    found = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))), reverse=True)
    for _, name in found:
        folder = os.path.join(output_dir, name)
        try:
            validate_checkpoint(folder)
        except CorruptCheckpointError as error:
            logger.warning("skipping checkpoint %s: %s", folder, error)
            continue
        return folder
    return None


def rotate_checkpoints(run_dir: str, limit: int | None, protected: list[str | None]) -> None:
    """Keep at most `limit` checkpoint-N folders in run_dir, deleting the lowest steps first;
    never one of `protected` (the one just completed, the best one). (Trainer keeps the newest
    by mtime or step, which can be a stale, incomplete later folder of an interrupted run.)"""
    if limit is None or limit <= 0:
        return
    found = sorted(
        (int(m.group(1)), os.path.join(run_dir, name))
        for name in os.listdir(run_dir)
        if (m := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(run_dir, name))
    )
    keep = {os.path.abspath(p) for p in protected if p is not None}
    remaining = len(found)
    for _, path in found:
        if remaining <= max(limit, len(keep)):
            break
        if os.path.abspath(path) in keep:
            continue
        logger.info("deleting older checkpoint %s (save_total_limit=%d)", path, limit)
        shutil.rmtree(path, ignore_errors=True)
        remaining -= 1


def nonfinite_tensors(model: torch.nn.Module, optimizer: Any = None) -> list[str]:
    """Names of this process's floating-point tensors that hold a NaN or an infinity: the
    model's state dict (FSDP: this process's shards) and the optimizer's state, named
    `optimizer <key> of <parameter>`. One host sync."""
    names = {id(p): n for n, p in model.named_parameters()}
    found = list(model.state_dict().items())
    for param, state in optimizer.state.items() if optimizer is not None else ():
        found += [(f"optimizer {key} of {names.get(id(param), '?')}", t) for key, t in state.items() if torch.is_tensor(t)]
    found = [(name, getattr(t, "_local_tensor", t)) for name, t in found]
    found = [(name, t) for name, t in found if t.is_floating_point() and t.numel()]
    if not found:
        return []
    finite = torch.stack([torch.isfinite(t).all().to(found[0][1].device) for _, t in found]).tolist()
    return [name for (name, _), ok in zip(found, finite) if not ok]


def refuse_nonfinite_save(folder: str, accelerator: Any, model: torch.nn.Module, optimizer: Any = None) -> None:
    """Raise `FloatingPointError` before anything of `folder` is written when a weight (or, with
    `optimizer`, an optimizer state) of any process holds a NaN or an infinity. Every process
    calls it (FSDP shards differ between processes; their counts are summed)."""
    bad = nonfinite_tensors(model, optimizer)
    count = torch.tensor(float(len(bad)), device=accelerator.device)
    if accelerator.num_processes > 1:
        count = accelerator.reduce(count, reduction="sum")
    if count.item():
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "") if bad else "on another process"
        raise FloatingPointError(
            f"not writing {folder!r}: {int(count.item())} tensor(s) hold NaN or infinity ({shown}), and nothing "
            "non-finite is ever saved. An update overflowed them (the learning rate is likely too high): resume from "
            "the latest checkpoint (resume_from_checkpoint='latest', whose weights are finite) with a lower one"
        )


def write_json_atomically(path: str, obj: Any) -> None:
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


def as_disk_full(error: BaseException, folder: str) -> DiskFullError | None:
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


@contextlib.contextmanager
def disk_full_reported(folder: str):
    """Turn an error from writing `folder` that came from a full disk into a `DiskFullError`."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        full = as_disk_full(error, folder)
        if full is None or full is error:
            raise
        raise full from error


__all__ = [
    "STATE_FILE",
    "CorruptCheckpointError",
    "DiskFullError",
    "as_disk_full",
    "disk_full_reported",
    "latest_valid_checkpoint",
    "nonfinite_tensors",
    "refuse_nonfinite_save",
    "rotate_checkpoints",
    "validate_checkpoint",
    "write_json_atomically",
]
