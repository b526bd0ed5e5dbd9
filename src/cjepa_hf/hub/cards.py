"""Model cards: the card of a release rendered from `model_cards/cjepa_model_card.md`
(a Jinja2 template) and `model_cards/variants.json` (per-variant names, licence, tags)
with the run's real config, its training arguments and the results measured on it
(`render_model_card`, the one definition of the card). A result that was not measured is
written as "not evaluated": no number is ever filled in.

The encoder is I-JEPA's (Assran et al., CVPR 2023); a C-JEPA run adds the VICReg
regulariser of Mo & Tong (NeurIPS 2024).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import TrainingArguments
from transformers.image_utils import PILImageResampling

from .. import __version__
from ..configuration_cjepa import CJEPAConfig
from ..modeling_cjepa import CJEPAModel
from ..processing_cjepa import build_image_processor
from .results import hub_dataset_id, is_fraction_metric, local_dataset_name, to_eval_result

TEMPLATE_NAME = "cjepa_model_card.md"
VARIANTS_NAME = "variants.json"
MODEL_CARDS_ENV = "CJEPA_MODEL_CARDS_DIR"
LIBRARY_NAME = "transformers"
PIPELINE_TAG = "image-feature-extraction"
BASE_TAGS = ("cjepa", "jepa", "self-supervised-learning", "vision-transformer", "image-feature-extraction")

# Training arguments shown in the card, in this order (TrainingArguments names).
_RECIPE_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "weight_decay",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "bf16",
    "fp16",
    "tf32",
    "seed",
    "data_seed",
)
_SECRET_MARKERS = ("token", "password", "secret", "credential")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def model_cards_dir() -> Path:
    """Where the card template and variants live: $CJEPA_MODEL_CARDS_DIR if set; else
    `model_cards/` at the repository root (a checkout or an editable install); else the copy
    a wheel installs under `<prefix>/share/cjepa-hf/model_cards` (setup.cfg `data_files`)."""
    if os.environ.get(MODEL_CARDS_ENV):
        return Path(os.environ[MODEL_CARDS_ENV])
    candidates = [
        Path(__file__).resolve().parents[3] / "model_cards",  # <root>/src/cjepa_hf/hub/cards.py
        Path(sys.prefix) / "share" / "cjepa-hf" / "model_cards",
    ]
    for folder in candidates:
        if (folder / TEMPLATE_NAME).is_file():
            return folder
    raise FileNotFoundError(
        f"no model-card template {TEMPLATE_NAME!r} in any of {[os.fspath(c) for c in candidates]}; "
        f"set {MODEL_CARDS_ENV} to a folder holding {TEMPLATE_NAME} and {VARIANTS_NAME}"
    )


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
        rows.append(
            (
                "learning-rate schedule",
                f"linear warmup {_fmt(args['warmup_start_lr'])} -> "
                f"{_fmt(args.get('learning_rate'))} over warmup_steps, then cosine to {_fmt(args.get('final_lr'))}",
            )
        )
        rows.append(
            (
                "weight-decay schedule",
                f"{args.get('weight_decay_schedule', 'cosine')} {_fmt(args.get('weight_decay'))} -> {_fmt(args.get('final_weight_decay'))}",
            )
        )
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


# ============================================================================ the objective

# How a card names each objective (`CJEPAConfig.objective`): "C-JEPA" only where the paper's
# VICReg term is on.
_OBJECTIVE_TITLES = {
    "ijepa": "I-JEPA",
    "cjepa": "C-JEPA (I-JEPA + VICReg)",
    "cjepa-context": "C-JEPA (I-JEPA + VICReg, context variant)",
}
_EXTRA_TITLES = {"encvar": "encoder regulariser"}


def objective_heading(config: CJEPAConfig) -> str:
    """The objective in words with its name, e.g. "I-JEPA + encoder regulariser (ijepa+encvar)"."""
    base, _, extra = config.objective.partition("+")
    title = _OBJECTIVE_TITLES[base] + (f" + {_EXTRA_TITLES[extra]}" if extra else "")
    return f"{title} ({config.objective})"


def objective_section(config: CJEPAConfig) -> dict[str, Any]:
    """What the card says of the loss, from `CJEPAConfig.describe_objective()` (never from
    fields copied by hand): the heading, the formula, and one row per term that is on, with
    its weight, origin and every loss field it reads as "field = value"."""
    described = config.describe_objective()
    terms = [
        {
            "term": term["term"],
            "weight": _fmt(term["weight"]),
            "origin": term["origin"],
            "settings": ", ".join(f"{name} = {_fmt(value)}" for name, value in term["fields"].items()),
        }
        for term in described["terms"]
    ]
    return {
        "name": described["name"],
        "heading": objective_heading(config),
        "short": "C-JEPA" if described["name"].startswith("cjepa") else "I-JEPA",
        "formula": described["formula"],
        "terms": terms,
        "vicreg_off": config.vicreg_weight <= 0,
    }


def describe_finetune_base(card_text: str, base: str, config: Any = None) -> str:
    """A fine-tuned model's card (Trainer's) with its base named. Trainer writes "trained from
    scratch" when `finetuned_from` is None, which is what a local base gets (a local path is no
    Hub link): that sentence becomes one naming the local base, not linked. With the base's
    `CJEPAConfig`, the sentence says what it was pretrained with. `datasets:` keeps Hub ids only
    (Trainer names a local image folder "imagefolder", which links nowhere)."""
    pretrained = f", pretrained with {objective_heading(config)}" if isinstance(config, CJEPAConfig) else ""
    card = ModelCard(card_text)
    if card.data.datasets:  # Trainer writes a local folder's builder ("imagefolder") there: no Hub id
        kept = [d for d in ([card.data.datasets] if isinstance(card.data.datasets, str) else card.data.datasets) if is_hub_id(d)]
        card.data.datasets = kept or None
    text = card.text
    if is_hub_id(base):
        link = f"[{base}](https://huggingface.co/{base})"
        text = text.replace(link, link + pretrained, 1)
    else:
        named = f"`{local_dataset_name(base)}` (a local model, not on the Hub){pretrained}"
        text = text.replace("This model was trained from scratch on ", f"This model is a fine-tuned version of {named}, on ", 1)
    card.text = text
    return str(card)


# ============================================================================ the card


def _count_parameters(config: CJEPAConfig) -> int:
    with torch.device("meta"):  # no memory, no initialisation: only the shapes count
        return CJEPAModel(config).num_parameters()


def _rows(pairs: Sequence[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(k, _fmt(v)) for k, v in pairs]


def preprocessing_rows(processor: Any) -> list[tuple[str, str]]:
    """What an image processor does, as (step, value) rows, read off the processor itself
    (so a padding processor is described as padding, not as the default resize)."""
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


def _data_facts(data: Mapping[str, Any] | None) -> str | None:
    """ "80 images, 2 classes (cat, dog), split train" from a run's record of its data."""
    if not data:
        return None
    parts = []
    if data.get("images") is not None:
        parts.append(f"{data['images']:,} images")
    classes = data.get("classes")
    if classes:
        parts.append(f"{len(classes)} classes ({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})")
    elif "classes" in data:
        parts.append("no labels")
    if data.get("split"):
        parts.append(f"split {data['split']}")
    return ", ".join(parts) or None


