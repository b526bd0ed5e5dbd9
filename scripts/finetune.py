#!/usr/bin/env python
"""Fine-tune a C-JEPA encoder for image classification with transformers' Trainer.

Shaped like transformers' `examples/pytorch/image-classification/run_image_classification.py`:

    python scripts/finetune.py --model_name_or_path outputs/quickstart --dataset_name fashion_mnist \
        --eval_split test --output_dir outputs/finetune-fmnist --do_train --do_eval \
        --num_train_epochs 5 --per_device_train_batch_size 128 --learning_rate 5e-4 \
        --eval_strategy epoch --save_strategy epoch --load_best_model_at_end --metric_for_best_model accuracy
    python scripts/finetune.py --model_name_or_path me/cjepa-vitb16 --train_dir images/train \
        --validation_dir images/val --output_dir outputs/ft --do_train --do_eval \
        --push_to_hub --hub_model_id me/cjepa-vitb16-myimages

`--model_name_or_path`: a pretraining checkpoint (its EMA target encoder becomes the backbone)
or an exported encoder, a folder or a Hub id; the classification head is new. Data: a Hub
dataset id or ``fashion_mnist`` (`--dataset_name`), or image folders with one sub-folder
per class (`--train_dir` / `--validation_dir`). Without a validation split (and without
`--eval_split`), `--train_val_split` of the training split is held out for evaluation.
Accuracy goes through `evaluate` with the metric module shipped in `cjepa_hf` (offline);
`--metric accuracy` asks the Hub's instead. Writes the model, its image processor, a model
card naming the base model and the measured accuracy, and `all_results.json`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import transformers
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import cjepa_hf  # noqa: F401 - registers the "cjepa" model type with the Auto classes
from cjepa_hf.cli import OneLineParser, split_debug, user_errors
from cjepa_hf.evaluation import (
    ACCURACY_METRIC_PATH,
    batch_transform,
    check_columns,
    collate_classification,
    label_names,
    load_accuracy_metric,
    load_labelled_dataset,
    model_transforms,
    split_train_eval,
    subsample,
)
from cjepa_hf.hub import describe_finetune_base, hub_dataset_id, is_hub_id

logger = logging.getLogger("cjepa_hf.finetune")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "C-JEPA pretraining checkpoint or exported encoder: a folder or a Hub id."})
    base_model_name: str | None = field(
        default=None,
        metadata={"help": "Hub id of the base model for the model card, when model_name_or_path is a local folder."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store models and datasets from the Hub."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model on the Hub."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in one)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Load the model with its own code (not needed when cjepa_hf is installed)."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Re-initialise a checkpoint's classifier whose number of classes differs."}
    )


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, or fashion_mnist (local IDX files)."})
    dataset_config_name: str | None = field(default=None)
    train_dir: str | None = field(default=None, metadata={"help": "Image folder of the training split (a sub-folder per class)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder of the validation split."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on (e.g. test). Default: validation, else a held-out part of train."}
    )
    train_val_split: float = field(default=0.15, metadata={"help": "Fraction of train held out when there is no validation split."})
    image_column_name: str = field(default="image")
    label_column_name: str = field(default="label")
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging, quick runs)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation set."})
    min_crop_scale: float = field(default=0.3, metadata={"help": "Lower area bound of the training RandomResizedCrop."})
    random_flip: bool = field(default=True, metadata={"help": "Random horizontal flips during training."})
    metric: str = field(
        default=ACCURACY_METRIC_PATH,
        metadata={"help": "evaluate module for accuracy: the shipped local one (default, offline) or a Hub name."},
    )

    def __post_init__(self) -> None:
        if self.dataset_name is None and self.train_dir is None and self.validation_dir is None:
            raise ValueError("give --dataset_name (a Hub id or fashion_mnist) or --train_dir / --validation_dir")
        if not 0.0 < self.min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must lie in (0, 1], got {self.min_crop_scale}")


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    parser = OneLineParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict:
    argv, debug = split_debug(sys.argv[1:] if argv is None else list(argv))
    with user_errors(debug, "finetune.py"):  # a bad flag or value: one line, exit 2
        model_args, data_args, training_args = parse_args(argv)
    # The transforms add pixel_values / labels on the fly: the image column must reach them.
    training_args.remove_unused_columns = False
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARN,
    )
    transformers.utils.logging.set_verbosity(logging.INFO if training_args.should_log else logging.WARN)
    set_seed(training_args.seed)

    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train and training_args.resume_from_checkpoint is None:
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None:
            logger.info("resuming from %s (pass another --output_dir to start afresh)", last_checkpoint)

    # ---------------------------------------------------------------- data
    dataset = load_labelled_dataset(
        data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        train_dir=data_args.train_dir,
        validation_dir=data_args.validation_dir,
        cache_dir=model_args.cache_dir,
        token=model_args.token,
    )
    train_ds, eval_ds, eval_name = split_train_eval(
        dataset,
        eval_split=data_args.eval_split,
        train_val_split=data_args.train_val_split,
        label_column=data_args.label_column_name,
        seed=training_args.seed,
    )
    check_columns(train_ds, data_args.image_column_name, data_args.label_column_name)
    labels = label_names(train_ds, data_args.label_column_name)
    id2label = {i: name for i, name in enumerate(labels)}
    label2id = {name: i for i, name in enumerate(labels)}
    train_ds = subsample(train_ds, data_args.max_train_samples, training_args.seed)
    eval_ds = subsample(eval_ds, data_args.max_eval_samples, training_args.seed)
    logger.info("%d training examples, %d evaluation examples (%s), %d classes", len(train_ds), len(eval_ds), eval_name, len(labels))

    # ---------------------------------------------------------------- model
    hub_kwargs = dict(
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
        finetuning_task="image-classification",
        **hub_kwargs,
    )
    model = AutoModelForImageClassification.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **hub_kwargs,
    )

    # ---------------------------------------------------------------- transforms
    # The model's saved image processor (preprocessor_config.json) decides, for any dataset
    # (e.g. an image folder of 28 px images under a padding processor); only a model without
    # one falls back to the dataset-name rule (Fashion-MNIST padded, the rest resized).
    source = data_args.dataset_name if data_args.train_dir is None and data_args.validation_dir is None else None
    train_transform, eval_transform, image_processor = model_transforms(
        model_args.model_name_or_path,
        config,
        source,
        scale=(data_args.min_crop_scale, 1.0),
        hflip=data_args.random_flip,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
    )
    columns = (data_args.image_column_name, data_args.label_column_name)
    train_ds = train_ds.with_transform(batch_transform(train_transform, *columns))
    eval_ds = eval_ds.with_transform(batch_transform(eval_transform, *columns))
    # `image_processor` is saved with the model: AutoImageProcessor / pipeline users get the
    # evaluation preprocessing.

    metric = load_accuracy_metric(data_args.metric)

    def compute_metrics(prediction) -> dict[str, float]:
        predictions = np.argmax(prediction.predictions, axis=1)
        return metric.compute(predictions=predictions, references=prediction.label_ids)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=eval_ds if training_args.do_eval else None,
        compute_metrics=compute_metrics,
        processing_class=image_processor,
        data_collator=collate_classification,
    )

    all_results: dict = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        all_results.update(train_result.metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_ds)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        all_results.update(metrics)

    base_model = model_args.base_model_name or model_args.model_name_or_path
    if model_args.base_model_name is not None and not is_hub_id(model_args.base_model_name):
        raise ValueError(f"--base_model_name must be a Hub id ('owner/name'), got {model_args.base_model_name!r}")
    card_kwargs = {
        # The card's base_model links to the Hub: only a Hub id goes there, never a local path
        # (None lets Trainer leave it out, as it does for a local folder).
        "finetuned_from": base_model if is_hub_id(base_model) else None,
        "tasks": "image-classification",
        "tags": ["image-classification", "vision", "cjepa", "jepa"],
    }
    if data_args.dataset_name is not None:
        dataset_id = hub_dataset_id(data_args.dataset_name)
        card_kwargs["dataset"] = dataset_id if is_hub_id(dataset_id) else os.path.basename(os.path.normpath(dataset_id))
        if is_hub_id(dataset_id):  # the card's `datasets:` links to the Hub: never a local path
            card_kwargs["dataset_tags"] = dataset_id
    elif data_args.train_dir is not None:
        card_kwargs["dataset"] = os.path.basename(os.path.normpath(data_args.train_dir))
    all_results.update(base_model=base_model, eval_split=eval_name, num_labels=len(labels))
    if trainer.is_world_process_zero():
        # Trainer.save_metrics merged train and eval into all_results.json; add what they lack.
        path = os.path.join(training_args.output_dir, "all_results.json")
        merged = {}
        if os.path.exists(path):
            with open(path) as f:
                merged = json.load(f)
        merged.update(base_model=base_model, eval_split=eval_name, num_labels=len(labels))
        with open(path, "w") as f:
            json.dump(merged, f, indent=4, sort_keys=True)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    else:
        trainer.create_model_card(**card_kwargs)
        if trainer.is_world_process_zero():  # name the base, also a local one (Trainer says "from scratch")
            readme = os.path.join(training_args.output_dir, "README.md")
            with open(readme, encoding="utf-8") as f:
                text = f.read()
            with open(readme, "w", encoding="utf-8") as f:
                f.write(describe_finetune_base(text, base_model, config))
    print(json.dumps(all_results, indent=2, sort_keys=True))
    return all_results


if __name__ == "__main__":
    main()
