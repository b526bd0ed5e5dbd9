"""Resuming a run: what the checkpoint must agree with, what may change, and where the data stands.

A checkpoint records the model config (`config.json`), the training arguments
(`training_args.json`) and the script's own arguments (`cjepa_state.json` "run_arguments": the
data source, split, columns). `check_resume_config` refuses a resume whose model config differs
(architecture, masking or objective: the weights, optimizer state and losses would not be the
ones trained), naming every changed field and the way out. `report_changed_arguments` logs
every other changed argument, each honoured from the resumed step on (the learning-rate
schedule, AdamW's betas and epsilon and the save, log and evaluation intervals included:
`honour_new_settings`; Trainer alone would keep the checkpoint's).

`seek_stream` positions a stream where the checkpoint left it; `continue_after_resumed_epoch`
makes an exact epoch boundary an ordinary resume point (the resumed epoch is empty: the next
one starts) and refuses a resume past the end of the data; `finished_run_output` answers a
resume of a run that already took its steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import TYPE_CHECKING, Any

import torch
from transformers import PretrainedConfig
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import TrainOutput

from .data_hooks import SeekableStream, stream_num_examples

if TYPE_CHECKING:
    from .trainer import CJEPATrainer

logger = logging.getLogger(__name__)

# Training arguments that say where and how a run reports, not what it trains: never compared.
_BOOKKEEPING = {
    "output_dir",
    "logging_dir",
    "run_name",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "disable_tqdm",
    "report_to",
    "local_rank",
    "hub_token",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_private_repo",
    "logging_first_step",
    "use_cpu",
}


def _model_fields(config: PretrainedConfig) -> dict[str, Any]:
    """The model's own config fields (not transformers' generic ones), JSON-normalised."""
    generic = set(PretrainedConfig().to_dict())
    return {k: v for k, v in json.loads(config.to_json_string(use_diff=False)).items() if k not in generic}


def check_resume_config(checkpoint: str, config: PretrainedConfig) -> None:
    """Raise ValueError naming every model-config field that differs from the checkpoint's
    config.json (architecture, masking, objective)."""
    with open(os.path.join(checkpoint, "config.json")) as f:
        saved = json.load(f)
    current = _model_fields(config)
    changed = [f"{k}: {saved.get(k, '(absent)')!r} in the checkpoint, {v!r} now" for k, v in current.items() if saved.get(k, v) != v]
    if changed:
        raise ValueError(
            f"cannot resume {checkpoint}: the model config differs from the one it was trained with ({'; '.join(changed)}). "
            "Resume with the checkpoint's values (drop the --config_overrides / --preset change), or start a new run "
            "in another --output_dir (or with --overwrite_output_dir true)"
        )


def report_changed_arguments(checkpoint: str, args: Any, run_arguments: dict[str, Any]) -> list[str]:
    """Log (one warning) and return every training or run argument that differs from the
    checkpoint's; all are honoured from the resumed step on."""
    path = os.path.join(checkpoint, "training_args.json")
    if not os.path.exists(path):
        logger.warning("%s has no training_args.json (an older checkpoint): changed arguments cannot be reported", checkpoint)
        return []
    with open(path) as f:
        saved = json.load(f)
    current = json.loads(args.to_json_string())
    with open(os.path.join(checkpoint, "cjepa_state.json")) as f:
        saved_run = json.load(f).get("run_arguments") or {}
    changes = [
        f"{key} {saved[key]!r} -> {value!r}"
        for key, value in sorted(current.items())
        if key not in _BOOKKEEPING and key in saved and saved[key] != value
    ]
    changes += [f"{k} {saved_run[k]!r} -> {v!r}" for k, v in sorted(run_arguments.items()) if k in saved_run and saved_run[k] != v]
    if changes:
        logger.warning(
            "resuming %s with changed arguments, each used from step %s on (the seed: the masks and data order from "
            "here on; the data source: the position in it is the old data's): %s",
            checkpoint,
            checkpoint.rsplit("-", 1)[-1],
            "; ".join(changes),
        )
    return changes