def library_versions() -> list[tuple[str, str]]:
    """(library, version) of the libraries writing this card."""
    return [("cjepa-hf", __version__)] + [(name, version(name)) for name in ("transformers", "torch", "huggingface_hub", "safetensors")]


PLACEHOLDER_OWNER = "your-username"


def usage_id(model_name: str, model_path: str | os.PathLike | None = None) -> str:
    """What the card's snippets pass to `from_pretrained`: the Hub repo id. A card written
    before the model has one (a name such as "run_tb") loads from "your-username/run_tb", a
    placeholder the card explains; never a local path, which means nothing to a reader on the
    Hub. `model_path` is accepted for compatibility and not written into the snippets."""
    if is_hub_id(model_name):
        return model_name
    name = re.sub(r"[^\w.-]+", "-", os.path.basename(os.path.normpath(str(model_name)))).strip("-.") or "model"
    return f"{PLACEHOLDER_OWNER}/{name}"


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
    data: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Render the model card of a release from the run's real config and measured results.

    config: the run's `CJEPAConfig` (architecture, masking, loss, VICReg source).
    model_name: the Hub repo id, or a name (the title and the model-index name).
    model_path: the folder the model is saved in (the snippets still load by repo id, see `usage_id`).
    data: what the run trained on (`pretrain_summary.json`'s "data": images, classes, kind),
        described beside the data set's name.
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
    datasets = [hub_dataset_id(d) for d in datasets]  # "fashion_mnist" (the local IDX files) -> its Hub id
    # Only Hub ids go into the metadata (the Hub links them); a local data set is named in prose.
    hub_datasets = [d for d in datasets if is_hub_id(d)]
    local_datasets = [local_dataset_name(d) for d in datasets if not is_hub_id(d)]
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
    objective = objective_section(config)
    # a variant's title says "C-JEPA"; a run without the paper's VICReg term is not C-JEPA
    title = entry["title"].replace("C-JEPA", objective["short"]) if family == "cjepa" else entry["title"]
    tags = list(dict.fromkeys([*BASE_TAGS, *entry.get("tags", []), *(["vicreg"] if trained_with_vicreg else [])]))

    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=tags,
        datasets=hub_datasets or None,
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        model_name=model_name if eval_results else None,  # only the model-index uses it
        eval_results=eval_results or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
    )

    processor = image_processor if image_processor is not None else build_image_processor(config)
    load_id = usage_id(model_name, model_path)
    architecture = _rows(
        [
            ("image size", f"{config.image_size} x {config.image_size}"),
            ("patch size", config.patch_size),
            ("patch tokens", f"{config.num_patches} ({config.grid_size} x {config.grid_size}), no CLS token"),
            ("width / depth / heads", f"{config.hidden_size} / {config.num_hidden_layers} / {config.num_attention_heads}"),
            ("MLP size", config.intermediate_size),
            ("LayerNorm eps", config.layer_norm_eps),
            ("position embeddings", "fixed 2-D sin-cos"),
            (
                "predictor width / depth / heads (pretraining only)",
                f"{config.predictor_hidden_size} / {config.predictor_num_hidden_layers} / {config.predictor_num_attention_heads}",
            ),
        ]
    )
    masking = _rows(
        [
            ("target blocks per image", config.num_target_blocks),
            ("target block scale", config.target_scale),
            ("target block aspect ratio", config.target_aspect_ratio),
            ("context block scale", config.context_scale),
            ("context block aspect ratio", config.context_aspect_ratio),
            ("targets may overlap", config.allow_target_overlap),
            ("min patches kept", config.min_keep),
        ]
    )
    preprocessing = preprocessing_rows(processor)
    # One unit in the card's prose: percent. The model-index keeps fractions, as transformers writes them.
    result_rows = [
        {
            "task": r.task_name or r.task_type,
            "dataset": r.dataset_name,
            "split": r.dataset_split or "",
            "metric": r.metric_name or r.metric_type,
            "value": f"{100 * r.metric_value:.2f}%" if is_fraction_metric(r.metric_type) else _fmt(r.metric_value),
        }
        for r in eval_results
    ]

    if conversion and conversion.get("encoder"):
        encoder_description = str(conversion["encoder"])
    elif family == "ijepa":
        encoder_description = "the I-JEPA target encoder"
    else:
        encoder_description = "the EMA target encoder of a cjepa-hf pretraining run"

    path = Path(template_path) if template_path is not None else model_cards_dir() / TEMPLATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no model-card template at {os.fspath(path)!r}")
    return ModelCard.from_template(
        card_data,
        template_path=str(path),
        repo_id=model_name,
        load_id=load_id,
        load_id_is_placeholder=not is_hub_id(model_name),
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
        objective=objective,
        title=title,
        architecture=architecture,
        masking=masking,
        preprocessing=preprocessing,
        recipe=recipe_rows(training_args) if training_args else None,
        run=run_rows(trainer_state) if trainer_state else None,
        results=result_rows,
        dataset_list=hub_datasets,
        local_datasets=local_datasets,
        data_facts=_data_facts(data),
        base_model_list=base_models,
        conversion=_rows(list(conversion.items())) if conversion else None,
        compute=compute_rows(compute, trainer_state),
        versions=library_versions(),
        saved_with_transformers=getattr(config, "transformers_version", None),
    )


__all__ = [
    "BASE_TAGS",
    "LIBRARY_NAME",
    "MODEL_CARDS_ENV",
    "PIPELINE_TAG",
    "TEMPLATE_NAME",
    "VARIANTS_NAME",
    "compute_rows",
    "describe_finetune_base",
    "infer_variant",
    "is_hub_id",
    "library_versions",
    "objective_heading",
    "objective_section",
    "load_variants",
    "model_cards_dir",
    "preprocessing_rows",
    "recipe_rows",
    "render_model_card",
    "run_rows",
    "usage_id",
    "variant_mismatches",
]
