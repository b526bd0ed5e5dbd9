import json
import os

import numpy as np
import pytest
import torch
from conftest import TINY, assert_loads_without_package, random_masks
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

from cjepa_hf import CJEPAConfig, CJEPAForImageClassification, CJEPAForPreTraining, CJEPAModel
from cjepa_hf.losses import variance_covariance_loss
from cjepa_hf.modeling_cjepa import REMOTE_CODE_FILES, gather_tokens, sincos_2d


def _inputs(config, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, config.image_size, config.image_size, generator=g)
    context, target = random_masks(batch, config.num_patches, kept=20, blocks=config.num_target_blocks, per_block=6, seed=seed)
    return pixels, context, target


def _trained_one_step(config):
    """A pretraining model whose target and context encoders differ (one SGD step + EMA)."""
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(*_inputs(config)).loss.backward()
    opt.step()
    model.update_target_encoder(0.5)
    return model


def test_sincos_positions_match_formula():
    pos = sincos_2d(8, 3)[0]  # (9, 8)
    # patch (row=1, col=2) is index 5: first half encodes the column, second half the row
    omega = 1.0 / 10000 ** (torch.arange(2, dtype=torch.float64) / 2)
    col = torch.cat([torch.sin(2 * omega), torch.cos(2 * omega)])
    row = torch.cat([torch.sin(1 * omega), torch.cos(1 * omega)])
    assert torch.allclose(pos[5].double(), torch.cat([col, row]), atol=1e-6)


def test_position_embeddings_are_fixed_buffers(tiny_config):
    model = CJEPAModel(tiny_config)
    assert "embeddings.position_embeddings" in model.state_dict()
    assert all("position_embeddings" not in n for n, _ in model.named_parameters())
    assert torch.allclose(model.embeddings.position_embeddings, sincos_2d(32, 8))


def test_pooler_is_mean_and_hidden_states_and_attentions(tiny_config):
    model = CJEPAModel(tiny_config).eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(x, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 64, 32)
    assert torch.allclose(out.pooler_output, out.last_hidden_state.mean(1))
    assert len(out.hidden_states) == tiny_config.num_hidden_layers + 1
    assert len(out.attentions) == tiny_config.num_hidden_layers and out.attentions[0].shape == (2, 4, 64, 64)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 4, 64), atol=1e-5)
    assert torch.allclose(model.layernorm(out.hidden_states[-1]), out.last_hidden_state, atol=1e-6)


def test_eager_and_sdpa_agree(tiny_config):
    torch.manual_seed(0)
    model = CJEPAForPreTraining(tiny_config).eval()
    inputs = _inputs(tiny_config)
    model.set_attn_implementation("eager")
    eager = model(*inputs)
    model.set_attn_implementation("sdpa")
    sdpa = model(*inputs)
    assert (eager.predictions - sdpa.predictions).abs().max() < 1e-5
    assert abs(eager.loss.item() - sdpa.loss.item()) < 1e-5


def test_context_dropping_equals_encoder_on_gathered_tokens(tiny_config):
    model = CJEPAModel(tiny_config).eval()
    x = torch.randn(3, 3, 32, 32)
    keep, _ = random_masks(3, 64, kept=17, blocks=1, per_block=1, seed=3)
    dropped = model(x, keep_indices=keep).last_hidden_state
    tokens = gather_tokens(model.embeddings(x), keep)
    for layer in model.layers:
        tokens, _ = layer(tokens)
    assert dropped.shape == (3, 17, 32)
    assert torch.allclose(dropped, model.layernorm(tokens), atol=1e-6)
    # dropping tokens is not masking them: kept tokens differ from the full-image run
    full = model(x).last_hidden_state
    assert not torch.allclose(dropped, gather_tokens(full, keep), atol=1e-3)


def test_predictor_shapes_and_blocks_do_not_attend_to_each_other(tiny_config):
    torch.manual_seed(0)
    model = CJEPAForPreTraining(tiny_config).eval()
    pixels, context, target = _inputs(tiny_config, batch=2)
    tokens = model.context_encoder(pixels, keep_indices=context).last_hidden_state
    pred = model.predictor(tokens, context, target)
    assert pred.shape == (2, 4, 6, 32)
    moved = target.clone()
    moved[:, 2] = (moved[:, 2] + 7) % 64  # change block 2 only
    pred2 = model.predictor(tokens, context, moved)
    others = [0, 1, 3]
    assert torch.allclose(pred[:, others], pred2[:, others], atol=1e-6)
    assert not torch.allclose(pred[:, 2], pred2[:, 2], atol=1e-4)
    # one block alone gives the same result as inside the batch of blocks
    alone = model.predictor(tokens, context, target[:, 1:2])
    assert torch.allclose(alone[:, 0], pred[:, 1], atol=1e-5)


