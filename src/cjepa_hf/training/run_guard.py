"""What guards a run from the outside: who owns its output folder, what a stop signal does, and whether it did the work it was asked for.

- `hold_output_dir`: the output folder is created (or refused, in one line) and checked
  writable, then locked for this run (`.cjepa_run.lock`: pid, host, start time). A second run
  into it refuses, naming the first's pid and host; a lock left by a dead process of this host
  (or by an earlier attempt of this requeued SLURM job, on any node) is taken over. A fresh
  run into a folder that holds another run's checkpoints refuses unless it resumes
  (`resume_from_checkpoint`) or overwrites (`overwrite_output_dir`: the old run's checkpoints
  and exports are deleted first).
- `stop_signals`: while training, SIGTERM (what SLURM and cloud schedulers send before a kill)
  and SIGINT only raise a flag; at the next optimizer-step boundary every process agrees on it
  (an all-reduce), a checkpoint is saved and `check_run_finished` ends the run with
  `RunInterrupted` (a SystemExit: exit status 143 for SIGTERM, 130 for SIGINT, 128 + the
  signal's number). A second signal of the same kind stops at once, without a save.
- `check_run_finished`: a run that ended before its planned steps (the data ran out, no record
  was usable) raises `IncompleteRunError`: a run never exits 0 without the steps it was asked
  for, and nothing is exported after it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import socket
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

if TYPE_CHECKING:
    from .trainer import CJEPATrainer

logger = logging.getLogger(__name__)

LOCK_FILE = ".cjepa_run.lock"
# What a run writes into its output folder besides checkpoint-N folders (deleted by overwrite_output_dir).
RUN_OUTPUTS = (
    "encoder",
    "model.safetensors",
    "config.json",
    "preprocessor_config.json",
    "training_args.bin",
    "training_args.json",
    "trainer_state.json",
    "pretrain_summary.json",
    "training_curves.png",
    "online_probe.safetensors",
    "online_probe_optimizer.pt",
    "README.md",
)


class OutputDirInUseError(RuntimeError):
    """The output folder is locked by another live run, or holds another run's checkpoints."""


class IncompleteRunError(RuntimeError):
    """Training ended before the steps it was asked for: nothing is exported, the exit status is not 0."""


class RunInterrupted(SystemExit):
    """SIGTERM / SIGINT stopped the run after saving a checkpoint. A SystemExit whose code is
    128 + the signal's number (143 for SIGTERM, 130 for SIGINT): what a scheduler requeues on."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message

    def __str__(self) -> str:
        return self.message


# ----------------------------------------------------------------------------- the output folder
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_lock(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}  # half-written or unreadable: treated as a lock of unknown owner


def make_output_dir(output_dir: str) -> None:
    """Create `output_dir` and check that a file can be written in it; one line when not."""
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise OSError(error.errno, f"cannot create output_dir {output_dir!r}: {error.strerror or error}") from None
    if not os.path.isdir(output_dir):
        raise NotADirectoryError(f"output_dir {output_dir!r} exists and is not a folder")
    probe = os.path.join(output_dir, f".write-test-{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise OSError(
            error.errno, f"output_dir {output_dir!r} is not writable ({error.strerror or error}): choose another --output_dir"
        ) from None


def _slurm_job() -> dict[str, Any]:
    """The SLURM job and its restart count (a requeued job keeps its id, and counts up)."""
    job = os.environ.get("SLURM_JOB_ID")
    return {"slurm_job_id": job, "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0"))} if job else {}


def _earlier_attempt_of_this_job(holder: dict[str, Any]) -> bool:
    """The lock of an earlier attempt of this requeued SLURM job (killed, maybe on another node):
    SLURM never runs two attempts of one job at once."""
    job = _slurm_job()
    if not job or holder.get("slurm_job_id") != job["slurm_job_id"]:
        return False
    earlier = holder.get("slurm_restart_count")
    return isinstance(earlier, int) and earlier < job["slurm_restart_count"]


def acquire_lock(output_dir: str) -> str:
    """Write `output_dir/.cjepa_run.lock` for this process (exclusive create); returns its path.
    A lock whose pid is dead on this host, or that an earlier attempt of this requeued SLURM job
    left, is taken over (with a warning); any other lock is refused."""
    path = os.path.join(output_dir, LOCK_FILE)
    host, pid = socket.gethostname(), os.getpid()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            other_pid, other_host = holder.get("pid"), holder.get("host")
            stale = other_host == host and isinstance(other_pid, int) and other_pid != pid and not _pid_alive(other_pid)
            if stale or _earlier_attempt_of_this_job(holder):
                logger.warning("taking over %s: its run (pid %s on %s) is no longer running", path, other_pid, other_host)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            raise OutputDirInUseError(
                f"output_dir {output_dir!r} is in use by another run: pid {other_pid} on host {other_host}, started "
                f"{holder.get('started', '?')} ({path}). Wait for it to end, or choose another --output_dir; if that run "
                "is gone (another host's crashed run), delete the lock file"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": pid, "host": host, "started": datetime.datetime.now().isoformat(timespec="seconds"), **_slurm_job()}, f)
        return path
    raise OutputDirInUseError(f"could not take the lock {path!r}: another process keeps creating it")


def release_lock(path: str) -> None:
    """Remove the lock when it is still this process's."""
    holder = _read_lock(path)
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def checkpoint_folders(output_dir: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(output_dir)
        if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and os.path.isdir(os.path.join(output_dir, name))
    )


