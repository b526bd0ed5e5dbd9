#!/usr/bin/env python
"""Pretrain a C-JEPA model.

    accelerate launch scripts/pretrain.py                                   # the quick start (recipes/quickstart-fashion-mnist.json)
    accelerate launch scripts/pretrain.py --dataset_name my_images/ --output_dir outputs/mine   # your own images
    accelerate launch scripts/pretrain.py recipes/vit-b16-in1k-100ep.json --max_steps 1000 --output_dir Y
    accelerate launch scripts/pretrain.py recipes/small-data-fashion-mnist.json --objective cjepa --config_overrides vicreg_weight=0.02
    accelerate launch --config_file recipes/accelerate-fsdp.yaml scripts/pretrain.py recipes/vit-l16-in1k-600ep.json  # FSDP2

Arguments compose: the base is the recipe file given first (default: the quick start), and
every flag replaces that field of the recipe; `--config_overrides` (a JSON object or
`k=v,k2=v2`) is merged key by key into the recipe's. A `--dataset_name` that replaces the
recipe's data set drops the recipe's evaluation sets: evaluation follows your data (labelled:
k-NN monitor, online probe and final judgement on it; unlabelled: all off).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import set_seed

from cjepa_hf import PRESET_NAMES, CJEPAConfig, CJEPAForPreTraining
from cjepa_hf import configuration_cjepa as configuration
from cjepa_hf.cli import OneLineParser, config_help, process_start_time, short_help, split_debug, user_errors
from cjepa_hf.configuration_cjepa import OBJECTIVES, parse_config_overrides
from cjepa_hf.data import build_pretrain_dataset
from cjepa_hf.evaluation.plan import build_knn_monitor, drop_recipe_data_settings, plan_evaluation, start_up_lines, survey_data
from cjepa_hf.masking import MaskCollator
from cjepa_hf.modeling_cjepa import build_image_processor
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
    preset: str | None = field(default=None, metadata={"help": "Model size: " + ", ".join(PRESET_NAMES) + "."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Start from a saved CJEPAForPreTraining (folder or Hub id)."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "CJEPAConfig fields: k=v,k2=v2 or a JSON object, merged into the recipe's (--help_config lists them)."},
    )
    objective: str | None = field(
        default=None,
        metadata={
            "help": "The objective by name: " + ", ".join(OBJECTIVES) + ". Sets its loss fields under --config_overrides "
            "(which may change its weights); the run refuses to start if the overrides turn it into another objective."
        },
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="ILSVRC/imagenet-1k",
        metadata={
            "aliases": ["--dataset_name"],
            "help": "Your images: a folder (flat, or one sub-folder per class), parquet/arrow files or a glob, tar "
            "shards; or a Hub dataset id, or fashion_mnist.",
        },
    )
    split: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    image_column: str = field(default="image", metadata={"aliases": ["--image_column_name"], "help": "Image column (parquet/arrow/Hub)."})
    label_column: str | None = field(
        default="label",
        metadata={"aliases": ["--label_column_name"], "help": "Label column: the online probe, k-NN monitor and judgement (none: off)."},
    )
    shuffle_buffer: int = field(default=10_000, metadata={"help": "Examples in the streaming shuffle buffer."})
    streaming: bool = field(default=True, metadata={"help": "Stream the data (false: load it as a map-style dataset first)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for gated datasets (default: the logged-in one)."})


@dataclass
class EvaluationArguments:
    eval_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Labelled images of the k-NN monitor (any --dataset_name form; default with your own labelled "
            "data: a sample of it). Logs eval_knn_top1 every --eval_steps with --eval_strategy steps."
        },
    )
    eval_split: str = field(default="train", metadata={"help": "Split of --eval_dataset."})
    eval_bank_size: int = field(default=5000, metadata={"help": "The first examples of the split: the k-NN memory bank."})
    eval_query_size: int = field(default=1000, metadata={"help": "The next examples: the queries."})
    final_eval_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Judge the encoder at the end on this labelled data (k-NN and linear probe against its random "
            "initialisation and raw pixels); default with your own labelled local data: that data, 20%% held out."
        },
    )
    final_eval_train_samples: int | None = field(default=10_000, metadata={"help": "Train images for the final probes."})
    final_eval_test_samples: int | None = field(default=None, metadata={"help": "Test images (default: all)."})


DATA_DEFAULTS = {"image_column": DataArguments.image_column, "label_column": DataArguments.label_column}
PARSER_TYPES = (ModelArguments, DataArguments, EvaluationArguments, CJEPATrainingArguments)
# --help shows these flags; --help_all every flag (all of transformers' TrainingArguments).
HELP_GROUPS = {
    "Model": ("objective", "preset", "model_name_or_path", "config_overrides"),
    "Data": ("dataset", "split", "image_column", "label_column", "shuffle_buffer", "streaming", "token"),
    "Evaluation": (
        "eval_dataset",
        "eval_split",
        "eval_bank_size",
        "eval_query_size",
        "eval_strategy",
        "eval_steps",
        "eval_on_start",
        "final_eval_dataset",
        "final_eval_train_samples",
        "final_eval_test_samples",
        "online_probe",
        "knn_k",
    ),
    "Training": (
        "output_dir",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "warmup_start_lr",
        "warmup_steps",
        "final_lr",
        "weight_decay",
        "final_weight_decay",
        "ema_momentum",
        "final_ema_momentum",
        "optim",
        "bf16",
        "seed",
        "dataloader_num_workers",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "resume_from_checkpoint",
        "report_to",
    ),
}
ACCEPTED_OPTIM = ("adamw_torch", "adamw_torch_fused")


def recipe_names() -> list[str]:
    """The recipes in recipes/ (pretraining recipes: JSON or YAML, not accelerate configs)."""
    return sorted(f for f in os.listdir(RECIPES) if f.endswith((".json", ".yaml", ".yml")) and not f.startswith("accelerate-"))


def build_parser() -> OneLineParser:
    parser = OneLineParser(PARSER_TYPES, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for action in parser._actions:
        if action.dest == "optim":  # CJEPATrainingArguments accepts only AdamW: show only those
            action.choices, action.metavar = None, "{" + ",".join(ACCEPTED_OPTIM) + "}"
            action.help = "AdamW kernel: " + " or ".join(ACCEPTED_OPTIM) + " (C-JEPA trains with AdamW and its own weight-decay schedule)."
        elif action.dest == "warmup_steps":
            action.help = "Steps of the linear warmup from --warmup_start_lr to --learning_rate (a float < 1: a fraction of max_steps)."
    return parser


def _help_text(parser: OneLineParser, recipe_values: dict) -> str:
    header = (__doc__ or "").strip() + "\n\nRecipes (recipes/): " + ", ".join(recipe_names())
    footer = (
        "Defaults shown are the quick start recipe's where it sets them.\n"
        "--help_all: every flag (all of transformers' TrainingArguments); --help_config: every CJEPAConfig field "
        "(for --config_overrides); --debug: a traceback instead of a one-line error."
    )
    return short_help(parser, HELP_GROUPS, header=header, footer=footer, defaults=recipe_values)


def _read_recipe(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"recipe {path!r} does not exist; recipes in {os.path.normpath(RECIPES)}: {', '.join(recipe_names())}")
    with open(path) as f:
        if path.endswith(".json"):
            values = json.load(f)
        else:
            import yaml

            values = yaml.safe_load(f)
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path!r} must hold an object of arguments, got {type(values).__name__}")
    return values


def parse_run(argv: list[str]) -> tuple[tuple[ModelArguments, DataArguments, EvaluationArguments, CJEPATrainingArguments], dict]:
    """The arguments (a recipe, the first argument when it is a .json/.yaml file, else the
    quick start, with the command-line flags over it; `config_overrides` merged key by key),
    and how they were made: {"recipe", "given" (flags), "dropped" (the recipe's data-specific
    settings dropped because --dataset_name replaced its data), "follows_data"}."""
    parser = build_parser()
    recipe = QUICKSTART
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        recipe, argv = argv[0], argv[1:]
    values = _read_recipe(recipe)
    recipe_dataset = values.get("dataset")
    # Which flags were given: parse with every default suppressed.
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    values, dropped = drop_recipe_data_settings(values, given)
    if "config_overrides" in given:
        merged = {**parse_config_overrides(values.get("config_overrides")), **parse_config_overrides(given["config_overrides"])}
        given["config_overrides"] = json.dumps(merged)
    values = {**values, **given}
    if "use_cpu" not in values and not torch.cuda.is_available():
        values["use_cpu"] = True  # without it, several CPU processes are not wrapped in DDP
    parsed = build_parser().parse_dict(values)
    follows_data = "dataset" in given and given["dataset"] != recipe_dataset
    origin = {"recipe": os.path.basename(recipe), "given": sorted(given), "dropped": dropped, "follows_data": follows_data}
    return parsed, origin


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, EvaluationArguments, CJEPATrainingArguments]:
    """The four argument objects of `parse_run`."""
    return parse_run(argv)[0]


def build_config(model_args: ModelArguments) -> CJEPAConfig:
    return configuration.build_config(model_args.config_overrides, model_args.preset, model_args.objective, "--config_overrides")


def main(argv: list[str] | None = None) -> dict:
    # "done in" is the wall time of the command, imports included; called as a function (tests),
    # of this call
    started = (process_start_time() or time.time()) if argv is None else time.time()
    argv, debug = split_debug(sys.argv[1:] if argv is None else list(argv))
    if any(a in ("-h", "--help", "--help_all", "--help-all", "--help_config", "--help-config") for a in argv):
        print(_help_for(argv), end="")
        raise SystemExit(0)
    # Until the arguments say which process logs, RANK (the launcher's global rank) decides.
    main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO if main_process else logging.WARNING)
    # The output folder is this run's (a lock, taken once the arguments are checked) until it ends.
    with contextlib.ExitStack() as hold:
        with user_errors(debug, "pretrain.py"):
            trainer, config, model, initial_encoder, data_args, eval_args, training_args, survey, plan, pad_to = _set_up(argv, hold)
        return _train_and_export(
            trainer, config, model, initial_encoder, data_args, eval_args, training_args, survey, plan, pad_to, started
        )


def _train_and_export(trainer, config, model, initial_encoder, data_args, eval_args, training_args, survey, plan, pad_to, started) -> dict:
    padded = pad_to == config.image_size
    train_start = time.time()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_time = time.time() - train_start
    trainer.save_model()  # the full CJEPAForPreTraining, to continue training (FSDP: gathered)
    trainer.save_state()  # trainer_state.json: the whole log history beside the model
    summary = {
        "objective": config.objective,
        "loss": config.describe_objective()["formula"],
        "global_step": trainer.state.global_step,
        "train_time_s": train_time,
        **result.metrics,
        "data": survey.to_dict(),
        "evaluation_plan": plan.to_dict(),
        "hardware": hardware_name(training_args.world_size),
    }
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
            where = f"{judgement['protocol']['dataset']} ({judgement['protocol']['test_split']})"
            print(f"\nThe encoder judged on {where}:\n\n{judgement_table(judgement)}\n")
        logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
        if logs:
            plot_training_curves(
                trainer.state.log_history, os.path.join(out, "training_curves.png"), title=f"pretraining: {config.objective}"
            )
            summary["first_log"], summary["last_log"] = logs[0], logs[-1]
        evals = [h for h in trainer.state.log_history if "eval_knn_top1" in h]
        if evals:
            summary["online_eval"] = [
                {k: h[k] for k in ("step", "eval_knn_top1", "eval_linear_top1", "eval_runtime") if k in h} for h in evals
            ]
        summary["wall_time_s"] = time.time() - started
        _write_summary(out, summary)
        encoder_dir = os.path.join(out, "encoder")
        logger.info("exporting the target encoder to %s", encoder_dir)
        export_encoder(out, encoder_dir)
        summary["wall_time_s"] = time.time() - started  # the export included
        _write_summary(out, summary)
        logger.info("done in %.0f s (training %.0f s); target encoder in %s", summary["wall_time_s"], train_time, encoder_dir)
    # Every rank waits for rank 0's exports, then the process group is torn down explicitly:
    # a rank that exits with it still alive can abort in gloo's threads at interpreter exit.
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return summary


def _help_for(argv: list[str]) -> str:
    if any(a in ("--help_config", "--help-config") for a in argv):
        return config_help()
    if any(a in ("--help_all", "--help-all") for a in argv):
        return build_parser().format_help()
    return _help_text(build_parser(), _read_recipe(QUICKSTART))


def _write_summary(out: str, summary: dict) -> None:
    with open(os.path.join(out, "pretrain_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


def hardware_name(world_size: int) -> str:
    """What trained: "2 x NVIDIA H100 80GB HBM3" or "CPU" (with the process count)."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return f"{world_size} x {name}" if world_size > 1 else name


