import os

import pytest
import torch

from cjepa_hf import PRESET_NAMES, CJEPAConfig, CJEPAForPreTraining, CJEPAModel


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(image_size=30, patch_size=16), "image_size must be divisible by patch_size"),
        (dict(hidden_size=100, num_attention_heads=12), "num_attention_heads must divide hidden_size"),
        (dict(predictor_hidden_size=100), "predictor_num_attention_heads must divide predictor_hidden_size"),
        (dict(target_scale=(0.15, 1.3)), r"target_scale must lie in \(0, 1\], got \(0.15, 1.3\)"),
        (dict(target_scale=(0.3, 0.2)), "target_scale must have min <= max"),
        (dict(context_scale=(0.0, 1.0)), "context_scale must lie in"),
        (dict(target_aspect_ratio=(-1, 1.5)), "target_aspect_ratio must be positive"),
        (dict(target_aspect_ratio="wide"), "target_aspect_ratio must be a pair"),
        (dict(vicreg_weight=-0.1), "vicreg_weight must be a finite number >= 0, got -0.1"),
        (dict(vicreg_std_coeff=float("nan")), "vicreg_std_coeff must be a finite number"),
        (dict(jepa_loss="l1"), "jepa_loss must be one of"),
        (dict(vicreg_source="target"), "vicreg_source must be one of"),
        (dict(encoder_vicreg_features="cls"), "encoder_vicreg_features must be one of .*'cls'"),
        (dict(encoder_vicreg_weight=-1.0), "encoder_vicreg_weight must be a finite number >= 0, got -1.0"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer, got 0"),
        (dict(min_keep=1000), "min_keep must be at most the number of patches"),
        (dict(drop_path_rate=1.5), "drop_path_rate must lie in"),
        (dict(projector_dims=()), "projector_dims must be a non-empty list"),
        (dict(num_target_blocks=1), "needs num_target_blocks >= 2"),
    ],
)
def test_invalid_values_name_field_and_value(fields, message):
    with pytest.raises(ValueError, match=message):
        CJEPAConfig(**fields)


def test_defaults_follow_the_paper():
    c = CJEPAConfig()
    assert (c.image_size, c.patch_size, c.grid_size, c.num_patches) == (224, 16, 14, 196)
    assert c.layer_norm_eps == 1e-6 and c.qkv_bias
    assert c.predictor_hidden_size == 384 and c.predictor_num_attention_heads == c.num_attention_heads
    assert (c.num_target_blocks, c.target_scale, c.target_aspect_ratio) == (4, (0.15, 0.2), (0.75, 1.5))
    assert (c.context_scale, c.min_keep) == ((0.85, 1.0), 10)
    assert (c.jepa_loss, c.vicreg_weight) == ("l2", 0.001)
    assert (c.vicreg_sim_coeff, c.vicreg_std_coeff, c.vicreg_cov_coeff) == (25.0, 25.0, 1.0)


def test_round_trip_through_json(tmp_path):
    c = CJEPAConfig.from_preset("vit-s16", target_scale=(0.1, 0.2), projector_dims=(128, 256))
    c.save_pretrained(tmp_path)
    back = CJEPAConfig.from_pretrained(tmp_path)
    assert back.target_scale == (0.1, 0.2) and back.projector_dims == (128, 256)
    assert back.to_dict() == c.to_dict()


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="vit-b16"):
        CJEPAConfig.from_preset("vit-z99")