def test_gradients_reach_context_and_predictor_never_target(tiny_config):
    torch.manual_seed(0)
    model = CJEPAForPreTraining(tiny_config).train()
    out = model(*_inputs(tiny_config))
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.target_encoder.parameters())
    for module in (model.context_encoder, model.predictor, model.projector):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert not model.target_encoder.training and model.context_encoder.training


def test_loss_components_add_up(tiny_config):
    model = CJEPAForPreTraining(tiny_config)
    out = model(*_inputs(tiny_config))
    vic = 25 * out.vicreg_invariance + 25 * out.vicreg_variance + 1 * out.vicreg_covariance
    assert torch.allclose(out.vicreg_loss, vic)
    assert torch.allclose(out.loss, out.jepa_loss + 0.001 * out.vicreg_loss)
    assert out.target_pooled_output.shape == (4, 32)


def test_ijepa_mode_has_no_projector_and_loss_is_jepa(tiny_config):
    config = CJEPAConfig(**{**TINY, "vicreg_weight": 0.0})
    model = CJEPAForPreTraining(config)
    assert model.projector is None
    out = model(*_inputs(config))
    assert out.vicreg_loss is None and torch.equal(out.loss, out.jepa_loss)


def test_context_vicreg_source(tiny_config):
    config = CJEPAConfig(**{**TINY, "vicreg_source": "context"})
    model = CJEPAForPreTraining(config)
    out = model(*_inputs(config))
    assert torch.isfinite(out.loss) and out.vicreg_variance > 0
    out.loss.backward()
    assert model.context_encoder.embeddings.patch_embeddings.projection.weight.grad is not None


@pytest.mark.parametrize("features", ["pooled", "tokens", "both"])
def test_encoder_regulariser_adds_up_and_trains_the_context_encoder(features):
    # on top of I-JEPA: no projector is needed for it
    config = CJEPAConfig(**{**TINY, "vicreg_weight": 0.0, "encoder_vicreg_weight": 0.5, "encoder_vicreg_features": features})
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    assert model.projector is None
    pixels, context, target = _inputs(config)
    out = model(pixels, context, target)
    assert torch.allclose(out.loss, out.jepa_loss + 0.5 * out.encoder_vicreg_loss)
    assert torch.allclose(out.encoder_vicreg_loss, 25 * out.encoder_variance + out.encoder_covariance)
    tokens = model.context_encoder(pixels, keep_indices=context).last_hidden_state
    pooled = variance_covariance_loss(tokens.mean(dim=1))["loss"]
    per_token = variance_covariance_loss(tokens.flatten(0, 1))["loss"]
    expected = {"pooled": pooled, "tokens": per_token, "both": pooled + per_token}[features]
    assert torch.allclose(out.encoder_vicreg_loss, expected, rtol=1e-5)
    # the regulariser alone moves the context encoder
    model.zero_grad()
    out.encoder_vicreg_loss.backward()
    assert model.context_encoder.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    off = CJEPAForPreTraining(CJEPAConfig(**{**TINY, "vicreg_weight": 0.0}))
    assert off(pixels, context, target).encoder_vicreg_loss is None


def test_smooth_l1_is_about_half_mse_on_normed_targets(tiny_config):
    torch.manual_seed(0)
    l2 = CJEPAForPreTraining(CJEPAConfig(**{**TINY, "vicreg_weight": 0.0}))
    sl1 = CJEPAForPreTraining(CJEPAConfig(**{**TINY, "vicreg_weight": 0.0, "jepa_loss": "smooth_l1"}))
    sl1.load_state_dict(l2.state_dict())
    inputs = _inputs(l2.config)
    a, b = l2(*inputs).loss.item(), sl1(*inputs).loss.item()
    assert b < a and b == pytest.approx(a / 2, rel=0.25)


def test_ema_update_is_exact_lerp(tiny_config):
    model = _trained_one_step(tiny_config)
    t0 = [p.clone() for p in model.target_encoder.parameters()]
    c = [p.clone() for p in model.context_encoder.parameters()]
    model.update_target_encoder(0.9)
    for before, ctx, after in zip(t0, c, model.target_encoder.parameters()):
        assert torch.allclose(after, 0.9 * before + 0.1 * ctx, atol=1e-7)
    with pytest.raises(ValueError, match="momentum must lie in"):
        model.update_target_encoder(1.5)


