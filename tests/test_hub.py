"""Model cards, release export and upload (cjepa_hf.hub, scripts/push_to_hub.py).

Everything runs offline: the upload is tested up to `HfApi.create_repo` /
`HfApi.upload_folder`, which are replaced by recorders."""

import dataclasses
import importlib.util
import json
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY, assert_loads_without_package, random_masks
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining, CJEPAModel
from cjepa_hf.hub import (
    BASE_TAGS,
    RELEASE_FILES,
    export_release,
    infer_variant,
    load_variants,
    push_release,
    render_model_card,
    to_eval_result,
)

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = load_variants()
RESULTS = [
    {
        "task": "image-classification",
        "protocol": "linear probe",
        "dataset": "zalando-datasets/fashion_mnist",
        "dataset_name": "Fashion-MNIST",
        "split": "test",
        "metric": "accuracy",
        "value": 0.8125,
    },
    {
        "task": "image-classification",
        "protocol": "fine-tune",
        "dataset": "zalando-datasets/fashion_mnist",
        "dataset_name": "Fashion-MNIST",
        "split": "test",
        "metric": "accuracy",
        "value": 0.905,
    },
    {
        "task": "image-feature-extraction",
        "dataset": "zalando-datasets/fashion_mnist",
        "dataset_name": "Fashion-MNIST",
        "split": "test",
        "metric": "rankme",
        "metric_name": "RankMe effective rank",
        "value": 17.75,
    },
]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(text, heading):
    """The body of a '## heading' section, up to the next level-2 heading."""
    match = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no section {heading!r}"
    return match.group(1)


# ============================================================================ a real tiny run


@dataclasses.dataclass
class RunArguments(TrainingArguments):
    """TrainingArguments with schedule fields of its own, as the project's trainer has."""

    final_lr: float = 1e-6
    ema_momentum: float = 0.5


class _Batches(torch.utils.data.Dataset):
    def __init__(self, config, size=8):
        g = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(size, 3, config.image_size, config.image_size, generator=g)
        self.context, self.target = random_masks(size, config.num_patches, kept=20, blocks=config.num_target_blocks, per_block=6)

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "context_indices": self.context[i], "target_indices": self.target[i]}