def honour_new_settings(trainer: CJEPATrainer) -> None:
    """After Trainer loaded the checkpoint's optimizer and scheduler: this run's peak learning
    rate (the scheduler's base_lrs), AdamW betas and epsilon replace the checkpoint's."""
    args = trainer.args
    scheduler = trainer.lr_scheduler
    groups = trainer.optimizer.param_groups
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):  # the schedule of create_scheduler
        scheduler.base_lrs = [args.learning_rate] * len(scheduler.base_lrs)
        for group, factor in zip(groups, scheduler.lr_lambdas):
            group["initial_lr"] = args.learning_rate
            group["lr"] = args.learning_rate * factor(scheduler.last_epoch)  # the resumed step's, at once
        scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr (Trainer's log) reads
    for group in groups:
        group["betas"] = (args.adam_beta1, args.adam_beta2)
        group["eps"] = args.adam_epsilon


def honour_new_intervals(trainer: CJEPATrainer) -> None:
    """Trainer resumes with the checkpoint's logging / eval / save intervals (its trainer state's):
    this run's are used instead."""
    args = trainer.args
    trainer.state.compute_steps(args, args.max_steps if args.max_steps > 0 else trainer.state.max_steps)


def seek_stream(trainer: CJEPATrainer, checkpoint: str, data: dict | None, loader_workers: int | None = None) -> bool:
    """Position an iterable dataset where the checkpoint left it: the data epoch, the mask
    positions and, per worker, the records to pass over undecoded. Returns False when
    Trainer's own replay must be used (a checkpoint without the data position, or a
    dataset that cannot seek: not a `SeekableStream`). `loader_workers`: the checkpoint's
    dataloader_num_workers (None in older checkpoints)."""
    position, args = trainer.data_position, trainer.args
    if loader_workers is not None and loader_workers != args.dataloader_num_workers:
        # 1 -> 0 keeps one stream worker (_stream_workers), so the check below is silent,
        # yet the data is no longer read in a worker process.
        logger.warning(
            "checkpoint %s was written with dataloader_num_workers=%d, this run has %d: the stream is read by "
            "other worker processes, so the order of the data and any randomness drawn in DataLoader workers can "
            "differ from the interrupted run's; resume with dataloader_num_workers=%d for an exact resume",
            checkpoint,
            loader_workers,
            args.dataloader_num_workers,
            loader_workers,
        )
    if data is None or not isinstance(trainer.train_dataset, SeekableStream):
        logger.warning(
            "%s: %s; Trainer replays the stream from its start",
            checkpoint,
            "no data position (an older checkpoint)"
            if data is None
            else f"{type(trainer.train_dataset).__name__} has no resume_at(epoch, records) to seek with",
        )
        position.restart()
        return False
    rank, world = args.process_index, args.world_size
    position.resume_checkpoint = checkpoint
    workers = trainer._stream_workers()
    if data["world_size"] != world or data["num_workers"] != workers:
        logger.warning(
            "checkpoint %s was written by %d process(es) with %d stream worker(s) each, this run has %d and %d: "
            "resuming at the start of data epoch %d (part of that epoch is seen again)",
            checkpoint,
            data["world_size"],
            data["num_workers"],
            world,
            workers,
            int(data["epoch"]),
        )
        position.restart(int(data["epoch"]))
        return True
    size = stream_num_examples(trainer.train_dataset)
    read = sum(sum(r) for r in data["records"])
    if size and read > size:
        raise ValueError(
            f"cannot resume {checkpoint}: it read {read} records of data epoch {data['epoch']}, but this training data "
            f"has {size} per epoch: it is not the data that run was trained on. Resume with that data, or start a new run"
        )
    position.restart(int(data["epoch"]), int(data["batches"]), [int(r) for r in data["records"][rank]])
    return True


def continue_after_resumed_epoch(trainer: CJEPATrainer, state: Any, control: Any) -> None:
    """At the end of an epoch: when it was the resumed one and gave no batch (the checkpoint
    ended exactly at the end of its data epoch), training goes on with the next epoch instead
    of stopping (Trainer stops after an empty epoch)."""
    position = trainer.data_position
    if position.seeked and position.epoch_batches == position.begun_at and control.should_training_stop:
        if trainer.stop_request.agreed or state.global_step >= state.max_steps:
            return
        logger.info("the checkpoint ended at the end of data epoch %d: continuing with epoch %d", position.epoch - 1, position.epoch)
        control.should_training_stop = False


def finished_run_output(trainer: CJEPATrainer, checkpoint: str, planned: int) -> TrainOutput:
    """Resuming a run that already took its `planned` steps: train nothing and write nothing
    (Trainer would take one more step and write checkpoint-{planned + 1}). The model and
    the trainer state are the checkpoint's, so what the caller saves or exports next is the
    finished model."""
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    logger.warning(
        "the run is already complete: %s is at step %d of %d; nothing to train, no checkpoint written",
        checkpoint,
        trainer.state.global_step,
        planned,
    )
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and math.isfinite(h["loss"])]
    train_loss = sum(losses) / len(losses) if losses else float("nan")  # the logged windows' mean
    return TrainOutput(trainer.state.global_step, train_loss, {"train_runtime": 0.0, "train_loss": train_loss})


__all__ = [
    "check_resume_config",
    "continue_after_resumed_epoch",
    "finished_run_output",
    "honour_new_intervals",
    "honour_new_settings",
    "report_changed_arguments",
    "seek_stream",
]