def test_gradient_checkpointing_gives_same_gradients(tiny_config):
    torch.manual_seed(0)
    a = CJEPAForPreTraining(tiny_config)
    b = CJEPAForPreTraining(tiny_config)
    b.load_state_dict(a.state_dict())
    getattr(b, "activation_checkpointing_enable", b.gradient_checkpointing_enable)()
    inputs = _inputs(tiny_config)
    a(*inputs).loss.backward()
    b(*inputs).loss.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-6), name


def test_interpolated_positions_for_other_sizes(tiny_config):
    model = CJEPAModel(tiny_config).eval()
    out = model(torch.randn(1, 3, 48, 40))
    assert out.last_hidden_state.shape == (1, 12 * 10, 32)
    with pytest.raises(ValueError, match="multiples of patch_size=4"):
        model(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("cls", [CJEPAModel, CJEPAForPreTraining, CJEPAForImageClassification])
def test_save_load_round_trip(tmp_path, tiny_config, cls):
    torch.manual_seed(0)
    model = cls(tiny_config).eval()
    pixels, context, target = _inputs(tiny_config, batch=2)
    args = (pixels, context, target) if cls is CJEPAForPreTraining else (pixels,)
    before = model(*args)
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    after = loaded(*args)
    key = {"CJEPAModel": "last_hidden_state", "CJEPAForPreTraining": "predictions"}.get(cls.__name__, "logits")
    assert torch.equal(before[key], after[key])
    assert {"model.safetensors", "config.json", "preprocessor_config.json", *REMOTE_CODE_FILES} <= set(os.listdir(tmp_path))
    if cls is CJEPAForPreTraining:
        assert not any(p.requires_grad for p in loaded.target_encoder.parameters())
        assert all(p.requires_grad for p in loaded.context_encoder.parameters())


def test_auto_classes_on_pretraining_checkpoint_give_target_encoder(tmp_path, tiny_config):
    model = _trained_one_step(tiny_config)
    model.save_pretrained(tmp_path)
    target = model.target_encoder.embeddings.patch_embeddings.projection.weight
    context = model.context_encoder.embeddings.patch_embeddings.projection.weight
    assert not torch.allclose(target, context)
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder) is CJEPAModel
    assert torch.equal(encoder.embeddings.patch_embeddings.projection.weight, target)
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    assert torch.equal(classifier.target_encoder.embeddings.patch_embeddings.projection.weight, target)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is CJEPAForPreTraining


def test_classification_loss_is_cross_entropy(tiny_config):
    config = CJEPAConfig(**TINY, num_labels=5)
    model = CJEPAForImageClassification(config)
    x, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 2])
    out = model(x, labels=labels)
    assert out.logits.shape == (3, 5)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_image_processor_uses_imagenet_statistics(tmp_path, tiny_config):
    CJEPAModel(tiny_config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.485, 0.456, 0.406] and saved["image_std"] == [0.229, 0.224, 0.225]
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    image = Image.fromarray(np.full((50, 70, 3), 128, dtype=np.uint8))
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(pixels[0, :, 16, 16], expected, atol=1e-4)


def test_feature_extraction_pipeline_returns_pooled_features(tmp_path, tiny_config):
    from transformers import pipeline

    torch.manual_seed(0)
    CJEPAModel(tiny_config).save_pretrained(tmp_path)
    extractor = pipeline("image-feature-extraction", model=str(tmp_path), device="cpu")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    features = extractor(image, pool=True, return_tensors=True)
    model = AutoModel.from_pretrained(tmp_path).eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).pooler_output
    assert features.shape == (1, 32)
    assert torch.allclose(features, expected, atol=1e-6)