class _EMA(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.update_target_encoder(args.ema_momentum)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two Trainer steps of a tiny CJEPAForPreTraining with EMA: a real checkpoint folder
    (model.safetensors, config.json, training_args.bin, trainer_state.json, ...)."""
    out = tmp_path_factory.mktemp("run")
    config = CJEPAConfig(**TINY)
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    args = RunArguments(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=0.05,
        warmup_steps=1,
        weight_decay=0.04,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        seed=0,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=_Batches(config), callbacks=[_EMA()]).train()
    (out / "training_args.json").write_text(args.to_json_string())  # what the card reads; .bin is never unpickled
    checkpoint = out / "checkpoint-2"
    assert {"model.safetensors", "config.json", "training_args.bin", "trainer_state.json"} <= set(os.listdir(checkpoint))
    saved = load_file(checkpoint / "model.safetensors")
    target = {k.removeprefix("target_encoder."): v for k, v in saved.items() if k.startswith("target_encoder.")}
    context = {k.removeprefix("context_encoder."): v for k, v in saved.items() if k.startswith("context_encoder.")}
    return SimpleNamespace(
        config=CJEPAConfig.from_pretrained(checkpoint), checkpoint=checkpoint, training_args=args.to_dict(), target=target, context=context
    )


@pytest.fixture(scope="module")
def release(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("release") / "cjepa-tiny"
    files = export_release(
        tiny_run.checkpoint, folder, model_name="me/cjepa-tiny", results=RESULTS, datasets=["zalando-datasets/fashion_mnist"]
    )
    return SimpleNamespace(folder=folder, files=files)


# ============================================================================ cards


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_renders_from_the_run_config_and_parses_back(tmp_path, tiny_run, variant):
    entry = VARIANTS[variant]
    base = "facebook/ijepa_vith14_1k" if entry["family"] == "ijepa" else None
    if entry["preset"]:  # the tiny run is not a paper size: the card renders and says so
        with pytest.warns(UserWarning, match="does not have the"):
            card = render_model_card(
                tiny_run.config,
                model_name="me/model",
                training_args=tiny_run.training_args,
                results=None,
                base_model=base,
                datasets="zalando-datasets/fashion_mnist",
                variant=variant,
            )
    else:
        card = render_model_card(
            tiny_run.config,
            model_name="me/model",
            training_args=tiny_run.training_args,
            results=None,
            base_model=base,
            datasets="zalando-datasets/fashion_mnist",
            variant=variant,
        )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert data["license"] == entry["license"]
    assert data["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert data.get("base_model") == base
    vicreg = {"vicreg"} if entry["family"] == "cjepa" else set()  # converted I-JEPA weights never saw VICReg
    assert set(BASE_TAGS) | set(entry["tags"]) | vicreg == set(data["tags"])
    assert "model-index" not in data and loaded.data.eval_results is None

    text = loaded.text
    assert text.startswith("\n# me/model\n") and entry["title"] in text
    assert ("**Note.**" in text) == bool(entry["preset"])
    # architecture, masking and loss come from the run's real config
    assert "| width / depth / heads | 32 / 2 / 4 |" in text and "| patch tokens | 64 (8 x 8), no CLS token |" in text
    assert "projector_dims = (64, 64)" in text and "| min patches kept | 4 |" in text
    # the recipe comes from the run's real training arguments, own fields included
    assert "| learning_rate | 0.05 |" in text and "| max_steps | 2 |" in text and "| final_lr | 1e-06 |" in text
    assert "| ema_momentum | 0.5 |" in text and "num_train_epochs" not in text and "output_dir" not in text
    # usage: AutoModel + processor with mean pooling, the pipeline with pool=True, fine-tuning
    usage = _section(text, "How to use")
    assert 'AutoModel.from_pretrained("me/model", trust_remote_code=True)' in usage
    assert "last_hidden_state" in usage and ".mean(dim=1)" in usage and "(batch, 64, 32)" in usage
    assert 'pipeline("image-feature-extraction"' in usage and "pool=True" in usage
    assert "AutoModelForImageClassification.from_pretrained(" in usage
    # no result, no number: the results section says so in words
    results = _section(text, "Results")
    assert "Not evaluated" in results and not re.search(r"\d", results)
    if entry["family"] == "ijepa":
        assert "These weights come from I-JEPA's objective alone" in text and "CC BY-NC 4.0" in text
        assert "not a record of the original run" in text
    else:
        assert "(Algorithm 1) | 0.001 | C-JEPA (Mo & Tong, NeurIPS 2024)" in text and "C-JEPA has no official code" in text


def test_card_with_measured_results_has_model_index(tmp_path, tiny_run):
    with pytest.warns(UserWarning):
        card = render_model_card(tiny_run.config, model_name="me/cjepa-vitb16", training_args=None, results=RESULTS, variant="cjepa-vitb16")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    index = loaded.data.to_dict()["model-index"]
    assert index[0]["name"] == "me/cjepa-vitb16"
    got = {(r.task_type, r.dataset_type, r.dataset_split, r.metric_type, r.metric_name, r.metric_value) for r in loaded.data.eval_results}
    assert got == {
        ("image-classification", "zalando-datasets/fashion_mnist", "test", "accuracy", "linear probe accuracy", 0.8125),
        ("image-classification", "zalando-datasets/fashion_mnist", "test", "accuracy", "fine-tune accuracy", 0.905),
        ("image-feature-extraction", "zalando-datasets/fashion_mnist", "test", "rankme", "RankMe effective rank", 17.75),
    }
    assert loaded.data.metrics == ["accuracy", "rankme"]
    results = _section(loaded.text, "Results")
    # one unit in the text: percent (the model-index above keeps fractions, as transformers writes them)
    assert "| image-classification | Fashion-MNIST | test | linear probe accuracy | 81.25% |" in results
    assert "| image-feature-extraction | Fashion-MNIST | test | RankMe effective rank | 17.75 |" in results
    assert "0.8125" not in loaded.text.split("---", 2)[2] and "fractions in [0, 1]" in results
    assert "Not evaluated" not in results
    # no training arguments: the card says they were not recorded and invents none
    assert "were not recorded" in _section(loaded.text, "Training") and "learning_rate" not in loaded.text
    assert "datasets" not in loaded.data.to_dict() and "was not recorded" in loaded.text


@pytest.mark.parametrize(
    "result, message",
    [
        ({"task": "image-classification", "dataset": "d", "metric": "accuracy"}, "lacks ['metric_value']"),
        ({"task": "image-classification", "dataset": "d", "metric": "accuracy", "value": float("nan")}, "finite measured number"),
        ({"task": "image-classification", "dataset": "d", "metric": "accuracy", "value": "TBD"}, "finite measured number"),
        ({"task": "image-classification", "dataset": "d", "metric": "accuracy", "value": 1.0, "score": 2}, "unknown result key 'score'"),
    ],
)
def test_bad_results_are_refused(result, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        to_eval_result(result)


def test_vicreg_source_choice_is_documented():
    config = CJEPAConfig.from_preset("vit-s16", vicreg_source="context")
    text = render_model_card(config, model_name="me/s", variant=None).text
    assert '`vicreg_source = "context"`' in text and "vicreg_source = context" in text
    assert "### Objective: pretrained with C-JEPA (I-JEPA + VICReg, context variant) (cjepa-context)" in text
    # Without the paper's VICReg term the card never says C-JEPA of the run (issue 21: it said
    # "VICReg was disabled" under a C-JEPA heading, and left the encoder regulariser out).
    off = render_model_card(CJEPAConfig.from_preset("vit-s16", vicreg_weight=0.0, encoder_vicreg_weight=0.05), model_name="me/s")
    assert "### Objective: pretrained with I-JEPA + encoder regulariser (ijepa+encvar)" in off.text
    assert "C-JEPA (I-JEPA + VICReg)" not in off.text and "**I-JEPA ViT-S/16**" in off.text
    assert "encoder_vicreg_weight = 0.05" in off.text and "vicreg" not in off.data.tags
    assert "pretrained with I-JEPA + encoder regulariser (ijepa+encvar) by cjepa-hf" in off.text


def test_paper_size_config_infers_its_variant_without_a_note(recwarn):
    config = CJEPAConfig.from_preset("vit-b16")
    assert infer_variant(config) == "cjepa-vitb16"
    assert infer_variant(CJEPAConfig.from_preset("vit-h14"), "ijepa") == "ijepa-vith14"
    assert infer_variant(CJEPAConfig(**TINY)) == "cjepa"
    card = render_model_card(config, model_name="me/b")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert "**Note.**" not in card.text and "C-JEPA ViT-B/16" in card.text
    assert "| encoder parameters | 85,646,592 |" in card.text  # ViT-B/16 without CLS token or head
    assert "| mean | (0.485, 0.456, 0.406) |" in card.text and "| resize shortest edge | 256 (bicubic) |" in card.text


# ============================================================================ export


def test_export_writes_the_target_encoder_and_nothing_else(tiny_run, release):
    assert release.files == list(RELEASE_FILES)
    assert sorted(os.listdir(release.folder)) == list(RELEASE_FILES)
    config = json.loads((release.folder / "config.json").read_text())
    assert config["architectures"] == ["CJEPAModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_cjepa.CJEPAModel"
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_cjepa.CJEPAForImageClassification"
    weights = load_file(release.folder / "model.safetensors")
    assert set(weights) == set(tiny_run.target)
    assert all(torch.equal(weights[k], tiny_run.target[k]) for k in weights)
    assert not torch.allclose(weights["layers.0.mlp.fc1.weight"], tiny_run.context["layers.0.mlp.fc1.weight"])

    card = ModelCard.load(release.folder / "README.md")
    assert card.data.license == "apache-2.0" and card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert len(card.data.eval_results) == 3
    # the recipe was read from training_args.json next to the checkpoint, the run from trainer_state.json
    assert "| learning_rate | 0.05 |" in card.text and "| final_lr | 1e-06 |" in card.text
    assert "| optimizer steps | 2 |" in card.text and "last logged training loss" in card.text


def test_release_loads_with_auto_classes_pipeline_and_finetuning_head(tiny_run, release):
    from transformers import pipeline

    model = AutoModel.from_pretrained(release.folder).eval()
    assert type(model) is CJEPAModel
    state = model.state_dict()
    assert all(torch.equal(state[k], tiny_run.target[k]) for k in tiny_run.target)
    processor = AutoImageProcessor.from_pretrained(release.folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    with torch.no_grad():
        out = model(**processor(image, return_tensors="pt"))
    features = pipeline("image-feature-extraction", model=str(release.folder), device="cpu")(image, pool=True, return_tensors=True)
    assert torch.allclose(features, out.last_hidden_state.mean(dim=1), atol=1e-6)

    classifier = AutoModelForImageClassification.from_pretrained(release.folder, num_labels=3)
    head_state = classifier.target_encoder.state_dict()
    assert all(torch.equal(head_state[k], tiny_run.target[k]) for k in tiny_run.target)
    assert classifier.classifier.out_features == 3


def test_release_loads_with_trust_remote_code_without_the_package(tmp_path, tiny_run, release):
    x = torch.randn(2, 3, 32, 32)
    encoder = CJEPAModel(tiny_run.config)
    encoder.load_state_dict(tiny_run.target)
    with torch.no_grad():
        expected = encoder.eval()(x).pooler_output
    assert_loads_without_package(release.folder, x, expected, tmp_path)


def test_export_never_unpickles(tmp_path, tiny_run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("export_release must not unpickle anything")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    files = export_release(tiny_run.checkpoint, tmp_path / "out", model_name="me/x", training_args=tiny_run.training_args)
    assert files == list(RELEASE_FILES)


def test_export_refuses_bad_inputs(tmp_path, tiny_run):
    import shutil

    with pytest.raises(FileExistsError, match="exists and is not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "old.txt").write_text("x")
        export_release(tiny_run.checkpoint, tmp_path / "full", model_name="me/x")

    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    shutil.copy(tiny_run.checkpoint / "config.json", bin_only)
    (bin_only / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(FileNotFoundError, match="Only safetensors checkpoints are read"):
        export_release(bin_only, tmp_path / "a", model_name="me/x")

    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny_run.checkpoint / "config.json", broken)
    from safetensors.torch import save_file

    weights = load_file(tiny_run.checkpoint / "model.safetensors")
    weights.pop("target_encoder.layernorm.bias")
    weights["target_encoder.layers.0.mlp.fc1.weight"] = torch.zeros(5, 32)
    save_file(weights, broken / "model.safetensors")
    with pytest.raises(ValueError) as info:
        export_release(broken, tmp_path / "b", model_name="me/x")
    assert "missing keys (1): layernorm.bias" in str(info.value)
    assert "layers.0.mlp.fc1.weight: checkpoint (5, 32) vs model (128, 32)" in str(info.value)
    assert not (tmp_path / "b").exists()


# ============================================================================ upload


class _Recorder:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        # what upload_folder would send: the folder's files matching allow_patterns
        folder = Path(kwargs["folder_path"])
        sent = sorted(p.name for p in folder.iterdir() if p.name in kwargs["allow_patterns"])
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc", sent=sent)


def test_push_release_calls_the_real_hfapi_methods(monkeypatch, release):
    recorder = _Recorder()
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: recorder.create_repo(repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: recorder.upload_folder(**kw))
    pushed = push_release(release.folder, "me/cjepa-tiny", private=True, commit_message="release v1")
    (_, repo, create), (_, repo2, upload) = recorder.calls
    assert repo == repo2 == "me/cjepa-tiny"
    assert create == {"token": None, "private": True, "repo_type": "model", "exist_ok": True}
    assert upload["folder_path"] == os.fspath(release.folder) and upload["commit_message"] == "release v1"
    assert upload["allow_patterns"] == list(RELEASE_FILES) and upload["repo_type"] == "model"
    assert pushed.files == list(RELEASE_FILES)
    assert pushed.commit_url == "https://huggingface.co/me/cjepa-tiny/commit/abc"
    # the card that goes up carries the metadata and the measured results
    card = ModelCard.load(release.folder / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "image-feature-extraction")
    assert {r.metric_value for r in card.data.eval_results} == {0.8125, 0.905, 17.75}


def test_push_release_refuses_stray_or_pickled_files(tmp_path, release):
    import shutil

    folder = tmp_path / "release"
    shutil.copytree(release.folder, folder)
    (folder / "pytorch_model.bin").write_bytes(b"x")
    api = _Recorder()
    with pytest.raises(ValueError, match="pickled files"):
        push_release(folder, "me/x", api=api)
    (folder / "pytorch_model.bin").unlink()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unexpected \['notes.txt'\]"):
        push_release(folder, "me/x", api=api)
    (folder / "notes.txt").unlink()
    (folder / "README.md").unlink()
    with pytest.raises(ValueError, match=r"missing \['README.md'\]"):
        push_release(folder, "me/x", api=api)
    assert api.calls == []


def test_push_to_hub_script(tmp_path, tiny_run, monkeypatch, capsys):
    script = _script("push_to_hub")
    (tmp_path / "results.json").write_text(json.dumps({"results": RESULTS[:1]}))
    recorder = _Recorder()
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: recorder.create_repo(repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: recorder.upload_folder(**kw))

    rc = script.main(["--checkpoint", str(tiny_run.checkpoint), "--output", str(tmp_path / "a"), "--repo-id", "me/a", "--no-push"])
    assert rc == 0 and recorder.calls == []
    assert ModelCard.load(tmp_path / "a" / "README.md").data.eval_results is None

    rc = script.main(
        [
            "--checkpoint",
            str(tiny_run.checkpoint),
            "--output",
            str(tmp_path / "b"),
            "--repo-id",
            "me/b",
            "--results",
            str(tmp_path / "results.json"),
            "--private",
            "--dataset",
            "zalando-datasets/fashion_mnist",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    (_, _, create), (_, _, upload) = recorder.calls
    assert create["private"] is True and create["exist_ok"] is True
    assert upload["allow_patterns"] == list(RELEASE_FILES)
    card = ModelCard.load(tmp_path / "b" / "README.md")
    assert [r.metric_value for r in card.data.eval_results] == [0.8125]
    assert f"uploaded {len(RELEASE_FILES)} files to https://huggingface.co/me/b" in capsys.readouterr().out

    rc = script.main(["--checkpoint", str(tmp_path / "nothing"), "--output", str(tmp_path / "c"), "--repo-id", "me/c"])
    assert rc == 2 and "no config.json" in capsys.readouterr().err


def test_model_cards_dir_in_checkout_wheel_install_and_env(tmp_path, monkeypatch):
    import shutil
    import sys

    from cjepa_hf import hub

    repo_cards = Path(__file__).resolve().parents[1] / "model_cards"
    monkeypatch.delenv(hub.MODEL_CARDS_ENV, raising=False)
    assert hub.model_cards_dir() == repo_cards  # a checkout / editable install
    # A wheel install: no repository around the package; setup.cfg's data_files put the
    # template and variants under <prefix>/share/cjepa-hf/model_cards.
    monkeypatch.setattr(hub.cards, "__file__", str(tmp_path / "site-packages" / "cjepa_hf" / "hub" / "cards.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    with pytest.raises(FileNotFoundError, match="set CJEPA_MODEL_CARDS_DIR"):
        hub.model_cards_dir()
    shared = tmp_path / "prefix" / "share" / "cjepa-hf" / "model_cards"
    shutil.copytree(repo_cards, shared)
    assert hub.model_cards_dir() == shared
    assert set(hub.load_variants()) == set(json.loads((repo_cards / "variants.json").read_text())) - {
        k for k in json.loads((repo_cards / "variants.json").read_text()) if k.startswith("_")
    }
    own = tmp_path / "own"
    monkeypatch.setenv(hub.MODEL_CARDS_ENV, str(own))
    assert hub.model_cards_dir() == own
    with pytest.raises(FileNotFoundError, match="no model-card variants file"):
        hub.load_variants()


# ============================================================================ the edges (issue 13)


@pytest.fixture(scope="module")
def padded_run(tiny_run, tmp_path_factory):
    """The tiny run as a Fashion-MNIST run at 32 px saves it: a padding image processor (no
    resize; a centre "crop" to 32 that pads 28 px images) in the checkpoint and output folder."""
    import shutil

    from cjepa_hf.modeling_cjepa import build_image_processor

    out = tmp_path_factory.mktemp("padded") / "run"
    shutil.copytree(tiny_run.checkpoint.parent, out)
    processor = build_image_processor(tiny_run.config, resize=False)
    processor.save_pretrained(out)
    processor.save_pretrained(out / "checkpoint-2")
    return SimpleNamespace(output=out, checkpoint=out / "checkpoint-2")


def _features(folder, images):
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**processor(images=images, return_tensors="pt")).pooler_output


def test_export_copies_the_runs_image_processor_and_gives_the_same_features(padded_run, tmp_path):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    files = export_release(padded_run.checkpoint, tmp_path / "release", model_name="me/fmnist")
    assert files == list(RELEASE_FILES)
    source = (padded_run.checkpoint / "preprocessor_config.json").read_bytes()
    assert (tmp_path / "release" / "preprocessor_config.json").read_bytes() == source  # copied, not rebuilt
    released = _features(tmp_path / "release", images)
    assert (released - _features(padded_run.checkpoint, images)).abs().max() < 1e-6
    # The card describes the padding, not the default resize.
    preprocessing = _section(ModelCard.load(tmp_path / "release" / "README.md").text, "Training")
    assert "| resize | none: images keep their size |" in preprocessing
    assert "| center crop | 32 x 32 (a smaller image is padded with black, centred) |" in preprocessing
    assert "resize shortest edge" not in preprocessing

    # From a checkpoint-N folder without one, the output folder's processor is used.
    import shutil

    bare = tmp_path / "run2"
    shutil.copytree(padded_run.output, bare)
    (bare / "checkpoint-2" / "preprocessor_config.json").unlink()
    export_release(bare / "checkpoint-2", tmp_path / "release2", model_name="me/fmnist")
    assert (tmp_path / "release2" / "preprocessor_config.json").read_bytes() == source

    # A run that saved none gets the default, with a warning saying so; --image-processor overrides.
    (bare / "preprocessor_config.json").unlink()
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        export_release(bare / "checkpoint-2", tmp_path / "release3", model_name="me/fmnist")
    assert json.loads((tmp_path / "release3" / "preprocessor_config.json").read_text())["do_resize"] is True
    export_release(
        bare / "checkpoint-2", tmp_path / "release4", model_name="me/fmnist", image_processor=padded_run.output / "preprocessor_config.json"
    )
    assert (tmp_path / "release4" / "preprocessor_config.json").read_bytes() == source


def _load_calls(text):
    return re.findall(r'from_pretrained\(\s*"([^"]+)"|model="([^"]+)"', _section(text, "How to use"))


def test_card_snippets_load_by_repo_id_never_a_local_path(tiny_run, tmp_path):
    """Issue 21: the snippets loaded from an absolute local path; now by repo id, a placeholder
    one (explained in the card) when the model has none yet."""
    hub = render_model_card(tiny_run.config, model_name="me/run_tb")
    assert {a or b for a, b in _load_calls(hub.text)} == {"me/run_tb"}
    assert "your-username" not in hub.text
    folder = tmp_path / "outputs" / "run_tb" / "encoder"
    local = render_model_card(tiny_run.config, model_name="run_tb", model_path=folder)
    assert {a or b for a, b in _load_calls(local.text)} == {"your-username/run_tb"}
    assert os.fspath(tmp_path) not in local.text and "stands for the repo id it is" in local.text
    assert local.text.startswith("\n# run_tb\n")  # the name stays the title
    export_release(tiny_run.checkpoint, tmp_path / "rel", model_name="cjepa-tiny")
    card = ModelCard.load(tmp_path / "rel" / "README.md")
    assert {a or b for a, b in _load_calls(card.text)} == {"your-username/cjepa-tiny"} and os.fspath(tmp_path) not in card.text


def test_base_model_is_metadata_only_when_it_is_a_hub_id(tiny_run, tmp_path):
    card = render_model_card(tiny_run.config, model_name="me/x", base_model="facebook/ijepa_vith14_1k")
    assert card.data.base_model == "facebook/ijepa_vith14_1k"
    assert "base_model" not in render_model_card(tiny_run.config, model_name="me/x").data.to_dict()
    (tmp_path / "local").mkdir()
    for bad in ("run_tb", os.fspath(tmp_path / "local"), "outputs/run/../x"):
        with pytest.raises(ValueError, match=re.escape(f"base_model must be Hub ids ('owner/name'), got [{bad!r}]")):
            render_model_card(tiny_run.config, model_name="me/x", base_model=bad)


@pytest.mark.parametrize("value", [81.25, 1.5, -0.1])
def test_accuracy_in_model_index_is_a_fraction(value):
    result = {"task": "image-classification", "dataset": "d", "metric": "accuracy", "value": value}
    with pytest.raises(ValueError, match=re.escape("accuracy must be a fraction in [0, 1] (e.g. 0.8125, not 81.25)")):
        to_eval_result(result)
    assert to_eval_result({**result, "value": 0.8125}).metric_value == 0.8125
    assert to_eval_result({**result, "metric": "rankme", "value": 17.75}).metric_value == 17.75  # not an accuracy


def test_card_states_intended_use_compute_and_library_versions(padded_run, tmp_path):
    import shutil

    import transformers

    # Nothing recorded: the card says so instead of inventing it.
    export_release(padded_run.checkpoint, tmp_path / "a", model_name="me/a")
    text = ModelCard.load(tmp_path / "a" / "README.md").text
    assert "## Intended use" in text and "**Not for:**" in text
    training = _section(text, "Training")
    assert "| hardware | not recorded |" in training and "| training wall time | not recorded |" in training
    assert f"| transformers | {transformers.__version__} |" in training and "| cjepa-hf | 0.1.0 |" in training
    saved_with = json.loads((padded_run.checkpoint / "config.json").read_text())["transformers_version"]
    assert f"The weights were saved with transformers {saved_with}" in training

    # Known: --hardware, and the wall time Trainer logs at the end of training (train_runtime) ...
    run = tmp_path / "run"
    shutil.copytree(padded_run.output, run)
    state = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())
    state["log_history"].append({"train_runtime": 12.5, "train_loss": 1.0, "epoch": 1.0, "step": 2})
    (run / "checkpoint-2" / "trainer_state.json").write_text(json.dumps(state))
    export_release(run / "checkpoint-2", tmp_path / "b", model_name="me/b", compute={"hardware": "1 x test CPU"})
    training = _section(ModelCard.load(tmp_path / "b" / "README.md").text, "Training")
    assert "| hardware | 1 x test CPU |" in training and "| training wall time | 12 s |" in training
    # ... or scripts/pretrain.py's pretrain_summary.json in the output folder.
    (run / "pretrain_summary.json").write_text(json.dumps({"wall_time_s": 5400.0}))
    export_release(run / "checkpoint-2", tmp_path / "c", model_name="me/c")
    assert "| training wall time | 5400 s (1.5 h) |" in ModelCard.load(tmp_path / "c" / "README.md").text


def test_release_ids_follow_the_design_and_the_docs_say_how_to_get_one(tiny_run, tmp_path, monkeypatch):
    assert {"cjepa-vitt16", "cjepa-vits16", "cjepa-vitb16", "cjepa-vitl16", "ijepa-vith14"} <= set(VARIANTS)
    for name, entry in VARIANTS.items():
        if entry["preset"]:  # e.g. preset vit-b16 -> cjepa-vitb16
            assert name == f"{entry['family']}-{entry['preset'].replace('-', '')}", name
    assert infer_variant(CJEPAConfig.from_preset("vit-l16")) == "cjepa-vitl16"
    hub_doc = (ROOT / "docs" / "HUB.md").read_text()
    assert "cjepa-vit-" not in hub_doc and "ijepa-vit-" not in hub_doc
    assert 'AutoModel.from_pretrained("cjepa-vitb16")' in hub_doc and "recipes/vit-b16-in1k-600ep.json" in hub_doc
    assert re.search(r"has not\s+published any checkpoint", hub_doc) and "convert_ijepa_checkpoint.py" in hub_doc
    # The documented route: export into a folder named cjepa-vitb16, load it by that name.
    monkeypatch.chdir(tmp_path)
    export_release(tiny_run.checkpoint, "cjepa-vitb16", model_name="me/cjepa-vitb16")
    model = AutoModel.from_pretrained("cjepa-vitb16")
    assert type(model) is CJEPAModel
    assert all(torch.equal(model.state_dict()[k], tiny_run.target[k]) for k in tiny_run.target)


@pytest.mark.parametrize("network", ["HF_HUB_OFFLINE=1", "connection refused"])
def test_push_without_network_ends_in_one_line_naming_the_repo(network, tmp_path, tiny_run, monkeypatch, capsys):
    from huggingface_hub import constants

    if network == "connection refused":  # online mode, but nothing listens at the endpoint
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    else:
        assert constants.HF_HUB_OFFLINE  # conftest: the tests run with HF_HUB_OFFLINE=1
    script = _script("push_to_hub")
    rc = script.main(["--checkpoint", str(tiny_run.checkpoint), "--output", str(tmp_path / "a"), "--repo-id", "me/cjepa-tiny"])
    err = capsys.readouterr().err
    assert rc == script.EXIT_HUB_UNREACHABLE == 3
    lines = err.strip().splitlines()  # stderr also carries the weight writer's progress bar
    assert "Traceback" not in err and sum(line.startswith("error:") for line in lines) == 1
    assert lines[-1].startswith("error: cannot push to 'me/cjepa-tiny': the Hugging Face Hub cannot be reached (")
    assert ("OfflineModeIsEnabled" if network == "HF_HUB_OFFLINE=1" else "ConnectError") in lines[-1]
    assert sorted(os.listdir(tmp_path / "a")) == list(RELEASE_FILES)  # the release folder is kept


# ============================================================================ issue 21: what was trained, from the run

# Every loss field (LOSS_FIELDS) with a distinctive value, the fields that turn its term on, and
# how the card writes it. A field added to LOSS_FIELDS without a row here fails the first assert;
# a field dropped from describe_objective() or from the card fails the render check.
LOSS_FIELD_CASES = {
    "jepa_loss": ({"jepa_loss": "smooth_l1"}, "smooth_l1"),
    "smooth_l1_beta": ({"jepa_loss": "smooth_l1", "smooth_l1_beta": 0.37}, "0.37"),
    "vicreg_weight": ({"vicreg_weight": 0.0123}, "0.0123"),
    "vicreg_sim_coeff": ({"vicreg_weight": 0.001, "vicreg_sim_coeff": 17.5}, "17.5"),
    "vicreg_std_coeff": ({"vicreg_weight": 0.001, "vicreg_std_coeff": 23.25}, "23.25"),
    "vicreg_cov_coeff": ({"vicreg_weight": 0.001, "vicreg_cov_coeff": 1.75}, "1.75"),
    "vicreg_eps": ({"vicreg_weight": 0.001, "vicreg_eps": 0.00037}, "0.00037"),
    "vicreg_source": ({"vicreg_weight": 0.001, "vicreg_source": "context"}, "context"),
    "projector_dims": ({"vicreg_weight": 0.001, "projector_dims": [48, 40]}, "(48, 40)"),
    "encoder_vicreg_weight": ({"vicreg_weight": 0.0, "encoder_vicreg_weight": 0.0456}, "0.0456"),
    "encoder_vicreg_features": ({"vicreg_weight": 0.0, "encoder_vicreg_weight": 0.05, "encoder_vicreg_features": "both"}, "both"),
}


def test_the_loss_table_covers_every_loss_field():
    from cjepa_hf.configuration_cjepa import LOSS_FIELDS

    assert set(LOSS_FIELD_CASES) == set(LOSS_FIELDS)


@pytest.mark.parametrize("field", sorted(LOSS_FIELD_CASES))
def test_every_loss_field_reaches_the_card(field):
    overrides, written = LOSS_FIELD_CASES[field]
    config = CJEPAConfig(**{**TINY, **overrides})
    assert getattr(config, field) != getattr(CJEPAConfig(**TINY), field)  # distinctive: not the default
    text = render_model_card(config, model_name="me/x").text
    objective = _section(text, "Training").split("### Objective", 1)[1].split("### Preprocessing")[0]
    assert f"{field} = {written}" in objective, objective
    assert f"({config.objective})" in objective.splitlines()[0]


@pytest.mark.parametrize(
    "overrides, heading, c_jepa",
    [
        ({"vicreg_weight": 0.0, "encoder_vicreg_weight": 0.0}, "I-JEPA (ijepa)", False),
        ({"vicreg_weight": 0.0, "encoder_vicreg_weight": 0.05}, "I-JEPA + encoder regulariser (ijepa+encvar)", False),
        ({"vicreg_weight": 0.001, "encoder_vicreg_weight": 0.0}, "C-JEPA (I-JEPA + VICReg) (cjepa)", True),
        ({"vicreg_weight": 0.001, "encoder_vicreg_weight": 0.05}, "C-JEPA (I-JEPA + VICReg) + encoder regulariser (cjepa+encvar)", True),
    ],
)
def test_the_objective_heading_names_what_was_trained(overrides, heading, c_jepa):
    card = render_model_card(CJEPAConfig(**{**TINY, **overrides}), model_name="me/x")
    assert f"### Objective: pretrained with {heading}" in card.text
    # "C-JEPA" is said of the run only when the paper's VICReg term is on
    assert ("C-JEPA (I-JEPA + VICReg)" in card.text) == c_jepa and ("vicreg" in card.data.tags) == c_jepa
    weights = [overrides["vicreg_weight"], overrides["encoder_vicreg_weight"]]
    rows = [line for line in _section(card.text, "Training").splitlines() if line.startswith("| ") and " | this project" in line]
    assert len(rows) == (weights[1] > 0)  # the encoder regulariser's row exactly when it is on


def _judged_run(tiny_run, tmp_path, dataset):
    """tiny_run's output folder with a pretrain_summary.json as scripts/pretrain.py writes it."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.checkpoint.parent, run)
    judgement = {
        name: {"linear_top1": lin, "knn_top1": knn, "effective_rank_centered": 3.0, "dims": 32}
        for name, lin, knn in (("trained", 0.75, 0.625), ("random_init", 0.5, 0.5), ("raw_pixels", 0.6, 0.55))
    }
    judgement["protocol"] = {
        "dataset": dataset,
        "train_split": "train",
        "test_split": "train[held-out 20%]",
        "train_samples": 40,
        "test_samples": 8,
        "knn_k": 20,
        "knn_temperature": 0.07,
    }
    summary = {
        "wall_time_s": 67.0,
        "train_time_s": 25.0,
        "hardware": "1 x NVIDIA H100 80GB HBM3",
        "data": {"dataset": dataset, "split": "train", "images": 48, "classes": ["cats", "dogs"]},
        "evaluation": judgement,
    }
    (run / "pretrain_summary.json").write_text(json.dumps(summary))
    return run


def test_push_to_hub_reads_the_runs_dataset_hardware_and_judgement(tiny_run, tmp_path, capsys):
    """Issue 21: the card said "pretraining data was not recorded" and "hardware not recorded"
    for a run that recorded both, and left its judgement out; a local folder became a Hub link."""
    user_folder = tmp_path / "my_images"
    user_folder.mkdir()
    run = _judged_run(tiny_run, tmp_path, os.fspath(user_folder))
    script = _script("push_to_hub")
    rc = script.main(
        ["--checkpoint", os.fspath(run / "checkpoint-2"), "--output", str(tmp_path / "rel"), "--repo_id", "me/mine", "--no_push"]
    )
    assert rc == 0, capsys.readouterr().err
    card = ModelCard.load(tmp_path / "rel" / "README.md")
    data = card.data.to_dict()
    assert "datasets" not in data  # a local path is no Hub id: never in `datasets:`
    assert "huggingface.co/datasets/" not in card.text and os.fspath(tmp_path) not in card.text
    assert "`my_images` (a local data set, not on the Hub): 48 images, 2 classes (cats, dogs)" in card.text
    assert "| hardware | 1 x NVIDIA H100 80GB HBM3 |" in card.text and "| training wall time | 67 s |" in card.text
    got = {(r.dataset_type, r.dataset_name, r.metric_name, r.metric_value) for r in card.data.eval_results}
    assert got == {("imagefolder", "my_images", "linear probe accuracy", 0.75), ("imagefolder", "my_images", "k-NN accuracy", 0.625)}
    assert "| trained encoder | 62.50 | 75.00 | 32 |" in card.text and "| linear probe accuracy | 75.00% |" in card.text
    # the old spellings still work; flags given win over the run's record
    rc = script.main(
        ["--checkpoint", os.fspath(run / "checkpoint-2"), "--output", str(tmp_path / "rel2"), "--repo-id", "me/m2", "--no-push"]
        + ["--dataset", "org/data"]
    )
    assert rc == 0, capsys.readouterr().err
    assert ModelCard.load(tmp_path / "rel2" / "README.md").data.datasets == ["org/data"]


def test_push_to_hub_names_a_hub_dataset_and_a_typo_is_one_line(tiny_run, tmp_path, capsys):
    run = _judged_run(tiny_run, tmp_path, "fashion_mnist")
    script = _script("push_to_hub")
    checkpoint = os.fspath(run / "checkpoint-2")
    assert script.main(["--checkpoint", checkpoint, "--output", str(tmp_path / "r"), "--repo_id", "me/f", "--no_push"]) == 0
    card = ModelCard.load(tmp_path / "r" / "README.md")
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert {r.dataset_type for r in card.data.eval_results} == {"zalando-datasets/fashion_mnist"}
    capsys.readouterr()
    assert script.main(["--checkpoint", checkpoint, "--output", str(tmp_path / "s"), "--repo_idd", "me/f"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean --repo_id" in err


def test_finetune_card_names_a_local_base_without_a_link(tiny_run):
    from cjepa_hf.hub import describe_finetune_base

    trainer_text = "---\ndatasets:\n- imagefolder\n---\n# ft\n\nThis model was trained from scratch on the my_images dataset.\n"
    config = CJEPAConfig(**{**TINY, "vicreg_weight": 0.0, "encoder_vicreg_weight": 0.05})
    text = describe_finetune_base(trainer_text, "/home/me/outputs/quickstart/encoder", config)
    assert "trained from scratch" not in text and "huggingface.co" not in text and "/home/me" not in text
    assert ModelCard(text).data.datasets is None  # "imagefolder" is no Hub data set
    assert (
        "fine-tuned version of `encoder` (a local model, not on the Hub), pretrained with I-JEPA + encoder regulariser (ijepa+encvar)"
        in text
    )
    hub_text = (
        "---\ndatasets:\n- org/x\n---\nThis model is a fine-tuned version of [me/enc](https://huggingface.co/me/enc) on the x dataset."
    )
    assert "[me/enc](https://huggingface.co/me/enc), pretrained with" in describe_finetune_base(hub_text, "me/enc", config)


def test_the_pipeline_with_pool_returns_what_the_card_says(release):
    """Issue 21: the card said "one vector" where the pipeline returns a list of one list."""
    from transformers import pipeline

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    hidden = CJEPAConfig.from_pretrained(release.folder).hidden_size
    features = pipeline("image-feature-extraction", model=str(release.folder), device="cpu")(image, pool=True)
    assert isinstance(features, list) and len(features) == 1 and len(features[0]) == hidden
    card = ModelCard.load(release.folder / "README.md").text
    assert f"a list of one list of {hidden} floats: features[0] is the vector" in card
    assert f"a tensor of shape (1, {hidden})" in card