def claim_fresh_run(output_dir: str, resume: bool, overwrite: bool) -> None:
    """A fresh run (no resume) into a folder holding checkpoints of another run refuses, unless
    `overwrite`: then the old run's checkpoints and exports are deleted."""
    if resume:
        return
    old = checkpoint_folders(output_dir)
    if not old:
        return
    if not overwrite:
        raise OutputDirInUseError(
            f"output_dir {output_dir!r} holds another run's checkpoints ({', '.join(old[:3])}{', ...' if len(old) > 3 else ''}): "
            "pass --resume_from_checkpoint latest to continue that run, --overwrite_output_dir true to delete it and "
            "start again, or choose another --output_dir"
        )
    logger.warning("overwrite_output_dir: deleting the earlier run's %s in %s", ", ".join(old), output_dir)
    for name in old:
        shutil.rmtree(os.path.join(output_dir, name))
    for name in RUN_OUTPUTS:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


@contextlib.contextmanager
def hold_output_dir(args: Any):
    """The run's output folder, for the duration of the block: created and checked writable on
    every process that saves (`args.should_save`), locked and claimed (`claim_fresh_run`) by the
    global main process. `args`: the run's `CJEPATrainingArguments`."""
    output_dir = args.output_dir
    if args.should_save:
        make_output_dir(output_dir)
    if args.process_index != 0:
        yield
        return
    path = acquire_lock(output_dir)
    try:
        claim_fresh_run(output_dir, bool(args.resume_from_checkpoint), args.overwrite_output_dir)
        yield
    finally:
        release_lock(path)


