"""Releases on the Hugging Face Hub: model cards, the release folder, the upload.

A release is the EMA *target* encoder of a run (the encoder the paper evaluates) saved
as a `CJEPAModel`:

    release/
      config.json               CJEPAConfig with `auto_map` (AutoConfig / AutoModel / ...)
      model.safetensors         target-encoder weights, safetensors only
      configuration_cjepa.py    remote code: loads with `trust_remote_code=True`
      modeling_cjepa.py         without `cjepa_hf` installed
      losses.py
      preprocessor_config.json  the image processor the run saved (copied, never rebuilt)
      README.md                 the model card

Cards are rendered from `model_cards/cjepa_model_card.md` (a Jinja2 template) and
`model_cards/variants.json` (per-variant names, licence, tags) with the run's real
config, its training arguments and the results measured on it. A result that was not
measured is written as "not evaluated": no number is ever filled in.

Nothing here unpickles: weights are read with safetensors, training arguments from
JSON (`training_args.json`); Trainer's `training_args.bin` is never opened.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .configuration_cjepa import CJEPAConfig
from .modeling_cjepa import REMOTE_CODE_FILES, CJEPAModel, build_image_processor

TEMPLATE_NAME = "cjepa_model_card.md"
VARIANTS_NAME = "variants.json"
MODEL_CARDS_ENV = "CJEPA_MODEL_CARDS_DIR"


def model_cards_dir() -> Path:
    """Where the card template and variants live: $CJEPA_MODEL_CARDS_DIR if set; else
    `model_cards/` at the repository root (a checkout or an editable install); else the copy
    a wheel installs under `<prefix>/share/cjepa-hf/model_cards` (setup.cfg `data_files`)."""
    if os.environ.get(MODEL_CARDS_ENV):
        return Path(os.environ[MODEL_CARDS_ENV])
    candidates = [
        Path(__file__).resolve().parents[2] / "model_cards",
        Path(sys.prefix) / "share" / "cjepa-hf" / "model_cards",
    ]
    for folder in candidates:
        if (folder / TEMPLATE_NAME).is_file():
            return folder
    raise FileNotFoundError(
        f"no model-card template {TEMPLATE_NAME!r} in any of {[os.fspath(c) for c in candidates]}; "
        f"set {MODEL_CARDS_ENV} to a folder holding {TEMPLATE_NAME} and {VARIANTS_NAME}"
    )

LIBRARY_NAME = "transformers"
PIPELINE_TAG = "image-feature-extraction"
BASE_TAGS = ("cjepa", "jepa", "self-supervised-learning", "vision-transformer", "image-feature-extraction")

# Every file of a release folder, and nothing else.
RELEASE_FILES = tuple(
    sorted(("README.md", "config.json", "model.safetensors", "preprocessor_config.json", *REMOTE_CODE_FILES))
)
# Pickle-based weight formats: a release never carries them.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tar")

# One result as passed in (results.json) -> EvalResult field. Short names or EvalResult's own.
_RESULT_ALIASES = {
    "task": "task_type",
    "dataset": "dataset_type",
    "split": "dataset_split",
    "config": "dataset_config",
    "metric": "metric_type",
    "value": "metric_value",
}
_RESULT_FIELDS = {f.name for f in dataclasses.fields(EvalResult)}
_RESULT_REQUIRED = ("task_type", "dataset_type", "metric_type", "metric_value")

# Training arguments shown in the card, in this order (TrainingArguments names).
_RECIPE_KEYS = (
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay", "optim",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "bf16", "fp16", "tf32", "seed", "data_seed",
)
_SECRET_MARKERS = ("token", "password", "secret", "credential")
# Accuracy in every card and model-index is a fraction in [0, 1] (what Trainer's
# `eval_accuracy`, `evaluate`'s accuracy and scripts/linear_probe.py report), never percent.
_FRACTION_METRICS = ("accuracy", "top-1 accuracy", "top-5 accuracy", "top1_accuracy", "top5_accuracy")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
PROCESSOR_NAME = "preprocessor_config.json"


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached (offline mode, no connection, a timeout) while pushing."""


def is_hub_id(name: Any) -> bool:
    """Whether `name` is a Hub repo id as the Hub spells new ones, "owner/name", and not a
    path that exists here (a local folder "outputs/run" looks like an id but is a folder)."""
    if not isinstance(name, str) or not _HUB_ID.fullmatch(name) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