# (width, depth, heads, predictor depth, encoder parameters in millions): I-JEPA's sizes
# (Assran et al., CVPR 2023); the predictor is 384 wide with the encoder's heads throughout,
# 12 blocks deep for ViT-L and ViT-H, 16 for ViT-g. ViT-g's MLP is 6144 wide (ratio 48/11).
EXPECTED = {
    "vit-t16": (192, 12, 3, 6, 5.49),
    "vit-s16": (384, 12, 6, 6, 21.59),
    "vit-b16": (768, 12, 12, 6, 85.65),
    "vit-l16": (1024, 24, 16, 12, 303.10),
    "vit-h14": (1280, 32, 16, 12, 630.43),
    "vit-h16": (1280, 32, 16, 12, 630.66),
    "vit-g16": (1408, 40, 16, 16, 1011.09),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_presets_build_with_paper_sizes(name):
    width, depth, heads, pred_depth, millions = EXPECTED[name]
    c = CJEPAConfig.from_preset(name)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.predictor_num_hidden_layers) == (width, depth, heads, pred_depth)
    assert (c.predictor_hidden_size, c.predictor_num_attention_heads, c.predictor_intermediate_size) == (384, heads, 1536)
    assert c.intermediate_size == (6144 if name == "vit-g16" else 4 * width)
    assert c.patch_size == int(name[-2:]) and c.matching_preset() == name
    with torch.device("meta"):
        encoder = CJEPAModel(c)
        full = CJEPAForPreTraining(c)
    count = sum(p.numel() for p in encoder.parameters())
    assert count / 1e6 == pytest.approx(millions, abs=0.01)
    # the pretraining model holds two encoders, the predictor and the projector; only
    # the context encoder, predictor and projector are trainable
    trainable = sum(p.numel() for p in full.parameters() if p.requires_grad)
    assert trainable == count + sum(p.numel() for p in full.predictor.parameters()) + sum(p.numel() for p in full.projector.parameters())


def test_all_presets_listed():
    assert set(EXPECTED) <= set(PRESET_NAMES)


def test_matching_preset_ignores_image_size_and_training_fields_only():
    assert CJEPAConfig.from_preset("vit-h16", image_size=448, vicreg_weight=0.0, target_scale=(0.1, 0.2)).matching_preset() == "vit-h16"
    assert CJEPAConfig.from_preset("vit_huge_patch14").matching_preset() == "vit-h14"  # an alias resolves to the preset's name
    for change in (dict(num_hidden_layers=24), dict(predictor_num_hidden_layers=6), dict(intermediate_size=4 * 1408), dict(patch_size=14)):
        assert CJEPAConfig.from_preset("vit-g16", **change).matching_preset() is None, change
    assert CJEPAConfig().matching_preset() == "vit-b16"  # the defaults are ViT-B/16


def test_pretrain_objective_flag_sets_the_loss_and_refuses_a_contradiction():
    """`--objective` sets the named loss fields under the run's overrides; overrides that turn the
    loss into another objective stop the run before anything is built."""
    from helpers.cli import pretrain_module

    pretrain = pretrain_module()
    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "small-data-fashion-mnist.json")
    config = pretrain.build_config(pretrain.parse_args([recipe])[0])
    assert config.objective == "ijepa+encvar" and config.vicreg_weight == 0 and config.encoder_vicreg_weight == 0.05
    config = pretrain.build_config(
        pretrain.parse_args([recipe, "--objective", "cjepa-context", "--config_overrides", "vicreg_weight=0.2"])[0]
    )
    assert (config.objective, config.vicreg_source, config.vicreg_weight, config.encoder_vicreg_weight) == (
        "cjepa-context",
        "context",
        0.2,
        0,
    )
    with pytest.raises(ValueError, match=r"--objective cjepa was asked for, but --config_overrides make the loss 'ijepa'"):
        pretrain.build_config(pretrain.parse_args([recipe, "--objective", "cjepa", "--config_overrides", "vicreg_weight=0"])[0])


def test_benchmark_times_the_recipes_model():
    """`scripts/benchmark.py --recipe R` builds R's model as pretrain.py does (objective included)."""
    from helpers.cli import pretrain_module

    from cjepa_hf.bench.runner import build_config

    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "small-data-fashion-mnist.json")
    timed = build_config("vit-b16", None, recipe)
    trained = pretrain_module().build_config(pretrain_module().parse_args([recipe])[0])
    assert timed.to_dict() == trained.to_dict() and timed.objective == "ijepa+encvar" and timed.hidden_size == 96
