#!/usr/bin/env python
"""Pretrain a C-JEPA model.

    accelerate launch scripts/pretrain.py                                   # the quick start (recipes/quickstart-fashion-mnist.json)
    accelerate launch scripts/pretrain.py --max_steps 50 --output_dir X     # the quick start with two flags changed
    accelerate launch scripts/pretrain.py recipes/vit-b16-in1k-600ep.json   # a recipe file (JSON or YAML)
    accelerate launch scripts/pretrain.py recipes/vit-b16-in1k-100ep.json --max_steps 1000 --output_dir Y
    accelerate launch scripts/pretrain.py recipes/small-data-fashion-mnist.json --config_overrides vicreg_weight=0
    accelerate launch --config_file recipes/accelerate-fsdp.yaml scripts/pretrain.py recipes/vit-l16-in1k-600ep.json  # FSDP2

Arguments compose: the base is the recipe file given first (default: the quick start), and
every flag on the command line replaces that field of the recipe; `--config_overrides`
(a JSON object or transformers' `k=v,k2=v2` form) is merged key by key into the recipe's.
The fields are those of ModelArguments, DataArguments and EvaluationArguments below and of
`cjepa_hf.trainer.CJEPATrainingArguments` (all of transformers' TrainingArguments).

Recipes (recipes/): quickstart-fashion-mnist.json, small-data-fashion-mnist.json,
vit-{t,s,b}16-in1k-100ep.json, vit-{b,l}16-in1k-600ep.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, set_seed

from cjepa_hf import PRESET_NAMES, CJEPAConfig, CJEPAForPreTraining
from cjepa_hf.configuration_cjepa import parse_config_overrides
from cjepa_hf.data import build_pretrain_dataset, is_fashion_mnist
from cjepa_hf.masking import MaskCollator
from cjepa_hf.modeling_cjepa import build_image_processor
from cjepa_hf.online_eval import KNNMonitorSet
from cjepa_hf.plotting import CurvesCallback, plot_training_curves
from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments
from cjepa_hf.training.data_hooks import stream_num_examples
from cjepa_hf.training.fsdp import gather_target_encoder
from cjepa_hf.training.preflight import check_columns, check_data_source, check_evaluation_dataset
from cjepa_hf.training.run_guard import hold_output_dir

logger = logging.getLogger("cjepa_hf.pretrain")
RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes")
QUICKSTART = os.path.join(RECIPES, "quickstart-fashion-mnist.json")


@dataclass
class ModelArguments:
    preset: str | None = field(default=None, metadata={"help": ", ".join(PRESET_NAMES) + " (see CJEPAConfig.from_preset)."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Start from a saved CJEPAForPreTraining (folder or Hub id)."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "CJEPAConfig fields: a JSON object ('{\"vicreg_weight\": 0}') or k=v,k2=v2 (merged into the recipe's)."},
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="ILSVRC/imagenet-1k",
        metadata={"help": "Hub dataset id, local image folder, parquet/arrow files or glob, tar shards, or fashion_mnist."},
    )
    split: str = field(default="train")
    image_column: str = field(default="image")
    label_column: str | None = field(default="label", metadata={"help": "Labels for the online probe (none: no probe)."})
    shuffle_buffer: int = field(default=10_000, metadata={"help": "Examples in the streaming shuffle buffer."})
    streaming: bool = field(default=True)
    token: str | None = field(default=None, metadata={"help": "Hub token for gated datasets (default: the logged-in one)."})


@dataclass
class EvaluationArguments:
    eval_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Labelled source of the k-NN monitor (any --dataset form); with --eval_strategy steps "
            "it logs eval_knn_top1 every --eval_steps. Carve it from the TRAIN images to choose settings."
        },
    )
    eval_split: str = field(default="train", metadata={"help": "Split of --eval_dataset."})
    eval_bank_size: int = field(default=5000, metadata={"help": "The first examples of the split: the k-NN memory bank."})
    eval_query_size: int = field(default=1000, metadata={"help": "The next examples: the queries."})
    final_eval_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Judge the encoder at the end on this labelled data set's test split (k-NN and linear probe "
            "against its random initialisation and raw pixels), e.g. fashion_mnist."
        },
    )
    final_eval_train_samples: int | None = field(default=10_000, metadata={"help": "Train images for the final probes."})
    final_eval_test_samples: int | None = field(default=None, metadata={"help": "Test images (default: all)."})


DATA_DEFAULTS = {"image_column": DataArguments.image_column, "label_column": DataArguments.label_column}
PARSER_TYPES = (ModelArguments, DataArguments, EvaluationArguments, CJEPATrainingArguments)


def _read_recipe(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"recipe {path!r} does not exist; recipes in {os.path.normpath(RECIPES)}: {', '.join(sorted(os.listdir(RECIPES)))}"
        )
    with open(path) as f:
        if path.endswith(".json"):
            values = json.load(f)
        else:
            import yaml

            values = yaml.safe_load(f)
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path!r} must hold an object of arguments, got {type(values).__name__}")
    return values


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, EvaluationArguments, CJEPATrainingArguments]:
    """A recipe (the first argument when it is a .json/.yaml file, else the quick start) with
    the command-line flags over it; `config_overrides` merged key by key."""
    parser = HfArgumentParser(PARSER_TYPES, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipe = QUICKSTART
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        recipe, argv = argv[0], argv[1:]
    values = _read_recipe(recipe)
    # Which flags were given: parse with every default suppressed.
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    if "config_overrides" in given:
        merged = {**parse_config_overrides(values.get("config_overrides")), **parse_config_overrides(given["config_overrides"])}
        given["config_overrides"] = json.dumps(merged)
    values = {**values, **given}
    if "use_cpu" not in values and not torch.cuda.is_available():
        values["use_cpu"] = True  # without it, several CPU processes are not wrapped in DDP
    parsed = HfArgumentParser(PARSER_TYPES).parse_dict(values)
    logger.info("recipe %s, command-line flags %s", recipe, sorted(given))
    return parsed


def build_config(model_args: ModelArguments) -> CJEPAConfig:
    overrides = parse_config_overrides(model_args.config_overrides)
    if model_args.preset:
        return CJEPAConfig.from_preset(model_args.preset, **overrides)
    return CJEPAConfig(**overrides)


def main(argv: list[str] | None = None) -> dict:
    # Until the arguments say which process logs, RANK (the launcher's global rank) decides.
    main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO if main_process else logging.WARNING)
    model_args, data_args, eval_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    # should_log: global rank 0 only (log_on_each_node=False), never a node's first process by default
    logging.getLogger().setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    # Everything checkable before the work is checked here; the output folder is this run's until it ends.
    check_data_source(data_args.dataset)
    check_evaluation_dataset(eval_args.final_eval_dataset)
    with hold_output_dir(training_args):
        return train_and_export(model_args, data_args, eval_args, training_args)


def train_and_export(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvaluationArguments, training_args: CJEPATrainingArguments
) -> dict:
    set_seed(training_args.seed)

    if model_args.model_name_or_path:
        model = CJEPAForPreTraining.from_pretrained(model_args.model_name_or_path)
        config = model.config
    else:
        config = build_config(model_args)
        model = CJEPAForPreTraining(config)
    # the exact weights the run starts from, for the final judgement against them
    initial_encoder = copy.deepcopy(model.target_encoder) if eval_args.final_eval_dataset else None
    rank, world = training_args.process_index, training_args.world_size
    dataset = build_pretrain_dataset(
        data_args.dataset,
        image_size=config.image_size,
        patch_size=config.patch_size,
        split=data_args.split,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        streaming=data_args.streaming,
        shuffle_buffer=data_args.shuffle_buffer,
        seed=training_args.seed,
        rank=rank,
        world_size=world,
        token=data_args.token,
    )
    columns = {"image_column": data_args.image_column, "label_column": data_args.label_column}
    check_columns(
        dataset, data_args.dataset, columns, DATA_DEFAULTS, split=data_args.split, streaming=data_args.streaming, token=data_args.token
    )
    monitor = None
    if eval_args.eval_dataset:
        monitor = KNNMonitorSet(
            eval_args.eval_dataset,
            image_size=config.image_size,
            patch_size=config.patch_size,
            split=eval_args.eval_split,
            bank_size=eval_args.eval_bank_size,
            query_size=eval_args.eval_query_size,
            image_column=data_args.image_column,
            label_column=data_args.label_column or "label",
            token=data_args.token,
        )
    elif training_args.eval_strategy != "no" or training_args.eval_on_start:
        raise ValueError(
            f"--eval_strategy {training_args.eval_strategy} / --eval_on_start {training_args.eval_on_start} need "
            "--eval_dataset (the k-NN monitor's labelled images); pass --eval_strategy no --eval_on_start false to run without it"
        )
    collator = MaskCollator(config, seed=training_args.seed, rank=rank)
    # The preprocessing every saved folder (checkpoints, the export) carries for AutoImageProcessor
    # users: images that training padded to the model's size (Fashion-MNIST 28 -> 32) are padded,
    # not resized; others are resized and centre-cropped.
    pad_to = dataset.decode_transform.pad_to
    padded = pad_to == config.image_size
    processor = build_image_processor(config, resize=not padded)
    trainer = CJEPATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        eval_dataset=monitor,
        callbacks=[CurvesCallback()],
    )
    trainer.run_arguments = {**{k: getattr(data_args, k) for k in DATA_DEFAULTS}, "dataset": data_args.dataset, "split": data_args.split}
    log_start_summary(trainer, config, data_args, eval_args)

    start = time.time()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    wall = time.time() - start
    trainer.save_model()  # the full CJEPAForPreTraining, to continue training (FSDP: gathered)
    trainer.save_state()  # trainer_state.json: the whole log history beside the model
    summary = {"wall_time_s": wall, "global_step": trainer.state.global_step, **result.metrics}
    # FSDP: rank 0 judges a full copy of the sharded target encoder (every rank takes part in the gather)
    encoder = gather_target_encoder(model) if trainer.is_fsdp_enabled and eval_args.final_eval_dataset else model.target_encoder
    if trainer.is_world_process_zero():
        out = training_args.output_dir
        if eval_args.final_eval_dataset:
            from cjepa_hf.judge import judge_encoder, judgement_table

            judgement = judge_encoder(
                encoder,
                initial_encoder,
                dataset=eval_args.final_eval_dataset,
                image_size=config.image_size,
                pad_to=pad_to if padded else None,
                train_samples=eval_args.final_eval_train_samples,
                test_samples=eval_args.final_eval_test_samples,
                knn_k=training_args.knn_k,
                knn_temperature=training_args.knn_temperature,
                seed=training_args.seed,
            )
            summary["evaluation"] = judgement
            print(f"\nThe encoder judged on {eval_args.final_eval_dataset} (test split):\n\n{judgement_table(judgement)}\n")
        encoder_dir = os.path.join(out, "encoder")
        export_encoder(out, encoder_dir, data_args, summary.get("evaluation"), wall)
        logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
        if logs:
            plot_training_curves(trainer.state.log_history, os.path.join(out, "training_curves.png"))
            summary["first_log"], summary["last_log"] = logs[0], logs[-1]
        evals = [h for h in trainer.state.log_history if "eval_knn_top1" in h]
        if evals:
            summary["online_eval"] = [
                {k: h[k] for k in ("step", "eval_knn_top1", "eval_linear_top1", "eval_runtime") if k in h} for h in evals
            ]
        with open(os.path.join(out, "pretrain_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        logger.info("done in %.0f s; target encoder in %s", wall, encoder_dir)
    # Every rank waits for rank 0's exports, then the process group is torn down explicitly:
    # a rank that exits with it still alive can abort in gloo's threads at interpreter exit.
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return summary


def log_start_summary(trainer: CJEPATrainer, config: CJEPAConfig, data_args: DataArguments, eval_args: EvaluationArguments) -> None:
    """What is about to run: parameters, data, steps, global batch and epochs."""
    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoder = sum(p.numel() for p in model.target_encoder.parameters())
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    size = stream_num_examples(trainer.train_dataset)
    epochs = f"{args.max_steps * global_batch / size:.2f} epochs of {size:,} images" if size else "epochs unknown (stream size not known)"
    logger.info(
        "C-JEPA pretraining: encoder %.2fM parameters (%.2fM trainable in all), %dx%d px, patch %d; data %s [%s]; "
        "%d steps x global batch %d (%d per device x %d accumulation x %d processes) = %s; online probe %s; k-NN monitor %s",
        encoder / 1e6,
        trainable / 1e6,
        config.image_size,
        config.image_size,
        config.patch_size,
        data_args.dataset,
        data_args.split,
        args.max_steps,
        global_batch,
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.world_size,
        epochs,
        "on" if trainer.online_probe is not None else "off",
        f"{eval_args.eval_dataset}[{eval_args.eval_split}] every {args.eval_steps} steps"
        if eval_args.eval_dataset and args.eval_strategy != "no"
        else "off",
    )


def export_encoder(run_dir: str, encoder_dir: str, data_args: DataArguments, evaluation: dict | None, wall: float) -> None:
    """The target encoder as a release folder (`cjepa_hf.hub.export_release`, the one export
    path): weights, remote code, the image processor training used, and the model card with
    the run's settings and, when the run judged itself, its k-NN / linear-probe results beside
    its random start and raw pixels."""
    from cjepa_hf.hub import export_release
    from cjepa_hf.judge import judgement_table

    results, extra = None, None
    if evaluation:
        protocol = evaluation["protocol"]
        dataset = "zalando-datasets/fashion_mnist" if is_fashion_mnist(protocol["dataset"]) else protocol["dataset"]
        results = [
            {
                "task": "image-classification",
                "dataset": dataset,
                "dataset_name": protocol["dataset"],
                "split": protocol["test_split"],
                "metric": "accuracy",
                "value": evaluation["trained"][key],
                "protocol": name,
            }
            for key, name in (("linear_top1", "linear probe"), ("knn_top1", "k-NN"))
        ]
        extra = (
            f"## How it compares with its random initialisation and raw pixels\n\nMeasured at the end of this run on "
            f"{protocol['dataset']} ({protocol['test_samples']} {protocol['test_split']} images; probes trained on "
            f"{protocol['train_samples']} {protocol['train_split']} images; k-NN k={protocol['knn_k']}, "
            f"T={protocol['knn_temperature']}):\n\n{judgement_table(evaluation)}\n"
        )
    if os.path.isdir(encoder_dir):
        shutil.rmtree(encoder_dir)  # this run's previous export (a resumed run exports again)
    export_release(
        run_dir,
        encoder_dir,
        model_name=os.path.basename(os.path.normpath(run_dir)),
        results=results,
        datasets=[data_args.dataset],
        extra_text=extra,
        compute={"hardware": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU", "wall_time_s": round(wall, 1)},
    )


if __name__ == "__main__":
    main()