def test_trust_remote_code_without_the_package(tmp_path, tiny_config):
    """A saved folder loads and runs as remote code where cjepa_hf cannot be imported, and the
    model so loaded saves a folder that loads the same way (its code files and processor included)."""
    torch.manual_seed(0)
    model = _trained_one_step(tiny_config)
    folder = tmp_path / "release"
    model.save_pretrained(folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.target_encoder.eval()(x).pooler_output
    files = assert_loads_without_package(folder, x, expected, tmp_path, resave=tmp_path / "saved_by_remote_code")
    assert {"model.safetensors", "config.json", "preprocessor_config.json", *REMOTE_CODE_FILES} <= set(files)


def test_remote_code_files_are_the_files_the_model_imports():
    # What transformers copies for trust_remote_code is modeling_cjepa.py and the package files
    # it imports, directly or not; save_pretrained copies REMOTE_CODE_FILES: the two must agree.
    from transformers.dynamic_module_utils import get_relative_import_files

    from cjepa_hf import modeling_cjepa

    imported = {os.path.basename(f) for f in get_relative_import_files(modeling_cjepa.__file__)}
    assert set(REMOTE_CODE_FILES) == imported | {"modeling_cjepa.py"}


def test_seeded_init_does_not_depend_on_the_projector():
    # I-JEPA (no projector) and C-JEPA built from one seed start from the same encoder and predictor.
    torch.manual_seed(0)
    with_projector = CJEPAForPreTraining(CJEPAConfig(**{**TINY, "vicreg_weight": 0.001})).state_dict()
    torch.manual_seed(0)
    without = CJEPAForPreTraining(CJEPAConfig(**{**TINY, "vicreg_weight": 0.0})).state_dict()
    assert set(with_projector) - set(without) == {k for k in with_projector if k.startswith("projector.")}
    for key, value in without.items():
        assert torch.equal(value, with_projector[key]), key
    torch.manual_seed(1)
    other = CJEPAForPreTraining(CJEPAConfig(**{**TINY, "vicreg_weight": 0.0})).state_dict()
    assert not torch.equal(other["predictor.predictor_embed.weight"], without["predictor.predictor_embed.weight"])


# Each named objective: the fields it sets, the name read back from them, and the terms the
# model then computes (and nothing else).
OBJECTIVE_TABLE = [
    # name, vicreg_weight, vicreg_source, encoder_vicreg_weight, VICReg term on, encoder term on
    ("ijepa", 0.0, None, 0.0, False, False),
    ("cjepa", 0.001, "predictor", 0.0, True, False),
    ("cjepa-context", 0.001, "context", 0.0, True, False),
    ("ijepa+encvar", 0.0, None, 0.05, False, True),
    ("cjepa+encvar", 0.001, "predictor", 0.05, True, True),
    ("cjepa-context+encvar", 0.001, "context", 0.05, True, True),
]


@pytest.mark.parametrize("name, beta, source, enc_weight, vicreg_on, encoder_on", OBJECTIVE_TABLE)
def test_named_objective_builds_what_it_claims(name, beta, source, enc_weight, vicreg_on, encoder_on):
    from cjepa_hf.configuration_cjepa import OBJECTIVES, objective_overrides

    assert name in OBJECTIVES and len(OBJECTIVES) == len(OBJECTIVE_TABLE)
    fields = objective_overrides(name)
    config = CJEPAConfig(**{**TINY, **fields})
    assert config.objective == name
    assert config.vicreg_weight == beta and config.encoder_vicreg_weight == enc_weight
    if source is not None:
        assert config.vicreg_source == source
    if encoder_on:
        assert config.encoder_vicreg_features == "tokens"
    # a run's own weights, merged over the name's, keep the name while the term stays on
    tuned = CJEPAConfig(**{**TINY, **fields, **({"vicreg_weight": 0.3} if vicreg_on else {})})
    assert tuned.objective == name
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    out = model(*_inputs(config))
    assert (out.vicreg_loss is not None) == vicreg_on
    assert (out.encoder_vicreg_loss is not None) == encoder_on
    expected = out.jepa_loss
    if vicreg_on:
        expected = expected + beta * out.vicreg_loss
    if encoder_on:
        expected = expected + enc_weight * out.encoder_vicreg_loss
    assert torch.allclose(out.loss, expected)
    description = config.describe_objective()
    assert description["name"] == name
    origins = [term["origin"] for term in description["terms"]]
    assert any("Mo & Tong" in o for o in origins) == vicreg_on
    assert any("this project" in o for o in origins) == encoder_on


def test_objective_name_follows_the_fields_not_a_label():
    from cjepa_hf.configuration_cjepa import objective_overrides

    # the paper's term switched off by an override is I-JEPA, whatever it was asked for as
    assert CJEPAConfig(**{**TINY, **objective_overrides("cjepa"), "vicreg_weight": 0.0}).objective == "ijepa"
    assert CJEPAConfig(**TINY).objective == "cjepa"  # the config's defaults are the paper's
    with pytest.raises(ValueError, match=r"objective must be one of .*got 'cjepa_context'.*did you mean 'cjepa-context'"):
        objective_overrides("cjepa_context")