# ----------------------------------------------------------------------------- stop signals
class StopRequest:
    """The stop signal received by this process (0: none), and the one every process agreed on."""

    def __init__(self) -> None:
        self.received = 0
        self.agreed = 0
        self.bad_at_start: Counter[str] = Counter()

    def start(self) -> None:
        """A train() call begins: no signal yet; the bad records this process skipped so far, by reason."""
        from ..data.decoding import BAD_RECORDS

        self.received = self.agreed = 0
        self.bad_at_start = Counter(BAD_RECORDS.by_reason)

    def bad_records(self) -> Counter[str]:
        """Bad records skipped in this process (with dataloader_num_workers 0: all of them) since
        `start`, by reason (`cjepa_hf.data.BadRecord.reason`)."""
        from ..data.decoding import BAD_RECORDS

        return Counter(BAD_RECORDS.by_reason) - self.bad_at_start

    def handler(self, signum: int, frame: Any) -> None:
        if self.received == signum:  # the second one: stop now, without a save
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        logger.warning(
            "%s received: saving a checkpoint at the end of this optimizer step, then stopping (send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def agree(self, accelerator: Any) -> int:
        """The signal to stop on, the same on every process (the largest received: an all-reduce
        at every step boundary when there are several processes)."""
        if accelerator.num_processes > 1:
            flag = torch.tensor(float(self.received), device=accelerator.device)
            self.agreed = int(accelerator.reduce(flag, reduction="max").item())
        else:
            self.agreed = self.received
        return self.agreed


@contextlib.contextmanager
def stop_signals(request: StopRequest):
    """SIGTERM and SIGINT raise `request`'s flag during the block (main thread only: elsewhere
    signal handlers cannot be installed and the defaults stay)."""
    if threading.current_thread() is not threading.main_thread():
        request.start()
        yield
        return
    request.start()
    previous = {s: signal.signal(s, request.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stop_at_step_end(trainer: CJEPATrainer, control: Any) -> None:
    """At an optimizer-step boundary: when a stop was asked for on any process, save this step's
    checkpoint (unless this step already saves one) and stop training."""
    if trainer.stop_request.agree(trainer.accelerator):
        control.should_save = True
        control.should_training_stop = True


# ----------------------------------------------------------------------------- the end of a run
def check_run_finished(trainer: CJEPATrainer, planned: int | None) -> None:
    """After training: `RunInterrupted` when a stop signal ended it (its checkpoint saved),
    `IncompleteRunError` when fewer than `planned` steps were taken."""
    state, args = trainer.state, trainer.args
    step = state.global_step
    signum = trainer.stop_request.agreed
    if signum:
        name = signal.Signals(signum).name
        saved = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        message = (
            f"stopped by {name} at step {step} of {planned if planned is not None else '?'}: checkpoint {saved} is saved; "
            f"run the same command with --resume_from_checkpoint latest to continue (exit status {128 + signum})"
        )
        logger.error(message)
        raise RunInterrupted(signum, message)
    if planned is None or step >= planned:
        return
    bad = trainer.stop_request.bad_records()
    # a stream whose every record was bad cannot pass its count on in num_skipped: this process's count
    skipped = max(int(trainer.step_state.skipped_records.item()), sum(bad.values()))
    reasons = f" ({', '.join(f'{k}: {v}' for k, v in sorted(bad.items()))})" if bad else ""
    raise IncompleteRunError(
        f"training stopped at step {step} of the {planned} asked for: the training data ran out (an epoch gave no "
        f"batch; {skipped} bad record(s) skipped{reasons}). Nothing is exported. Check --dataset, --split and "
        "--image_column, or lower --max_steps"
    )


def account_skipped_steps(trainer: CJEPATrainer, result: TrainOutput, nonfinite_before: int) -> TrainOutput:
    """`train_loss` averaged over the steps that counted: Trainer's mean counts each skipped
    non-finite step as a loss of 0. A run with skipped steps says so (a warning), and the metrics
    carry `nonfinite_steps` (this call's), `skipped_records` (the run's) and `skipped_by_reason`
    (the bad records this process skipped in this call, per `BadRecord.reason`; DataLoader
    workers count theirs in their own logs)."""
    steps = trainer.state.global_step - getattr(trainer, "_initial_global_step", 0)
    nonfinite = int(trainer.step_state.nonfinite_total.item()) - nonfinite_before
    metrics = dict(result.metrics)
    loss = result.training_loss
    if nonfinite and steps > 0:
        counted = steps - nonfinite
        loss = loss * steps / counted if counted > 0 else float("nan")
        logger.warning(
            "%d of the %d steps of this run had a non-finite loss and were skipped (no update): train_loss %.4g is the mean "
            "of the %d steps that counted",
            nonfinite,
            steps,
            loss,
            counted,
        )
        metrics["train_loss"] = loss
    metrics["nonfinite_steps"] = nonfinite
    metrics["skipped_records"] = int(trainer.step_state.skipped_records.item())
    bad = trainer.stop_request.bad_records()  # by reason: those this process decoded (all, without DataLoader workers)
    if bad:
        metrics["skipped_by_reason"] = dict(sorted(bad.items()))
        logger.warning("skipped %d bad record(s) in this process, by reason: %s", sum(bad.values()), metrics["skipped_by_reason"])
    return TrainOutput(result.global_step, loss, metrics)


__all__ = [
    "account_skipped_steps",
    "LOCK_FILE",
    "IncompleteRunError",
    "OutputDirInUseError",
    "RunInterrupted",
    "StopRequest",
    "acquire_lock",
    "check_run_finished",
    "claim_fresh_run",
    "hold_output_dir",
    "make_output_dir",
    "release_lock",
    "stop_at_step_end",
    "stop_signals",
]
