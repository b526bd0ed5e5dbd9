#!/usr/bin/env python
"""Linear probe and k-NN accuracy of a frozen C-JEPA encoder (or a baseline).

    python scripts/linear_probe.py --model_name_or_path outputs/quickstart/encoder --dataset_name fashion_mnist
    python scripts/linear_probe.py --model_name_or_path outputs/quickstart --last_n_layers 4 --output probe.json
    python scripts/linear_probe.py --model_name_or_path outputs/quickstart --random_init   # random-weights baseline
    python scripts/linear_probe.py --raw_pixels --image_size 32 --dataset_name fashion_mnist  # raw-pixel baseline
    python scripts/linear_probe.py --model_name_or_path me/cjepa-vitb16 --dataset_name ILSVRC/imagenet-1k \
        --eval_split validation --max_train_samples 100000 --feature_cache_dir features/

The encoder is `AutoModel.from_pretrained(model_name_or_path)`: a pretraining checkpoint gives
its EMA target encoder. Features (mean-pooled; `--last_n_layers n`: the concatenated pooled,
layer-normed last n blocks) are extracted once per split, then the linear probe (weight decay
picked on a held-out part of the training split) and the k-NN classifier are scored on the
evaluation split. Images go through the model's saved image processor when it has one
(any dataset), else the dataset-name rule (Fashion-MNIST padded 28 -> 32, the rest resized).
Prints a table and writes JSON (`--output`), whose "results" key (an encoder's linear-probe
and k-NN accuracy, fractions in [0, 1]) `scripts/push_to_hub.py --results` accepts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch

from cjepa_hf.cli import OneLineParser, split_debug, user_errors
from cjepa_hf.data import auto_pad_to, is_fashion_mnist
from cjepa_hf.evaluation import (
    DEFAULT_WEIGHT_DECAYS,
    ClassificationTransform,
    dataset_display_name,
    evaluate_features,
    extract_features,
    label_names,
    load_encoder,
    load_labelled_dataset,
    markdown_table,
    model_transforms,
    probe_results,
    raw_pixel_features,
    split_train_eval,
    subsample,
)

logger = logging.getLogger("cjepa_hf.linear_probe")


@dataclass
class ProbeArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretraining checkpoint or exported encoder (folder or Hub id)."}
    )
    random_init: bool = field(default=False, metadata={"help": "Baseline: the same architecture with random weights."})
    raw_pixels: bool = field(default=False, metadata={"help": "Baseline: the normalised pixels as features."})
    image_size: int | None = field(default=None, metadata={"help": "Image size for --raw_pixels without a model."})
    dataset_name: str | None = field(default="fashion_mnist", metadata={"help": "Hub id or fashion_mnist."})
    dataset_config_name: str | None = field(default=None)
    train_dir: str | None = field(default=None, metadata={"help": "Image folder of the training split (class sub-folders)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder of the evaluation split."})
    train_split: str = field(default="train")
    eval_split: str | None = field(
        default=None, metadata={"help": "Default: 'test' if the dataset has one, else 'validation', else a held-out part of train."}
    )
    train_val_split: float = field(default=0.15, metadata={"help": "Held-out fraction of train when there is no eval split."})
    image_column_name: str = field(default="image")
    label_column_name: str = field(default="label")
    max_train_samples: int | None = field(default=None, metadata={"help": "Random subset of the training split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Random subset of the evaluation split."})
    last_n_layers: int = field(default=1, metadata={"help": "Concatenate the pooled, layer-normed last n blocks."})
    batch_size: int = field(default=256)
    num_workers: int = field(default=0)
    device: str | None = field(default=None, metadata={"help": "Default: cuda when available, else cpu."})
    feature_cache_dir: str | None = field(default=None, metadata={"help": "Cache the extracted features (.pt) here."})
    weight_decays: str = field(
        default=",".join(f"{wd:g}" for wd in DEFAULT_WEIGHT_DECAYS),
        metadata={"help": "Comma-separated weight decays of the sweep (chosen on held-out TRAIN examples)."},
    )
    holdout_fraction: float = field(default=0.2, metadata={"help": "Part of the training features held out for the sweep."})
    probe_optimizer: str = field(default="lbfgs", metadata={"help": "lbfgs (full batch) or adamw."})
    max_iter: int = field(default=100, metadata={"help": "L-BFGS iterations."})
    epochs: int = field(default=100, metadata={"help": "AdamW epochs."})
    knn_k: int = field(default=20)
    knn_temperature: float = field(default=0.07)
    seed: int = field(default=0)
    output: str | None = field(default=None, metadata={"help": "Write the results as JSON here."})


def _default_eval_split(dataset, args: ProbeArguments) -> str | None:
    if args.eval_split is not None:
        return args.eval_split
    for name in ("test", "validation"):
        if name in dataset:
            return name
    return None


def run(args: ProbeArguments) -> dict:
    if not args.raw_pixels and not args.model_name_or_path:
        raise ValueError("give --model_name_or_path (an encoder), or --raw_pixels for the raw-pixel baseline")
    if args.raw_pixels and args.random_init:
        raise ValueError("--raw_pixels and --random_init are two different baselines: choose one")
    torch.manual_seed(args.seed)
    dataset = load_labelled_dataset(
        None if (args.train_dir or args.validation_dir) else args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_dir=args.train_dir,
        validation_dir=args.validation_dir,
    )
    train, test, eval_name = split_train_eval(
        dataset,
        eval_split=_default_eval_split(dataset, args),
        train_split=args.train_split,
        train_val_split=args.train_val_split,
        label_column=args.label_column_name,
        seed=args.seed,
    )
    names = label_names(train, args.label_column_name)
    train = subsample(train, args.max_train_samples, args.seed)
    test = subsample(test, args.max_eval_samples, args.seed)
    skipped = {}
    if not is_fashion_mnist(args.dataset_name) or args.train_dir or args.validation_dir:  # files can be bad; IDX arrays not
        train, skipped["train"] = drop_bad_images(train, args.image_column_name)
        test, skipped["eval"] = drop_bad_images(test, args.image_column_name)
    dataset_label = args.dataset_name if not (args.train_dir or args.validation_dir) else args.train_dir
    columns = dict(image_column=args.image_column_name, label_column=args.label_column_name)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    start = time.time()
    if args.raw_pixels:
        if args.model_name_or_path:  # the model's input size, for a like-for-like baseline
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(args.model_name_or_path)
            _, transform, _ = model_transforms(args.model_name_or_path, config, None if args.train_dir else args.dataset_name)
        else:
            image_size = args.image_size or 32
            patch_size = image_size  # no patch grid: Fashion-MNIST is padded whenever image_size >= 28
            pad_to = auto_pad_to(args.dataset_name, image_size, patch_size) if not args.train_dir else None
            transform = ClassificationTransform(image_size, train=False, pad_to=pad_to)
        logger.info("raw pixels of %d train and %d %s images", len(train), len(test), eval_name)
        train_x, train_y = raw_pixel_features(train, transform=transform, batch_size=args.batch_size, progress="pixels (train)", **columns)
        test_x, test_y = raw_pixel_features(
            test, transform=transform, batch_size=args.batch_size, progress=f"pixels ({eval_name})", **columns
        )
        method = "raw pixels"
    else:
        model = load_encoder(args.model_name_or_path, random_init=args.random_init, seed=args.seed)
        config = model.config
        # The model folder's image processor, when it has one, for any dataset.
        _, transform, _ = model_transforms(args.model_name_or_path, config, None if args.train_dir else args.dataset_name)
        method = "random init" if args.random_init else "encoder"
        caches = {}
        for split_name, n in (("train", len(train)), ("eval", len(test))):
            if args.feature_cache_dir:
                tag = "random" if args.random_init else "pretrained"
                caches[split_name] = os.path.join(
                    args.feature_cache_dir, f"{split_name}-{tag}-last{args.last_n_layers}-n{n}-seed{args.seed}.pt"
                )
        key = {
            "model": os.path.abspath(args.model_name_or_path) if os.path.exists(args.model_name_or_path) else args.model_name_or_path,
            "random_init": args.random_init,
            "last_n_layers": args.last_n_layers,
            "dataset": dataset_label,
            "seed": args.seed,
            "transform": repr(transform),
        }
        common = dict(
            batch_size=args.batch_size,
            last_n_layers=args.last_n_layers,
            transform=transform,
            device=device,
            num_workers=args.num_workers,
            **columns,
        )
        logger.info("features of %d train and %d %s images (%s)", len(train), len(test), eval_name, method)
        train_x, train_y = extract_features(
            model, train, cache_path=caches.get("train"), cache_key={**key, "split": "train"}, progress="features (train)", **common
        )
        test_x, test_y = extract_features(
            model, test, cache_path=caches.get("eval"), cache_key={**key, "split": eval_name}, progress=f"features ({eval_name})", **common
        )
    extract_s = time.time() - start
    logger.info("features in %.0f s; linear probe (weight decay sweep) and k-NN", extract_s)

    start = time.time()
    weight_decays = [float(v) for v in args.weight_decays.split(",") if v.strip()]
    result = evaluate_features(
        train_x,
        train_y,
        test_x,
        test_y,
        k=args.knn_k,
        temperature=args.knn_temperature,
        weight_decays=weight_decays,
        holdout_fraction=args.holdout_fraction,
        optimizer=args.probe_optimizer,
        max_iter=args.max_iter,
        epochs=args.epochs,
        seed=args.seed,
        progress="linear probe (weight-decay sweep, then the refit)",
    )
    result.update(
        method=method,
        model=args.model_name_or_path,
        dataset=dataset_label,
        train_split=args.train_split,
        eval_split=eval_name,
        num_train=len(train_y),
        num_eval=len(test_y),
        num_classes=len(names),
        last_n_layers=args.last_n_layers,
        extract_seconds=round(extract_s, 2),
        probe_seconds=round(time.time() - start, 2),
        args=asdict(args),
        skipped_images={split: dict(counts) for split, counts in skipped.items()},
    )
    result["results"] = probe_results(result)  # what push_to_hub.py --results reads; [] for a baseline
    return result


def drop_bad_images(dataset, image_column: str):
    """`dataset` without the records whose image cannot be decoded (as pretraining skips them:
    `cjepa_hf.data.decoding.decode_image` raises `BadRecord`), and their count by reason,
    logged. Every image is decoded once here."""
    import datasets

    from cjepa_hf.data.decoding import BadRecord, decode_image

    if not isinstance(dataset, datasets.Dataset) or not isinstance(dataset.features.get(image_column), datasets.Image):
        return dataset, Counter()
    raw = dataset.cast_column(image_column, datasets.Image(decode=False)).select_columns([image_column])
    keep, bad = [], Counter()
    for index, row in enumerate(raw):
        try:
            decode_image(row[image_column], max_image_pixels=None)
            keep.append(index)
        except BadRecord as error:
            bad[error.reason] += 1
            logger.warning("skipping bad image %d (%s)", index, error)
    if bad:
        logger.warning("skipped %d bad image(s) of %d: %s", sum(bad.values()), len(raw), dict(bad))
        dataset = dataset.select(keep)
    return dataset, bad


def format_result(result: dict) -> str:
    lp = result["linear_probe"]
    stats = result["feature_stats"]
    row = [
        result["method"],
        f"{100 * lp['accuracy']:.2f}" if lp else "-",
        f"{lp['weight_decay']:g}" if lp else "-",
        *(f"{100 * v:.2f}" for v in result["knn"].values()),
        stats["dims"],
        f"{stats['feature_std']:.4f}",
        f"{stats['effective_rank']:.2f}",
        f"{stats['effective_rank_centered']:.2f}",
    ]
    header = [
        "features",
        "linear probe top-1 %",
        "chosen wd",
        *(f"k-NN {w} (k={result['knn_k']}) %" for w in result["knn"]),
        "dims",
        "feature std",
        "eff. rank",
        "eff. rank (centred)",
    ]
    name = result["dataset"] if not os.path.exists(str(result["dataset"])) else dataset_display_name(result["dataset"])
    title = f"{name}: {result['num_train']} training examples, {result['num_eval']} in '{result['eval_split']}'"
    return title + "\n\n" + markdown_table(header, [row])


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(ProbeArguments)
    argv, debug = split_debug(sys.argv[1:] if argv is None else list(argv))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    with user_errors(debug, "linear_probe.py"):  # a bad flag, a missing folder: one line, exit 2
        if len(argv) == 1 and argv[0].endswith(".json"):
            (args,) = parser.parse_json_file(argv[0])
        else:
            (args,) = parser.parse_args_into_dataclasses(args=argv)
        result = run(args)
    print(format_result(result))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
        logger.info("results written to %s", args.output)
    return result


if __name__ == "__main__":
    main()
