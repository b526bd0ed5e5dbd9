#!/usr/bin/env python
"""Pretrain a C-JEPA model.

    accelerate launch scripts/pretrain.py                                  # quick start: Fashion-MNIST, a few CPU minutes
    accelerate launch scripts/pretrain.py recipes/vit-b16-in1k-600ep.json  # a recipe file (JSON or YAML)
    accelerate launch scripts/pretrain.py --preset vit-s16 --dataset ILSVRC/imagenet-1k --max_steps 1000 ...

Arguments: the fields of ModelArguments and DataArguments below and of
`cjepa_hf.trainer.CJEPATrainingArguments` (all of transformers' TrainingArguments).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, set_seed

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining
from cjepa_hf.modeling_cjepa import build_image_processor
from cjepa_hf.data import build_pretrain_dataset
from cjepa_hf.masking import MaskCollator
from cjepa_hf.plotting import plot_training_curves
from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments

logger = logging.getLogger("cjepa_hf.pretrain")
QUICKSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes", "quickstart-fashion-mnist.json")


@dataclass
class ModelArguments:
    preset: str | None = field(default=None, metadata={"help": "vit-t16, vit-s16, vit-b16, vit-l16, vit-h14 (see CJEPAConfig.from_preset)."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Start from a saved CJEPAForPreTraining (folder or Hub id)."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "JSON object of CJEPAConfig fields, e.g. '{\"image_size\": 32, \"vicreg_weight\": 0}'."},
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="ILSVRC/imagenet-1k",
        metadata={"help": "Hub dataset id, local image folder, parquet/arrow files or glob, tar shards, or fashion_mnist."},
    )
    split: str = field(default="train")
    image_column: str = field(default="image")
    label_column: str | None = field(default="label")
    shuffle_buffer: int = field(default=10_000, metadata={"help": "Examples in the streaming shuffle buffer."})
    streaming: bool = field(default=True)
    token: str | None = field(default=None, metadata={"help": "Hub token for gated datasets (default: the logged-in one)."})


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, CJEPATrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, CJEPATrainingArguments))
    if not argv:
        argv = [QUICKSTART]
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        path = argv[0]
        loader = parser.parse_json_file if path.endswith(".json") else parser.parse_yaml_file
        with open(path) as f:
            values = json.load(f) if path.endswith(".json") else None
        if values is not None and "use_cpu" not in values and not torch.cuda.is_available():
            values["use_cpu"] = True  # without it, several CPU processes are not wrapped in DDP
            return parser.parse_dict(values)
        return loader(path)
    if not torch.cuda.is_available() and "--use_cpu" not in argv:
        argv = [*argv, "--use_cpu", "true"]
    return parser.parse_args_into_dataclasses(args=argv)


def build_config(model_args: ModelArguments) -> CJEPAConfig:
    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"config_overrides must be a JSON object, got {model_args.config_overrides!r}")
    if model_args.preset:
        return CJEPAConfig.from_preset(model_args.preset, **overrides)
    return CJEPAConfig(**overrides)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    if model_args.model_name_or_path:
        model = CJEPAForPreTraining.from_pretrained(model_args.model_name_or_path)
        config = model.config
    else:
        config = build_config(model_args)
        model = CJEPAForPreTraining(config)
    rank, world = training_args.process_index, training_args.world_size
    dataset = build_pretrain_dataset(
        data_args.dataset, image_size=config.image_size, patch_size=config.patch_size, split=data_args.split,
        image_column=data_args.image_column, label_column=data_args.label_column, streaming=data_args.streaming,
        shuffle_buffer=data_args.shuffle_buffer, seed=training_args.seed, rank=rank, world_size=world,
        token=data_args.token,
    )
    collator = MaskCollator(config, seed=training_args.seed, rank=rank)
    # The preprocessing every saved folder (checkpoints, the export) carries for AutoImageProcessor
    # users: images that training padded to the model's size (Fashion-MNIST 28 -> 32) are padded,
    # not resized; others are resized and centre-cropped.
    padded = dataset.decode_transform.pad_to == config.image_size
    processor = build_image_processor(config, resize=not padded)
    trainer = CJEPATrainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collator, processing_class=processor,
    )

    start = time.time()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    wall = time.time() - start
    trainer.save_model()  # the full CJEPAForPreTraining, to continue training
    trainer.save_state()  # trainer_state.json: the whole log history beside the model
    summary = {"wall_time_s": wall, "global_step": trainer.state.global_step, **result.metrics}
    if trainer.is_world_process_zero():
        out = training_args.output_dir
        encoder_dir = os.path.join(out, "encoder")
        model.target_encoder.save_pretrained(encoder_dir)  # what AutoModel users get
        processor.save_pretrained(encoder_dir)
        write_card(encoder_dir, config, training_args, data_args, trainer.state.log_history)
        logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
        if logs:
            plot_training_curves(trainer.state.log_history, os.path.join(out, "training_curves.png"))
            summary["first_log"], summary["last_log"] = logs[0], logs[-1]
        with open(os.path.join(out, "pretrain_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        logger.info("done in %.0f s; target encoder in %s", wall, encoder_dir)
    # Every rank waits for rank 0's exports, then the process group is torn down explicitly:
    # a rank that exits with it still alive can abort in gloo's threads at interpreter exit.
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return summary


def write_card(folder: str, config: CJEPAConfig, training_args, data_args, log_history) -> None:
    """The model card of the exported encoder, from the run's real settings."""
    try:
        from cjepa_hf.hub import render_model_card
    except ImportError:  # hub.py not available: a minimal card
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(f"# C-JEPA encoder\n\nPretrained on `{data_args.dataset}` for {training_args.max_steps} steps.\n")
        return
    card = render_model_card(
        config, model_name=os.path.basename(os.path.normpath(training_args.output_dir)),
        training_args=training_args.to_dict(), results=None, datasets=[data_args.dataset],
    )
    card.save(os.path.join(folder, "README.md"))


if __name__ == "__main__":
    main()
