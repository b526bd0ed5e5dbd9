"""The release folder: the EMA target encoder of a run as a `CJEPAModel` with its remote
code, image processor and model card (`export_release`, the one function that builds a
release folder and its card; `save_release` writes it), and the checks that a folder is
one (`release_files`).

    release/
      config.json               CJEPAConfig with `auto_map` (AutoConfig / AutoModel / ...)
      model.safetensors         target-encoder weights, safetensors only
      *.py                      remote code (`REMOTE_CODE_FILES`): loads with
                                `trust_remote_code=True` without `cjepa_hf` installed
      preprocessor_config.json  the image processor the run saved (copied, never rebuilt)
      README.md                 the model card (`cards.render_model_card`)

Nothing here unpickles: weights are read with safetensors, training arguments from JSON
(`training_args.json`); Trainer's `training_args.bin` is never opened.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoImageProcessor

from ..configuration_cjepa import CJEPAConfig
from ..convert import load_strict
from ..modeling_cjepa import REMOTE_CODE_FILES, CJEPAModel
from ..processing_cjepa import build_image_processor
from .cards import render_model_card
from .results import hub_dataset_id, judgement_results, judgement_text

PROCESSOR_NAME = "preprocessor_config.json"
# Every file of a release folder, and nothing else.
RELEASE_FILES = tuple(sorted(("README.md", "config.json", "model.safetensors", PROCESSOR_NAME, *REMOTE_CODE_FILES)))
# Pickle-based weight formats: a release never carries them.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tar")


def _run_folders(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Where a run's records of a checkpoint lie: the folder itself, then, for a Trainer
    `checkpoint-N` folder, its parent output folder."""
    folder = Path(checkpoint_dir)
    return [folder] + ([folder.parent] if folder.name.startswith("checkpoint-") else [])


def _first_file(checkpoint_dir: str | os.PathLike, name: str) -> Path | None:
    """The first `name` in `_run_folders(checkpoint_dir)`; None when there is none."""
    return next((place / name for place in _run_folders(checkpoint_dir) if (place / name).is_file()), None)


def _read_json(path: Path | None) -> Any:
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_training_records(checkpoint_dir: str | os.PathLike) -> tuple[dict | None, dict | None]:
    """(training_args, trainer_state) from JSON files next to a checkpoint:
    `training_args.json` and `trainer_state.json` in the folder, or, for a Trainer
    `checkpoint-N` folder, in its parent output folder. Never opens `training_args.bin`."""
    return (
        _read_json(_first_file(checkpoint_dir, "training_args.json")),
        _read_json(_first_file(checkpoint_dir, "trainer_state.json")),
    )


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
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
        encoder_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
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
    return _first_file(checkpoint_dir, PROCESSOR_NAME)


def load_image_processor_file(path: str | os.PathLike) -> Any:
    """An image processor from a `preprocessor_config.json` file or the folder holding one."""
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
            f"{os.fspath(out)!r} exists and is not empty ({sorted(p.name for p in out.iterdir())}); choose a new folder or remove it"
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
    The run's `pretrain_summary.json` (in the folder or its output folder) fills what is not
    passed: `datasets` (the data it trained on), `compute` (its hardware and wall time, else
    the `train_runtime` of `trainer_state.json`), `results` and `extra_text` (its final
    judgement: the model-index entries and the table beside its random start and raw pixels).
    extra_text: markdown appended to the card. The other keywords go to `render_model_card`;
    the card's snippets load from `model_name` (see `usage_id`)."""
    found_args, trainer_state = read_training_records(checkpoint_dir)
    if isinstance(training_args, (str, os.PathLike)):
        training_args = _read_json(Path(training_args))
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
        load_image_processor_file(image_processor)
        if isinstance(image_processor, (str, os.PathLike))
        else image_processor
        if image_processor is not None
        else build_image_processor(encoder.config)
    )
    # scripts/pretrain.py's record of the run: what it trained on, where, how long, and its
    # own judgement of the encoder. What the caller passes wins; what neither says stays unsaid.
    summary = _read_json(_first_file(checkpoint_dir, "pretrain_summary.json")) or {}
    compute = dict(compute or {})
    if compute.get("wall_time_s") is None and summary.get("wall_time_s") is not None:
        compute["wall_time_s"] = summary["wall_time_s"]
    if compute.get("hardware") is None and summary.get("hardware"):
        compute["hardware"] = summary["hardware"]
    data = summary.get("data") or {}
    if datasets is None and data.get("dataset"):
        datasets = [hub_dataset_id(data["dataset"])]
    evaluation = summary.get("evaluation")
    if results is None and evaluation:
        results = judgement_results(evaluation)
    if extra_text is None and evaluation:
        extra_text = judgement_text(evaluation)
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
        data=data or None,
    )
    if extra_text:
        card.text = card.text.rstrip("\n") + "\n\n" + extra_text.strip("\n") + "\n"
    return save_release(encoder, output_dir, card, image_processor=image_processor if image_processor is not None else processor)


__all__ = [
    "PROCESSOR_NAME",
    "RELEASE_FILES",
    "export_release",
    "find_image_processor",
    "load_image_processor_file",
    "load_target_encoder",
    "read_training_records",
    "release_files",
    "save_release",
]
