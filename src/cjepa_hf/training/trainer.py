"""`CJEPATrainer`: transformers' Trainer with the C-JEPA objective, EMA target encoder, schedules, non-finite guard and exact resume.

The recipe is C-JEPA's (Mo & Tong, NeurIPS 2024) on I-JEPA's (Assran et al., CVPR 2023, appendix):
AdamW on `param_groups` (`cjepa_hf.training.optim`, the one builder), learning rate, weight decay
and EMA momentum from `cjepa_hf.training.schedules`, applied per optimizer step by
`CJEPACallback`. The callback and the trainer share one `StepState`; where the data stands is a
`DataPosition`; the data's epoch and seek hooks are the protocols of `data_hooks`.

Online evaluation (`cjepa_hf.online_eval`): when the training data carries labels, a linear
probe trains on the detached target features at every step (`online_linear_top1` in the logs);
with an `eval_dataset` (a `KNNMonitorSet`) and `eval_strategy="steps"`, `evaluate` logs
`eval_knn_top1` and `eval_linear_top1` every `eval_steps`.

A non-finite loss skips the update, the EMA step and the BatchNorm statistics of its batch
without a host sync; it is counted (`nonfinite_steps`) and its window logs `loss` NaN;
`max_consecutive_nonfinite` of them in a row stop training with an error.

`torch_compile=True` compiles the model in place and marks each batch's mask sizes dynamic
(`cjepa_hf.training.compile`): one compile for all mask sizes.

FSDP2 (`--fsdp` or an accelerate FSDP config): `cjepa_hf.training.fsdp` checks and completes
Accelerate's plugin (per-block sharding, sharded checkpoints, bf16 parameters with fp32
gradient reduction); the k-NN monitor and `save_model` outside checkpoints gather full weights.

Checkpoints (`cjepa_hf.training.checkpoints`): `cjepa_state.json` is written last and marks a
checkpoint complete; rotation runs after it; resumes are validated first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict
from typing import Any

import torch
from accelerate.utils import TorchDynamoPlugin, send_to_device
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..evaluation import encode, knn_accuracy
from ..hub import render_model_card
from ..losses import collapse_figures
from ..modeling_cjepa import CJEPAForPreTraining
from ..online_eval import KNNMonitorSet, OnlineLinearProbe, infer_num_labels
from .arguments import CJEPATrainingArguments
from .callback import CJEPACallback
from .checkpoints import STATE_FILE, disk_full_reported, nonfinite_tensors, refuse_nonfinite_save, rotate_checkpoints, write_json_atomically
from .compile import compile_model, mark_dynamic_masks
from .data_hooks import check_one_batch_fits, is_stream, start_epoch, stream_num_examples
from .fsdp import gather_target_encoder, prepare_fsdp
from .multinode import (
    check_storage,
    print_logs_on_global_rank,
    resolve_resume_checkpoint,
    save_weights_on_this_node,
    share_rng_states,
)
from .optim import build_adamw, param_groups
from .resume import (
    check_resume_config,
    finished_run_output,
    honour_new_intervals,
    honour_new_settings,
    report_changed_arguments,
    seek_stream,
)
from .run_guard import StopRequest, account_skipped_steps, check_run_finished, stop_signals
from .schedules import lr_at
from .state import DataPosition, StepState

logger = logging.getLogger(__name__)

_LOGGED_TERMS = (
    "jepa_loss",
    "vicreg_loss",
    "vicreg_invariance",
    "vicreg_variance",
    "vicreg_covariance",
    "encoder_vicreg_loss",
    "encoder_variance",
    "encoder_covariance",
)


class CJEPATrainer(Trainer):
    """Trainer for `CJEPAForPreTraining` on batches from `cjepa_hf.masking.MaskCollator`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, CJEPAForPreTraining):
            raise TypeError(f"CJEPATrainer trains CJEPAForPreTraining, got {type(self.model).__name__}")
        if not isinstance(self.args, CJEPATrainingArguments):
            raise TypeError(f"CJEPATrainer needs CJEPATrainingArguments, got {type(self.args).__name__}")
        device = self.args.device
        self.step_state = StepState.on(device)
        self.data_position = DataPosition(self._stream_workers(), device)
        self._stream_size: int | None = None  # a stream's examples per epoch (0: unknown), read once
        # Log window: sums of the loss terms over the window's micro-batches, the last target features.
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._metric_count = 0
        self._last_target_features: torch.Tensor | None = None
        self.online_probe = self._build_online_probe()
        self._probe_sums = torch.zeros(3, device=device)  # loss sum, correct, seen: since the last log
        if self.args.torch_compile:
            compile_model(model, backend=self.args.torch_compile_backend, mode=self.args.torch_compile_mode)
        self.stop_request = StopRequest()  # SIGTERM / SIGINT during train(): save, then stop
        self.run_arguments: dict[str, Any] = {}  # the script's own arguments, recorded in each checkpoint
        self.add_callback(CJEPACallback(self, self.step_state))
        print_logs_on_global_rank(self)  # not once per node

    def _build_accelerator_args(self, **kwargs: Any) -> dict[str, Any]:
        """Accelerate must not compile the model (its wrapper compile recompiles as mask sizes
        change): with torch_compile the trainer compiles it in place, masks marked dynamic."""
        backend, mode = self.args.torch_compile_backend, self.args.torch_compile_mode
        try:  # Accelerate's plugin knows only its own backend names, not registered ones
            self.args.torch_compile_backend = self.args.torch_compile_mode = None
            args = super()._build_accelerator_args(**kwargs)
        finally:
            self.args.torch_compile_backend, self.args.torch_compile_mode = backend, mode
        args["dynamo_plugin"] = TorchDynamoPlugin(backend="no")
        return args

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if prepare_fsdp(self.accelerator, self.args) is not None:
            self.is_fsdp_enabled = True  # also on the CPU, where Accelerate alone would fall back to DDP

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

    # ---------------------------------------------------------------- optimizer and schedule
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW on `param_groups`; optim adamw_torch_fused: the fused kernel (foreach where the
        device has none), adamw_torch: the foreach kernels."""
        if self.optimizer is None:
            args = self.args
            model = self.accelerator.unwrap_model(model if model is not None else self.model)
            kernel = "fused" if str(getattr(args.optim, "value", args.optim)) == "adamw_torch_fused" else "foreach"
            self.optimizer, _ = build_adamw(
                param_groups(model, args.weight_decay),
                kernel,
                lr=args.learning_rate,
                betas=(args.adam_beta1, args.adam_beta2),
                eps=args.adam_epsilon,
            )
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
        if not is_stream(dataset):
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

    def data_epochs(self) -> float | None:
        """For a stream, the data epochs taken so far (Trainer's `state.epoch` counts this process's
        passes, from 0 again after a resume): the epochs done plus the fraction of the one in
        progress when the stream's size is known. None for map-style data (Trainer's is right)."""
        if not is_stream(self.train_dataset):
            return None
        position, args = self.data_position, self.args
        if self._stream_size is None:
            self._stream_size = stream_num_examples(self.train_dataset) or 0
        done = max(position.epoch - 1, 0)  # begin_epoch moved past the epoch in progress
        if not self._stream_size:
            return float(done)
        seen = position.epoch_batches * args.per_device_train_batch_size * args.world_size
        return done + min(seen / self._stream_size, 1.0)

    def begin_epoch(self) -> None:
        """Tell the dataset and the mask collator which epoch starts (before workers are created)."""
        position = self.data_position
        start_epoch(self.train_dataset, self.data_collator, position.epoch, position.start_position, position.resume_records)
        if position.resume_checkpoint is not None:
            # Trainer restores the RNG state only when it replays the data itself.
            self._load_rng_state(position.resume_checkpoint)
        position.begin_epoch()

    def _resume_position(self, global_step: int) -> None:
        """Where the data and the masks stand after `global_step` optimizer steps, for map-style
        datasets: Trainer skips batches in the sampler, so the collator starts at the number of
        skipped batches. (Iterable datasets: `resume.seek_stream`.)"""
        per_epoch, accumulation = self._steps_per_epoch(), self.args.gradient_accumulation_steps
        self.data_position.restart(global_step // per_epoch, (global_step % per_epoch) * accumulation)

    def _steps_per_epoch(self) -> int:
        """Optimizer steps per epoch of a map-style dataset, as Trainer counts them (a last step
        of fewer micro-batches than gradient_accumulation_steps is a step)."""
        return max(math.ceil(len(self.get_train_dataloader()) / self.args.gradient_accumulation_steps), 1)

    def _planned_steps(self) -> int | None:
        """The optimizer steps this run is to reach, as Trainer computes them: max_steps, or
        ceil(num_train_epochs * update steps per epoch) for a map-style dataset; None when it
        cannot be known here (a stream without max_steps, which Trainer refuses anyway)."""
        args = self.args
        if args.max_steps > 0:
            return args.max_steps
        if is_stream(self.train_dataset):
            return None
        return math.ceil(args.num_train_epochs * self._steps_per_epoch())

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        check_one_batch_fits(self.train_dataset, self.args.per_device_train_batch_size, self.args.world_size)
        check_storage(self.args, self.args.save_strategy != "no" or bool(resume_from_checkpoint), sharded=self.is_fsdp_enabled)
        # validated (also the shapes of the JSON read below), the same step on every process
        resume_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir, self.args.world_size)
        skip_replay = evaluated = False
        planned = self._planned_steps()
        if resume_from_checkpoint:
            with open(os.path.join(resume_from_checkpoint, STATE_FILE)) as f:
                saved = json.load(f)
            with open(os.path.join(resume_from_checkpoint, "trainer_state.json")) as f:
                trainer_state = json.load(f)
            global_step = trainer_state["global_step"]
            # the checkpoint's log holds its step's evaluation: eval_on_start would log it twice
            evaluated = any(h.get("step") == global_step and "eval_runtime" in h for h in trainer_state["log_history"])
            # before anything is loaded: a changed model would fail there with a less telling error
            check_resume_config(resume_from_checkpoint, self.accelerator.unwrap_model(self.model).config)
            report_changed_arguments(resume_from_checkpoint, self.args, self.run_arguments)
            self.step_state.restore_counts(saved)
            if self.online_probe is not None:
                self.online_probe.load(resume_from_checkpoint)
                self._probe_sums.copy_(torch.tensor(saved.get("online_probe_sums", [0.0, 0.0, 0.0])))
            if planned is not None and global_step >= planned:
                return finished_run_output(self, resume_from_checkpoint, planned)
            if not is_stream(self.train_dataset):
                self._resume_position(global_step)
            elif self.args.ignore_data_skip:
                self.data_position.restart()  # the user asked for no data skip
            else:
                # Trainer would replay the stream from epoch 0, decoding every skipped batch,
                # and restart the next epoch at its beginning: the stream seeks itself instead.
                skip_replay = seek_stream(self, resume_from_checkpoint, saved.get("data"), saved.get("dataloader_num_workers"))
        restore = {"ignore_data_skip": self.args.ignore_data_skip, "eval_on_start": self.args.eval_on_start}
        self.args.ignore_data_skip = self.args.ignore_data_skip or skip_replay
        self.args.eval_on_start = self.args.eval_on_start and not evaluated
        nonfinite_before = int(self.step_state.nonfinite_total.item())  # the checkpoint's, on a resume
        try:
            with stop_signals(self.stop_request):
                result = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            for key, value in restore.items():
                setattr(self.args, key, value)
        check_run_finished(self, planned)  # a stop signal, or fewer steps than planned: an error
        return account_skipped_steps(self, result, nonfinite_before)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            honour_new_settings(self)  # this run's learning rate and AdamW settings, not the checkpoint's

    def _load_callback_state(self) -> None:
        super()._load_callback_state()
        honour_new_intervals(self)  # this run's save / log / eval intervals, not the checkpoint's

    # ---------------------------------------------------------------- the loss
    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The batch on the device without a host sync: Trainer's blocking `.to(device)` waits for
        every copy; from the DataLoader's pinned memory the copies can run behind the step."""
        if not inputs:
            return super()._prepare_inputs(inputs)  # Trainer's error for an empty batch
        return send_to_device(inputs, self.args.device, non_blocking=True)

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """Trainer's step; the loss it adds to its log window is 0 for a non-finite step (which
        was skipped), so that the window's sum stays finite for the next windows without
        Trainer's per-step `isnan` check (a host sync; `logging_nan_inf_filter` is off by
        default). `log` marks a window with a skipped step: its loss is NaN."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        return torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        skipped = inputs.pop("num_skipped", None)
        data_worker = inputs.pop("data_worker", None)
        labels = inputs.pop("labels", None)
        shared = self.step_state
        if skipped is not None and model.training:
            shared.skipped_records += skipped.to(shared.skipped_records.device)
        if model.training:
            self.data_position.count_batch(inputs["pixel_values"].shape[0], skipped, data_worker)
        if self.args.torch_compile:
            mark_dynamic_masks(inputs["context_indices"], inputs["target_indices"])
        outputs = model(
            pixel_values=inputs["pixel_values"],
            context_indices=inputs["context_indices"],
            target_indices=inputs["target_indices"],
            gather_distributed=self.accelerator.num_processes > 1,
        )
        loss = outputs.loss
        if model.training:
            shared.see_loss(loss)
            for key in _LOGGED_TERMS:
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
        monitor = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(monitor, KNNMonitorSet):
            raise TypeError(f"CJEPATrainer evaluates with a cjepa_hf.online_eval.KNNMonitorSet, got {type(monitor).__name__}")
        start = time.time()
        model = self.accelerator.unwrap_model(self.model)
        # FSDP: a full copy (every process encodes its share and may run fewer batches than another,
        # which the sharded encoder's all-gathers would not survive)
        encoder = gather_target_encoder(model) if self.is_fsdp_enabled else model.target_encoder
        device = self.args.device
        positions, features, labels = [], [], []
        with torch.no_grad():
            for index, pixels, y in monitor.batches(self.args.process_index, self.args.world_size, self.args.per_device_eval_batch_size):
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
                features[bank].cpu(),
                labels[bank].cpu(),
                features[~bank].cpu(),
                labels[~bank].cpu(),
                k=self.args.knn_k,
                temperature=self.args.knn_temperature,
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
            shared = self.step_state
            logs.update(shared.schedule_values())
            skipped = shared.skipped_records
            if self.accelerator.num_processes > 1:
                skipped = self.accelerator.reduce(skipped.reshape(1).clone(), reduction="sum")[0]
            logs["skipped_records"] = int(skipped.item())
            nonfinite = int(shared.nonfinite_total.item())
            logs["nonfinite_steps"] = nonfinite
            if nonfinite > shared.nonfinite_logged and math.isfinite(logs["loss"]):
                # Trainer's logging_nan_inf_filter replaces a non-finite loss by the mean of the
                # window's earlier ones (0 right after a log): a skipped step would look like a
                # perfect one. The window's mean loss is not finite; say so (a float NaN, which
                # Trainer's json.dumps writes and json.loads reads back).
                logs["loss"] = float("nan")
            shared.nonfinite_logged = nonfinite
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
                logs.update(collapse_figures(features))  # NaN for the batch of a skipped non-finite step
        super().log(logs, start_time)

    def check_nonfinite(self) -> None:
        """Stop with an error after max_consecutive_nonfinite skipped steps in a row (a host sync)."""
        consecutive = int(self.step_state.consecutive_nonfinite.item())
        if consecutive >= self.args.max_consecutive_nonfinite:
            finite = not nonfinite_tensors(self.accelerator.unwrap_model(self.model))  # FSDP: this process's shards
            where = "no NaN weights were written" if finite else "the weights themselves overflowed, and no checkpoint holds them"
            raise FloatingPointError(
                f"{consecutive} consecutive non-finite losses (max_consecutive_nonfinite="
                f"{self.args.max_consecutive_nonfinite}) at step {self.state.global_step}: their updates were skipped and "
                f"{where}; lower the learning rate or check the data"
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
        marker = os.path.join(folder, STATE_FILE)
        refuse_nonfinite_save(folder, self.accelerator, self.accelerator.unwrap_model(model), self.optimizer)
        if self.args.should_save and os.path.exists(marker):
            # A folder of this step from an earlier run (resumed from an older checkpoint):
            # until the new save completes, its files are a mix, so it must not look complete.
            os.remove(marker)
        with disk_full_reported(folder):
            self.args.save_total_limit = None
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.save_total_limit = limit
            if self.args.should_save:  # save_model wrote it with the limit set aside above: the run's arguments
                write_json_atomically(os.path.join(folder, "training_args.json"), json.loads(self.args.to_json_string()))
            share_rng_states(folder, self.args)  # save_on_each_node: every node's copy gets every rank's
            data = None
            if is_stream(self.train_dataset):  # every process takes part in the gather
                data = self.data_position.checkpoint_entry(self.accelerator.gather, self.args.world_size)
            # Every process's files (rng_state_{rank}.pth) exist before the checkpoint is marked complete.
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                state = {
                    "nonfinite_steps": int(self.step_state.nonfinite_total.item()),
                    "skipped_records": int(self.step_state.skipped_records.item()),
                    # beside "data", whose layout (stream workers) 0 and 1 workers share
                    "dataloader_num_workers": self.args.dataloader_num_workers,
                }
                if self.run_arguments:
                    state["run_arguments"] = self.run_arguments  # beside config.json and training_args.json
                if data is not None:
                    state["data"] = data  # the stream's position, for an exact resume
                if self.online_probe is not None:
                    self.online_probe.save(folder)
                    state["online_probe_sums"] = self._probe_sums.tolist()
                write_json_atomically(marker, state)
        if self.args.should_save:
            rotate_checkpoints(run_dir, limit, [folder, self.state.best_model_checkpoint])

    def create_model_card(self, model_name: str | None = None, dataset: str | list[str] | None = None, **kwargs: Any) -> None:
        """The C-JEPA card (cjepa_hf.hub) instead of transformers' generic one: Trainer's
        `push_to_hub` writes it to output_dir/README.md before uploading. Only facts of this
        run go in: its config, arguments and trainer state; no result numbers."""
        if not self.is_world_process_zero():
            return
        config = self.accelerator.unwrap_model(self.model).config
        name = model_name or self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        card = render_model_card(
            config,
            model_name=name,
            model_path=self.args.output_dir,
            training_args=self.args.to_dict(),
            datasets=dataset,
            image_processor=self.processing_class,
            trainer_state=json.loads(json.dumps(asdict(self.state), default=str)),
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's save plus a readable `training_args.json` (Trainer's `training_args.bin` is a
        pickle; release export and model cards read the JSON instead). Checkpoints come here too.

        FSDP: a checkpoint's weights are the shards Trainer writes beside it (its own
        config.json and preprocessor_config.json are written here); any other save gathers the
        full model (every process takes part) into an ordinary model.safetensors."""
        folder = output_dir if output_dir is not None else self.args.output_dir
        if not _internal_call:  # a checkpoint's weights were checked, with the optimizer's state, before it
            refuse_nonfinite_save(folder, self.accelerator, self.accelerator.unwrap_model(self.model))
        with disk_full_reported(folder):
            if self.is_fsdp_enabled and _internal_call:
                if self.args.should_save:
                    os.makedirs(folder, exist_ok=True)
                    self.accelerator.unwrap_model(self.model).config.save_pretrained(folder)
                    if self.processing_class is not None:
                        self.processing_class.save_pretrained(folder)
            elif self.is_fsdp_enabled:
                self._save(folder, state_dict=self.accelerator.get_state_dict(self.model))
                if self.args.push_to_hub:  # as Trainer's save_model does for a save the user asks for
                    self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
            else:
                super().save_model(output_dir, _internal_call)
            save_weights_on_this_node(self.accelerator.unwrap_model(self.model), folder, self.args)
            if self.args.should_save:
                with open(os.path.join(folder, "training_args.json"), "w") as f:
                    f.write(self.args.to_json_string())


__all__ = ["CJEPATrainer"]