def _set_up(argv: list[str], hold: contextlib.ExitStack):
    """Everything before training, where a mistake is the user's (one line, exit 2 in `main`);
    the output folder is held in `hold` once the arguments are checked."""
    (model_args, data_args, eval_args, training_args), origin = parse_run(argv)
    # should_log: global rank 0 only (log_on_each_node=False), never a node's first process by default
    logging.getLogger().setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    # Everything checkable before the work is checked here.
    check_data_source(data_args.dataset)
    check_evaluation_dataset(eval_args.final_eval_dataset)
    hold.enter_context(hold_output_dir(training_args))
    logger.info(
        "recipe %s%s; command-line flags %s",
        origin["recipe"],
        f", its data-specific settings ({', '.join(origin['dropped'])}) not used with --dataset_name" if origin["dropped"] else "",
        origin["given"],
    )
    set_seed(training_args.seed)
    if model_args.model_name_or_path:
        model = CJEPAForPreTraining.from_pretrained(model_args.model_name_or_path)
        config = model.config
        configuration.check_objective(config, model_args.objective, f"the loss fields of {model_args.model_name_or_path}")
    else:
        config = build_config(model_args)
        model = CJEPAForPreTraining(config)
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
    survey = survey_data(dataset, data_args.dataset, data_args.split, image_column=data_args.image_column, token=data_args.token)
    plan = plan_evaluation(survey, data_args, eval_args, training_args, follows_data=origin["follows_data"])
    monitor = None
    if plan.monitor:
        monitor = build_knn_monitor(plan, config, data_args, seed=training_args.seed)
    elif training_args.eval_strategy != "no" or training_args.eval_on_start:
        raise ValueError(
            f"--eval_strategy {getattr(training_args.eval_strategy, 'value', training_args.eval_strategy)} / --eval_on_start "
            f"{training_args.eval_on_start} need --eval_dataset (the k-NN monitor's labelled images); pass --eval_strategy no "
            "--eval_on_start false to run without it"
        )
    # the exact weights the run starts from, for the final judgement against them
    initial_encoder = copy.deepcopy(model.target_encoder) if eval_args.final_eval_dataset else None
    collator = MaskCollator(config, seed=training_args.seed, rank=rank)
    # The preprocessing every saved folder (checkpoints, the export) carries for AutoImageProcessor
    # users: images that training padded to the model's size (Fashion-MNIST 28 -> 32) are padded,
    # not resized; others are resized and centre-cropped.
    pad_to = dataset.decode_transform.pad_to
    processor = build_image_processor(config, resize=pad_to != config.image_size)
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
    log_start_summary(trainer, config, survey, plan)
    return trainer, config, model, initial_encoder, data_args, eval_args, training_args, survey, plan, pad_to