# ============================================================================ variants


def load_variants(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The release family from `model_cards/variants.json`: name -> title, family
    ("cjepa" | "ijepa"), preset, licence, tags, base model, datasets, summary."""
    path = Path(path) if path is not None else model_cards_dir() / VARIANTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no model-card variants file at {os.fspath(path)!r}")
    with open(path, encoding="utf-8") as f:
        variants = json.load(f)
    return {name: entry for name, entry in variants.items() if not name.startswith("_")}


def _geometry(config: CJEPAConfig) -> dict[str, int]:
    return {
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "patch_size": config.patch_size,
    }


def variant_mismatches(config: CJEPAConfig, variant: Mapping[str, Any]) -> list[str]:
    """Where the config's encoder differs from the variant's preset, as 'field: config X, preset Y'."""
    if not variant.get("preset"):
        return []
    preset = _geometry(CJEPAConfig.from_preset(variant["preset"]))
    actual = _geometry(config)
    return [f"{k}: config {actual[k]}, preset {preset[k]}" for k in preset if actual[k] != preset[k]]


def infer_variant(config: CJEPAConfig, family: str = "cjepa", variants: Mapping[str, Mapping] | None = None) -> str:
    """The variant of `family` whose preset has this config's encoder geometry, else the
    family's generic entry (a custom size)."""
    variants = variants if variants is not None else load_variants()
    for name, entry in variants.items():
        if entry.get("family") == family and entry.get("preset") and not variant_mismatches(config, entry):
            return name
    if family not in variants:
        raise ValueError(f"no generic model-card variant for family {family!r}; known: {sorted(variants)}")
    return family


# ============================================================================ results


def to_eval_result(result: Mapping[str, Any]) -> EvalResult:
    """One measured result -> `EvalResult`.

    Keys: task (e.g. "image-classification"), dataset (Hub id), metric (e.g. "accuracy"),
    value (a finite number), optional dataset_name, split, config, metric_name,
    task_name, protocol ("linear probe", "fine-tune", "k-NN", ...: prefixed to the
    metric name), source_name / source_url, or any `EvalResult` field under its own name."""
    if not isinstance(result, Mapping):
        raise ValueError(f"a result must be a mapping, got {result!r}")
    fields: dict[str, Any] = {}
    protocol = None
    for key, value in result.items():
        if key == "protocol":
            protocol = value
            continue
        name = _RESULT_ALIASES.get(key, key)
        if name not in _RESULT_FIELDS:
            allowed = sorted({*_RESULT_ALIASES, *_RESULT_FIELDS, "protocol"})
            raise ValueError(f"unknown result key {key!r} in {dict(result)!r}; allowed keys: {', '.join(allowed)}")
        fields[name] = value
    missing = [k for k in _RESULT_REQUIRED if fields.get(k) is None]
    if missing:
        raise ValueError(f"result {dict(result)!r} lacks {missing} (task, dataset, metric and value are required)")
    value = fields["metric_value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"a result value must be a finite measured number, got {value!r} in {dict(result)!r}")
    if str(fields["metric_type"]).lower() in _FRACTION_METRICS and not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{fields['metric_type']} must be a fraction in [0, 1] (e.g. 0.8125, not 81.25): cards and model-index "
            f"use fractions throughout, as Trainer and scripts/linear_probe.py report them; got {value!r} in {dict(result)!r}"
        )
    fields.setdefault("dataset_name", fields["dataset_type"])
    if protocol and not fields.get("metric_name"):
        fields["metric_name"] = f"{protocol} {fields['metric_type']}"
    return EvalResult(**fields)


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A results file: a JSON list of result dicts, or {"results": [...]}, which is also what
    `scripts/linear_probe.py --output` writes for an encoder (its "results" key)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, Mapping):
        data = data.get("results")
    if not isinstance(data, list):
        raise ValueError(
            f"{os.fspath(path)!r} must hold a JSON list of results or {{'results': [...]}} (scripts/linear_probe.py "
            "--output writes one for an encoder; a baseline's output has none)"
        )
    return data


