import pytest
import torch
from transformers import IJepaConfig, IJepaModel

from cjepa_hf import CJEPAConfig, CJEPAModel
from cjepa_hf.convert import from_ijepa_model, load_strict, to_ijepa_model


def _ijepa(**kw):
    torch.manual_seed(0)
    config = IJepaConfig(
        image_size=32,
        patch_size=4,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        layer_norm_eps=1e-6,
        **kw,
    )
    return IJepaModel(config).eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_ijepa_to_cjepa_parity(attn):
    ijepa = _ijepa()
    ijepa.set_attn_implementation(attn)
    model = from_ijepa_model(ijepa).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        diff = (ijepa(x).last_hidden_state - model(x).last_hidden_state).abs().max().item()
    assert diff < 1e-5


def test_cjepa_to_ijepa_parity_and_round_trip():
    torch.manual_seed(1)
    model = CJEPAModel(
        CJEPAConfig(image_size=32, patch_size=4, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, min_keep=4)
    ).eval()
    ijepa = to_ijepa_model(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ijepa(x).last_hidden_state - model(x).last_hidden_state).abs().max() < 1e-5
    back = from_ijepa_model(ijepa)
    for (k, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k


def test_ijepa_with_pooler_and_saved_folder(tmp_path):
    ijepa = _ijepa()
    ijepa.save_pretrained(tmp_path)
    model = from_ijepa_model(str(tmp_path)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (ijepa(x).last_hidden_state - model(x).last_hidden_state).abs().max() < 1e-5
    assert model.config.layer_norm_eps == 1e-6


def test_shape_mismatch_lists_every_bad_key():
    model = CJEPAModel(CJEPAConfig(image_size=32, patch_size=4, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, min_keep=4))
    state = model.state_dict()
    state["layernorm.weight"] = torch.ones(7)
    state.pop("layers.0.mlp.fc1.bias")
    state["extra.weight"] = torch.ones(1)
    with pytest.raises(ValueError) as info:
        load_strict(model, state, "test weights")
    message = str(info.value)
    assert "layers.0.mlp.fc1.bias" in message and "extra.weight" in message
    assert "layernorm.weight: checkpoint (7,) vs model (48,)" in message