def log_start_summary(trainer: CJEPATrainer, config: CJEPAConfig, survey, plan) -> None:
    """What is about to run: parameters, data found, steps, global batch and epochs, what is
    evaluated on what, and warnings where one setting makes another meaningless."""
    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoder = sum(p.numel() for p in model.target_encoder.parameters())
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    size = stream_num_examples(trainer.train_dataset) or survey.num_images
    epochs = f"{args.max_steps * global_batch / size:.2f} epochs of {size:,} images" if size else "epochs unknown (stream size not known)"
    logger.info(
        "pretraining: objective %s, encoder %.2fM parameters (%.2fM trainable in all), %dx%d px, patch %d; "
        "%d steps x global batch %d (%d per device x %d accumulation x %d processes) = %s",
        config.objective,
        encoder / 1e6,
        trainable / 1e6,
        config.image_size,
        config.image_size,
        config.patch_size,
        args.max_steps,
        global_batch,
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.world_size,
        epochs,
    )
    info, warnings = start_up_lines(survey, plan, config, args)
    for line in info:
        logger.info("%s", line)
    for line in warnings:
        logger.warning("%s", line)


def export_encoder(run_dir: str, encoder_dir: str) -> None:
    """The target encoder as a release folder (`cjepa_hf.hub.export_release`, the one export
    path): weights, remote code, the image processor training used, and the model card, which
    reads the run's data set, hardware, wall time and judgement from its pretrain_summary.json."""
    import shutil

    from cjepa_hf.hub import export_release

    if os.path.isdir(encoder_dir):
        shutil.rmtree(encoder_dir)  # this run's previous export (a resumed run exports again)
    export_release(run_dir, encoder_dir, model_name=os.path.basename(os.path.normpath(run_dir)))


if __name__ == "__main__":
    main()