# ============================================================================ training records


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def recipe_rows(training_args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows of the training recipe: the usual `TrainingArguments` fields in a
    fixed order, then every field that `TrainingArguments` lacks (the C-JEPA schedule
    fields of a `TrainingArguments` subclass). Unset values, paths and secrets are left out."""
    from transformers import TrainingArguments

    standard = {f.name for f in dataclasses.fields(TrainingArguments)}
    args = dict(training_args)
    rows = []

    def keep(key: str, value: Any) -> bool:
        if value is None or value == {} or value == [] or value == "":
            return False
        if any(m in key.lower() for m in _SECRET_MARKERS):
            return False
        if key == "max_steps" and value is not None and value <= 0:
            return False
        if key == "num_train_epochs" and (args.get("max_steps") or 0) > 0:
            return False  # Trainer ignores epochs when max_steps is set
        if key == "lr_scheduler_type" and "warmup_start_lr" in args:
            return False  # CJEPATrainer replaces Trainer's scheduler: see the schedule row
        return True

    for key in _RECIPE_KEYS:
        if key in args and keep(key, args[key]):
            rows.append((key, _fmt(args[key])))
    if "warmup_start_lr" in args:  # CJEPATrainingArguments: say what the schedules are
        rows.append(("learning-rate schedule", f"linear warmup {_fmt(args['warmup_start_lr'])} -> "
                     f"{_fmt(args.get('learning_rate'))} over warmup_steps, then cosine to {_fmt(args.get('final_lr'))}"))
        rows.append(("weight-decay schedule", f"{args.get('weight_decay_schedule', 'cosine')} "
                     f"{_fmt(args.get('weight_decay'))} -> {_fmt(args.get('final_weight_decay'))}"))
        rows.append(("EMA momentum", f"linear {_fmt(args.get('ema_momentum'))} -> {_fmt(args.get('final_ema_momentum'))}"))
    for key in sorted(args):
        if key in standard or key in _RECIPE_KEYS or not keep(key, args[key]):
            continue
        if key.endswith(("_dir", "_path")) or key in ("output_dir",):
            continue
        rows.append((key, _fmt(args[key])))
    return rows


def run_rows(trainer_state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What `trainer_state.json` records of the run: steps, epochs, last logged loss."""
    rows = []
    for key, label in (("global_step", "optimizer steps"), ("epoch", "epochs"), ("train_batch_size", "train_batch_size")):
        if trainer_state.get(key) is not None:
            rows.append((label, _fmt(trainer_state[key])))
    losses = [e for e in trainer_state.get("log_history", []) if "loss" in e]
    if losses:
        last = losses[-1]
        rows.append(("last logged training loss", f"{_fmt(float(last['loss']))} (step {last.get('step', '?')})"))
    return rows


def read_training_records(checkpoint_dir: str | os.PathLike) -> tuple[dict | None, dict | None]:
    """(training_args, trainer_state) from JSON files next to a checkpoint:
    `training_args.json` and `trainer_state.json` in the folder, or, for a Trainer
    `checkpoint-N` folder, in its parent output folder. Never opens `training_args.bin`."""
    folder = Path(checkpoint_dir)
    places = [folder] + ([folder.parent] if folder.name.startswith("checkpoint-") else [])
    found: dict[str, dict | None] = {"training_args.json": None, "trainer_state.json": None}
    for name in found:
        for place in places:
            if (place / name).is_file():
                with open(place / name, encoding="utf-8") as f:
                    found[name] = json.load(f)
                break
    return found["training_args.json"], found["trainer_state.json"]


# ============================================================================ the card


def _count_parameters(config: CJEPAConfig) -> int | None:
    try:
        with torch.device("meta"):
            return CJEPAModel(config).num_parameters()
    except Exception:  # counting is a nicety; a card must still render
        return None


def _rows(pairs: Sequence[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(k, _fmt(v)) for k, v in pairs]


def preprocessing_rows(processor: Any) -> list[tuple[str, str]]:
    """What an image processor does, as (step, value) rows, read off the processor itself
    (so a padding processor is described as padding, not as the default resize)."""
    from transformers.image_utils import PILImageResampling

    rows: list[tuple[str, str]] = []
    size = dict(getattr(processor, "size", None) or {})
    if getattr(processor, "do_resize", False):
        try:
            resample = PILImageResampling(processor.resample).name.lower()
        except (TypeError, ValueError):
            resample = str(processor.resample)
        if "shortest_edge" in size:
            rows.append(("resize shortest edge", f"{size['shortest_edge']} ({resample})"))
        else:
            rows.append(("resize", f"{size.get('height')} x {size.get('width')} ({resample})"))
    else:
        rows.append(("resize", "none: images keep their size"))
    if getattr(processor, "do_center_crop", False):
        crop = dict(processor.crop_size)
        note = "" if getattr(processor, "do_resize", False) else " (a smaller image is padded with black, centred)"
        rows.append(("center crop", f"{crop.get('height')} x {crop.get('width')}{note}"))
    if getattr(processor, "do_rescale", False):
        rows.append(("rescale", f"x {processor.rescale_factor:g}"))
    if getattr(processor, "do_normalize", False):
        rows.append(("mean", _fmt(tuple(processor.image_mean))))
        rows.append(("std", _fmt(tuple(processor.image_std))))
    rows.append(("processor class", type(processor).__name__))
    return rows


def _format_seconds(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    hours = seconds / 3600
    return f"{seconds:.0f} s ({hours:.1f} h)" if hours >= 1 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def compute_rows(compute: Mapping[str, Any] | None, trainer_state: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(name, value) rows of the compute a run used. `compute`: "hardware" (free text, e.g.
    "8 x NVIDIA A100 80GB"), "wall_time_s" (seconds); else the wall time is read from the
    `train_runtime` that Trainer logs at the end of training, when `trainer_state` has it."""
    compute = dict(compute or {})
    wall = compute.get("wall_time_s")
    if wall is None and trainer_state:
        runtimes = [e["train_runtime"] for e in trainer_state.get("log_history", []) if "train_runtime" in e]
        wall = runtimes[-1] if runtimes else None
    rows = [
        ("hardware", str(compute["hardware"]) if compute.get("hardware") else "not recorded"),
        ("training wall time", _format_seconds(wall) if wall is not None else "not recorded"),
    ]
    for key, value in compute.items():
        if key not in ("hardware", "wall_time_s") and value is not None:
            rows.append((key, _fmt(value)))
    return rows


def library_versions() -> list[tuple[str, str]]:
    """(library, version) of the libraries writing this card."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    rows = [("cjepa-hf", __version__)]
    for name in ("transformers", "torch", "huggingface_hub", "safetensors"):
        try:
            rows.append((name, version(name)))
        except PackageNotFoundError:
            rows.append((name, "not installed"))
    return rows


def usage_id(model_name: str, model_path: str | os.PathLike | None = None) -> str:
    """What the card's snippets pass to `from_pretrained`: the Hub id when `model_name` is
    one, else the folder path `model_path`; never a bare name that loads from nowhere."""
    if is_hub_id(model_name):
        return model_name
    if model_path is not None:
        return os.fspath(model_path)
    warnings.warn(
        f"model_name {model_name!r} is not a Hub id ('owner/name') and no model_path was given: the card's usage "
        f"snippets load from the placeholder 'path/to/{model_name}'; pass model_path=<the folder the model is saved in> "
        "or a Hub id",
        UserWarning,
        stacklevel=3,
    )
    return f"path/to/{model_name}"


def render_model_card(
    config: CJEPAConfig,
    *,
    model_name: str,
    training_args: Mapping[str, Any] | None = None,
    results: Sequence[Mapping[str, Any]] | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    variant: str | None = None,
    license: str | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    conversion: Mapping[str, Any] | None = None,
    template_path: str | os.PathLike | None = None,
    variants_path: str | os.PathLike | None = None,
    image_processor: Any | None = None,
    model_path: str | os.PathLike | None = None,
    compute: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Render the model card of a release from the run's real config and measured results.

    config: the run's `CJEPAConfig` (architecture, masking, loss, VICReg source).
    model_name: the Hub repo id, or a name (the title and the model-index name).
    model_path: the folder the model is saved in; the usage snippets load from it when
        `model_name` is not a Hub id (see `usage_id`).
    image_processor: the processor saved beside the model, described in the card;
        default `build_image_processor(config)` (resize + centre crop).
    compute: "hardware" and "wall_time_s" of the run, when known (see `compute_rows`).
    training_args: the run's training arguments as a dict (`TrainingArguments.to_dict()`);
        None: the recipe section says they were not recorded.
    results: measured results (see `to_eval_result`); None or []: "not evaluated", no
        model-index.
    base_model, datasets, license: Hub metadata; default to the variant's entry. `base_model`
        must be Hub ids ('owner/name'); a local path is refused (it means nothing on the Hub).
    variant: a key of `model_cards/variants.json`; default: inferred from the geometry
        (family "ijepa" when `conversion` is given, else "cjepa").
    trainer_state: `trainer_state.json` of the run (steps, epochs, last loss).
    conversion: for converted I-JEPA weights: source, format, epoch, encoder, sha256, note.
    """
    variants = load_variants(variants_path)
    if variant is None:
        variant = infer_variant(config, "ijepa" if conversion else "cjepa", variants)
    if variant not in variants:
        raise ValueError(f"unknown model-card variant {variant!r}; known variants: {', '.join(sorted(variants))}")
    entry = dict(variants[variant])
    family = entry["family"]
    mismatches = variant_mismatches(config, entry)
    if mismatches:
        warnings.warn(
            f"the config does not have the {entry['title']} geometry ({'; '.join(mismatches)}); the card describes "
            "the config as it is and says so",
            UserWarning,
            stacklevel=2,
        )

    eval_results = [to_eval_result(r) for r in (results or [])]
    if isinstance(datasets, str):
        datasets = [datasets]
    datasets = list(datasets) if datasets else list(entry.get("datasets") or [])
    base_model = base_model if base_model is not None else entry.get("base_model")
    base_models = [base_model] if isinstance(base_model, str) else list(base_model or [])
    not_ids = [b for b in base_models if not is_hub_id(b)]
    if not_ids:
        raise ValueError(
            f"base_model must be Hub ids ('owner/name'), got {not_ids}: the card's metadata links it on the Hub, where "
            "a local path means nothing; leave base_model out for a model that did not start from a Hub model"
        )
    license = license or entry["license"]
    trained_with_vicreg = family == "cjepa" and config.vicreg_weight > 0
    tags = list(dict.fromkeys([*BASE_TAGS, *entry.get("tags", []), *(["vicreg"] if trained_with_vicreg else [])]))

    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=tags,
        datasets=datasets or None,
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        model_name=model_name if eval_results else None,  # only the model-index uses it
        eval_results=eval_results or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
    )

    processor = image_processor if image_processor is not None else build_image_processor(config)
    load_id = usage_id(model_name, model_path)
    architecture = _rows([
        ("image size", f"{config.image_size} x {config.image_size}"),
        ("patch size", config.patch_size),
        ("patch tokens", f"{config.num_patches} ({config.grid_size} x {config.grid_size}), no CLS token"),
        ("width / depth / heads", f"{config.hidden_size} / {config.num_hidden_layers} / {config.num_attention_heads}"),
        ("MLP size", config.intermediate_size),
        ("LayerNorm eps", config.layer_norm_eps),
        ("position embeddings", "fixed 2-D sin-cos"),
        ("predictor width / depth / heads (pretraining only)",
         f"{config.predictor_hidden_size} / {config.predictor_num_hidden_layers} / {config.predictor_num_attention_heads}"),
    ])
    masking = _rows([
        ("target blocks per image", config.num_target_blocks),
        ("target block scale", config.target_scale),
        ("target block aspect ratio", config.target_aspect_ratio),
        ("context block scale", config.context_scale),
        ("context block aspect ratio", config.context_aspect_ratio),
        ("targets may overlap", config.allow_target_overlap),
        ("min patches kept", config.min_keep),
    ])
    loss = _rows([
        ("JEPA regression loss", config.jepa_loss + (f" (beta {config.smooth_l1_beta:g})" if config.jepa_loss == "smooth_l1" else "")),
        ("VICReg weight (beta)", config.vicreg_weight),
        ("VICReg coefficients (sim / std / cov)",
         f"{config.vicreg_sim_coeff:g} / {config.vicreg_std_coeff:g} / {config.vicreg_cov_coeff:g}"),
        ("VICReg variance eps", config.vicreg_eps),
        ("VICReg source", config.vicreg_source),
        ("projector sizes", (config.hidden_size, *config.projector_dims)),
    ])
    preprocessing = preprocessing_rows(processor)
    result_rows = [
        {
            "task": r.task_name or r.task_type,
            "dataset": r.dataset_name,
            "split": r.dataset_split or "",
            "metric": r.metric_name or r.metric_type,
            "value": _fmt(r.metric_value),
        }
        for r in eval_results
    ]

    if conversion and conversion.get("encoder"):
        encoder_description = str(conversion["encoder"])
    elif family == "ijepa":
        encoder_description = "the I-JEPA target encoder"
    else:
        encoder_description = "the EMA target encoder of a C-JEPA pretraining run"

    path = Path(template_path) if template_path is not None else model_cards_dir() / TEMPLATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no model-card template at {os.fspath(path)!r}")
    return ModelCard.from_template(
        card_data,
        template_path=str(path),
        repo_id=model_name,
        load_id=load_id,
        variant_name=variant,
        variant=entry,
        family=family,
        encoder_description=encoder_description,
        mismatches=mismatches,
        num_parameters=_count_parameters(config),
        hidden_size=config.hidden_size,
        num_patches=config.num_patches,
        image_size=config.image_size,
        vicreg_enabled=config.vicreg_weight > 0,
        vicreg_source=config.vicreg_source,
        vicreg_weight=_fmt(config.vicreg_weight),
        architecture=architecture,
        masking=masking,
        loss=loss,
        preprocessing=preprocessing,
        recipe=recipe_rows(training_args) if training_args else None,
        run=run_rows(trainer_state) if trainer_state else None,
        results=result_rows,
        dataset_list=datasets,
        base_model_list=base_models,
        conversion=_rows(list(conversion.items())) if conversion else None,
        compute=compute_rows(compute, trainer_state),
        versions=library_versions(),
        saved_with_transformers=getattr(config, "transformers_version", None),
    )


# ============================================================================ export


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(folder / shard))
        return state
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise FileNotFoundError(
        f"no model.safetensors (or model.safetensors.index.json) in {os.fspath(folder)!r}; found {found}. "
        "Only safetensors checkpoints are read (pickled .bin/.pt weights are refused)."
    )


def load_target_encoder(checkpoint_dir: str | os.PathLike) -> CJEPAModel:
    """The EMA target encoder of a saved `CJEPAForPreTraining` (a Trainer checkpoint) as a
    `CJEPAModel`, loaded strictly from safetensors: every tensor present, every shape
    right. A folder that already holds a bare `CJEPAModel` is accepted as is."""
    from .convert import load_strict

    folder = Path(checkpoint_dir)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {os.fspath(folder)!r}")
    with open(config_file, encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    if model_type != CJEPAConfig.model_type:
        raise ValueError(f"{os.fspath(config_file)!r} has model_type {model_type!r}, expected {CJEPAConfig.model_type!r}")
    config = CJEPAConfig.from_pretrained(folder)
    state = _read_safetensors(folder)
    prefix = "target_encoder."
    if any(k.startswith(prefix) for k in state):
        encoder_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    elif any(k.startswith("embeddings.") for k in state):
        encoder_state = state
    else:
        heads = sorted({k.split(".")[0] for k in state})
        raise ValueError(
            f"{os.fspath(folder)!r} holds no target_encoder.* weights (top-level names: {heads}); "
            "expected a saved CJEPAForPreTraining or CJEPAModel"
        )
    encoder = CJEPAModel(config)
    load_strict(encoder, encoder_state, f"the target encoder of {os.fspath(folder)!r}")
    return encoder.eval()


def release_files(folder: str | os.PathLike) -> list[str]:
    """The files of a release folder (relative, sorted), after checking that it is one:
    every file of `RELEASE_FILES` present, nothing else, no pickled weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no release folder at {os.fspath(folder)!r}")
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    pickled = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
    if pickled:
        raise ValueError(f"{os.fspath(folder)!r} holds pickled files {pickled}: a release carries safetensors only")
    missing = sorted(set(RELEASE_FILES) - set(files))
    extra = sorted(set(files) - set(RELEASE_FILES))
    if missing or extra:
        raise ValueError(
            f"{os.fspath(folder)!r} is not a release folder: missing {missing}, unexpected {extra}; "
            f"a release holds exactly {list(RELEASE_FILES)}"
        )
    return files


def find_image_processor(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The `preprocessor_config.json` a run saved with a checkpoint: in the folder, or, for
    a Trainer `checkpoint-N` folder, in its parent output folder; None when there is none."""
    folder = Path(checkpoint_dir)
    places = [folder] + ([folder.parent] if folder.name.startswith("checkpoint-") else [])
    for place in places:
        if (place / PROCESSOR_NAME).is_file():
            return place / PROCESSOR_NAME
    return None


def load_image_processor_file(path: str | os.PathLike) -> Any:
    """An image processor from a `preprocessor_config.json` file or the folder holding one."""
    from transformers import AutoImageProcessor

    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not (folder / PROCESSOR_NAME).is_file():
        raise FileNotFoundError(f"no {PROCESSOR_NAME} at {os.fspath(path)!r}")
    return AutoImageProcessor.from_pretrained(folder)


def save_release(
    encoder: CJEPAModel,
    output_dir: str | os.PathLike,
    card: ModelCard,
    image_processor: Any | str | os.PathLike | None = None,
) -> list[str]:
    """Write `encoder` (a `CJEPAModel`), its remote code, image processor and `card` to a
    new or empty `output_dir`; returns the files written. `image_processor`: a
    `preprocessor_config.json` (or its folder), copied byte for byte; a processor object,
    saved; None: the default `build_image_processor(encoder.config)`."""
    if not isinstance(encoder, CJEPAModel):
        raise TypeError(f"a release holds a CJEPAModel (the target encoder), got {type(encoder).__name__}")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{os.fspath(out)!r} exists and is not empty ({sorted(p.name for p in out.iterdir())}); "
            "choose a new folder or remove it"
        )
    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out)  # writes the default processor; replaced below when one is given
    if isinstance(image_processor, (str, os.PathLike)):
        source = Path(image_processor)
        source = source / PROCESSOR_NAME if source.is_dir() else source
        shutil.copyfile(source, out / PROCESSOR_NAME)  # the run's own preprocessing, unchanged
    elif image_processor is not None:
        (out / PROCESSOR_NAME).unlink(missing_ok=True)
        image_processor.save_pretrained(out)
    card.save(out / "README.md")
    return release_files(out)


def export_release(
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    model_name: str,
    results: Sequence[Mapping[str, Any]] | None = None,
    training_args: Mapping[str, Any] | str | os.PathLike | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    variant: str | None = None,
    license: str | None = None,
    conversion: Mapping[str, Any] | None = None,
    template_path: str | os.PathLike | None = None,
    image_processor: Any | str | os.PathLike | None = None,
    compute: Mapping[str, Any] | None = None,
    extra_text: str | None = None,
) -> list[str]:
    """From a training checkpoint folder (a saved `CJEPAForPreTraining`: config.json +
    model.safetensors, as Trainer writes it) write a release folder: the target encoder as a
    `CJEPAModel` (safetensors), config.json with auto_map, the remote-code files,
    preprocessor_config.json and README.md (the card). Returns the files written.

    image_processor: the preprocessing the release carries; default: the
    `preprocessor_config.json` the run saved (`find_image_processor`), copied as it is, so
    that the release computes the same features as the run's own folders (a Fashion-MNIST
    run pads 28 -> 32; rebuilding the default processor would resize instead). Only when the
    run saved none is the default (resize + centre crop) written, with a warning.
    training_args: a dict, a JSON file, or None to read `training_args.json` next to the
    checkpoint (see `read_training_records`); `training_args.bin` is never unpickled.
    compute: hardware / wall time (`compute_rows`); the wall time defaults to the
    `train_runtime` of `trainer_state.json`, or `wall_time_s` of the run's
    `pretrain_summary.json`. extra_text: markdown appended to the card (e.g. the run's own
    judgement of its encoder). The other keywords go to `render_model_card`; the card's
    snippets load from `model_name` when it is a Hub id, else from `output_dir`."""
    found_args, trainer_state = read_training_records(checkpoint_dir)
    if isinstance(training_args, (str, os.PathLike)):
        with open(training_args, encoding="utf-8") as f:
            training_args = json.load(f)
    elif training_args is None:
        training_args = found_args
    encoder = load_target_encoder(checkpoint_dir)
    if image_processor is None:
        image_processor = find_image_processor(checkpoint_dir)
        if image_processor is None:
            warnings.warn(
                f"no {PROCESSOR_NAME} in {os.fspath(checkpoint_dir)!r} or its output folder: the release gets the "
                "default processor (resize + centre crop); pass image_processor= (--image-processor) if training "
                "preprocessed otherwise",
                UserWarning,
                stacklevel=2,
            )
    processor = (
        load_image_processor_file(image_processor) if isinstance(image_processor, (str, os.PathLike))
        else image_processor if image_processor is not None else build_image_processor(encoder.config)
    )
    compute = dict(compute or {})
    if compute.get("wall_time_s") is None:
        folder = Path(checkpoint_dir)
        for place in [folder] + ([folder.parent] if folder.name.startswith("checkpoint-") else []):
            summary = place / "pretrain_summary.json"  # scripts/pretrain.py's record of the run
            if summary.is_file():
                with open(summary, encoding="utf-8") as f:
                    wall = json.load(f).get("wall_time_s")
                if wall is not None:
                    compute["wall_time_s"] = wall
                break
    card = render_model_card(
        encoder.config,
        model_name=model_name,
        training_args=training_args,
        results=results,
        base_model=base_model,
        datasets=datasets,
        variant=variant,
        license=license,
        trainer_state=trainer_state,
        conversion=conversion,
        template_path=template_path,
        image_processor=processor,
        model_path=output_dir,
        compute=compute,
    )
    if extra_text:
        card.text = card.text.rstrip("\n") + "\n\n" + extra_text.strip("\n") + "\n"
    return save_release(encoder, output_dir, card, image_processor=image_processor if image_processor is not None else processor)


# ============================================================================ upload


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


def _is_unreachable(error: BaseException) -> bool:
    """Offline mode (`OfflineModeIsEnabled` is a ConnectionError), a refused or failed
    connection, a DNS failure or a timeout, from any HTTP client huggingface_hub may use."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    network = {"TransportError", "NetworkError", "ConnectError", "ConnectTimeout", "TimeoutException",
               "ConnectionError", "Timeout", "NewConnectionError", "MaxRetryError"}
    return any(
        cls.__name__ in network and cls.__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
        for cls in type(error).__mro__
    )


@dataclasses.dataclass
class PushedRelease:
    """What `push_release` sent: the repo, the commit, and the exact list of files."""

    repo_id: str
    repo_url: str
    commit_url: str | None
    files: list[str]


def push_release(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload C-JEPA release (target encoder, remote code, model card)",
    revision: str | None = None,
    api: HfApi | None = None,
) -> PushedRelease:
    """Create `repo_id` if needed (`HfApi.create_repo(exist_ok=True)`) and upload the
    release folder with `HfApi.upload_folder`, restricted to the release files (no stray
    file goes up). The token defaults to huggingface_hub's (HF_TOKEN or `hf auth login`)."""
    files = release_files(folder)
    api = api if api is not None else HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=getattr(repo_url, "repo_id", None) or repo_id,
            folder_path=os.fspath(folder),
            commit_message=commit_message,
            token=token,
            repo_type="model",
            revision=revision,
            allow_patterns=files,
        )
    except Exception as error:  # noqa: BLE001 - only network failures are translated; the rest re-raise
        if not _is_unreachable(error):
            raise
        raise HubUnreachableError(
            f"cannot push to {repo_id!r}: the Hugging Face Hub cannot be reached ({_one_line(error)}); "
            f"the release folder {os.fspath(folder)!r} is complete, push it again when online"
        ) from error
    return PushedRelease(
        repo_id=getattr(repo_url, "repo_id", None) or repo_id,
        repo_url=str(repo_url),
        commit_url=getattr(commit, "commit_url", None),
        files=files,
    )


__all__ = [
    "HubUnreachableError",
    "MODEL_CARDS_ENV",
    "PROCESSOR_NAME",
    "model_cards_dir",
    "RELEASE_FILES",
    "PushedRelease",
    "compute_rows",
    "export_release",
    "find_image_processor",
    "infer_variant",
    "is_hub_id",
    "library_versions",
    "load_image_processor_file",
    "load_results",
    "load_target_encoder",
    "load_variants",
    "preprocessing_rows",
    "push_release",
    "read_training_records",
    "recipe_rows",
    "release_files",
    "render_model_card",
    "run_rows",
    "save_release",
    "to_eval_result",
    "usage_id",
    "variant_mismatches",
]
