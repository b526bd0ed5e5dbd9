"""FSDP2 on two CPU processes (gloo): against DDP, an exact sharded resume, the export of the gathered target encoder.

The two-process launch (conftest's `two_process_checks`, shared with test_distributed.py) runs
tests/helpers/fsdp_check.py, which trains the same tiny model five ways (DDP; FSDP2 with
sharded checkpoints; FSDP2 resumed from its step-2 checkpoint; with activation checkpointing;
with bf16 mixed precision); a second launch runs scripts/pretrain.py with the documented
accelerate config (recipes/accelerate-fsdp.yaml). The plugin checks need no launch.
"""

import json
import os
import shutil
import types

import pytest
import torch
from helpers.cli import SCRIPT, pretrain_args
from helpers.launch import ROOT, launch_on_cpu
from safetensors.torch import load_file

from cjepa_hf.training.checkpoints import CorruptCheckpointError, validate_checkpoint
from cjepa_hf.training.fsdp import MODEL_DIR, OPTIMIZER_DIR, consolidate_checkpoint, prepare_fsdp, read_sharded_model

HERE = os.path.dirname(__file__)
TERMS = (
    "loss",
    "jepa_loss",
    "vicreg_loss",
    "vicreg_invariance",
    "vicreg_variance",
    "vicreg_covariance",
    "encoder_vicreg_loss",
    "encoder_variance",
    "encoder_covariance",
    "online_probe_loss",
    "target_feature_std",
    "target_effective_rank",
)


@pytest.fixture(scope="module")
def runs(two_process_checks):
    out = two_process_checks / "fsdp"
    results = [json.loads((out / f"result_{rank}.json").read_text()) for rank in (0, 1)]
    states = {name: torch.load(out / f"{name}_state.pt") for name in ("ddp", "fsdp", "resumed", "ckpt", "bf16")}
    return types.SimpleNamespace(out=out, r=results[0], r1=results[1], states=states)


def _max_log_diff(a: list[dict], b: list[dict]) -> float:
    assert [h["step"] for h in a] == [h["step"] for h in b]
    return max(abs(x[key] - y[key]) for x, y in zip(a, b) for key in TERMS)


def _max_state_diff(a: dict, b: dict, prefix: str = "") -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if k.startswith(prefix))


def test_fsdp_matches_ddp(runs):
    ddp, fsdp = runs.r["ddp"], runs.r["fsdp"]
    assert ddp["wrapper"] == "DistributedDataParallel" and not ddp["fsdp_enabled"]
    assert fsdp["fsdp_enabled"] and fsdp["sharded"] and fsdp["wrapper"] == "FSDPCJEPAForPreTraining"
    # per block: every CJEPALayer of the three stacks is its own unit, the target encoder sharded like the context
    assert fsdp["fsdp_units"] == [
        "",
        "context_encoder.layers.0",
        "context_encoder.layers.1",
        "predictor.layers.0",
        "predictor.layers.1",
        "target_encoder.embeddings.patch_embeddings",
        "target_encoder.layernorm",
        "target_encoder.layers.0",
        "target_encoder.layers.1",
    ]
    assert (fsdp["local_rows"], fsdp["full_rows"]) == (48, 96)  # each process holds half of every parameter
    assert len(fsdp["logs"]) == 4 and runs.r1["fsdp"]["logs"] == fsdp["logs"]
    assert _max_log_diff(ddp["logs"], fsdp["logs"]) <= 1e-5
    assert _max_state_diff(runs.states["ddp"], runs.states["fsdp"], "target_encoder.") <= 1e-5
    assert _max_state_diff(runs.states["ddp"], runs.states["fsdp"]) <= 1e-5  # context, predictor, projector, BN stats
    # the k-NN monitor: 6 batches on one process, 5 on the other, on the gathered target encoder
    assert fsdp["evals"][0]["eval_knn_top1"] == ddp["evals"][0]["eval_knn_top1"]
    assert fsdp["evals"][0]["eval_linear_top1"] == ddp["evals"][0]["eval_linear_top1"]
    # the comparison is not between untouched weights: the EMA moved the target encoder
    step2 = read_sharded_model(runs.out / "fsdp" / "checkpoint-2")
    assert _max_state_diff(runs.states["fsdp"], step2, "target_encoder.") > 1e-7


def test_fsdp_resume_is_exact(runs):
    full, resumed = runs.r["fsdp"], runs.r["resumed"]
    assert [h["step"] for h in resumed["logs"]] == [1, 2, 3, 4]  # 1-2 from the checkpoint's history
    assert resumed["logs"][2:] == full["logs"][2:]  # every logged number of steps 3 and 4
    assert resumed["evals"] == [dict(full["evals"][0], eval_runtime=resumed["evals"][0]["eval_runtime"])]
    assert _max_state_diff(runs.states["fsdp"], runs.states["resumed"]) == 0.0
    checkpoint = runs.out / "fsdp" / "checkpoint-2"
    assert (checkpoint / MODEL_DIR / "__0_0.distcp").is_file() and (checkpoint / MODEL_DIR / "__1_0.distcp").is_file()
    assert (checkpoint / OPTIMIZER_DIR).is_dir() and not (checkpoint / "model.safetensors").exists()
    validate_checkpoint(str(checkpoint))


def test_export_from_an_fsdp_checkpoint_loads_with_automodel(runs, tmp_path):
    from transformers import AutoModel

    from cjepa_hf.hub import export_release

    gathered = torch.load(runs.out / "fsdp_target.pt")  # gather_target_encoder at step 4, on 2 processes
    consolidated = consolidate_checkpoint(str(runs.out / "fsdp" / "checkpoint-4"), str(tmp_path / "consolidated"))
    sources = {"checkpoint-4": consolidated, "save_model": str(runs.out / "fsdp" / "final")}
    for name, source in sources.items():
        release = tmp_path / f"release-{name}"
        export_release(source, release, model_name="fsdp-tiny")
        encoder = AutoModel.from_pretrained(release).eval()
        assert type(encoder).__name__ == "CJEPAModel", name
        state = encoder.state_dict()
        assert state.keys() == gathered["state"].keys(), name
        assert max((state[k] - gathered["state"][k]).abs().max().item() for k in state) == 0.0, name
        with torch.no_grad():
            assert torch.equal(encoder(gathered["x"]).pooler_output, gathered["pooled"]), name
    # the consolidated folder is the whole model of the run at step 4
    weights = load_file(os.path.join(consolidated, "model.safetensors"))
    assert _max_state_diff(weights, runs.states["fsdp"]) == 0.0


def test_activation_checkpointing_and_bf16_under_fsdp(runs):
    full, ckpt, bf16 = runs.r["fsdp"], runs.r["ckpt"], runs.r["bf16"]
    # the blocks recompute their forward in the backward: the same numbers
    assert _max_log_diff(full["logs"], ckpt["logs"]) <= 1e-6
    assert _max_state_diff(runs.states["fsdp"], runs.states["ckpt"]) <= 1e-6
    # bf16: parameters gathered and computed in bf16, reduced in fp32; fp32 master shards (and EMA)
    assert bf16["policy"] == ["torch.bfloat16", "torch.float32"] and full["policy"] is None
    assert bf16["compute_dtype"] == "torch.bfloat16" and bf16["master_dtype"] == "torch.float32"
    assert all(v.dtype != torch.bfloat16 for v in runs.states["bf16"].values())
    for a, b in zip(full["logs"][:2], bf16["logs"]):
        for key in ("loss", "jepa_loss", "vicreg_loss"):
            assert abs(a[key] - b[key]) <= 0.01 * abs(a[key]), (a["step"], key, a[key], b[key])


def test_a_damaged_fsdp_checkpoint_is_refused(runs, tmp_path):
    source = runs.out / "fsdp" / "checkpoint-2"
    truncated = tmp_path / "truncated"
    shutil.copytree(source, truncated)
    shard = truncated / MODEL_DIR / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-16])
    with pytest.raises(CorruptCheckpointError, match="__1_0.distcp is truncated"):
        validate_checkpoint(str(truncated))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(source, unfinished)
    os.remove(unfinished / OPTIMIZER_DIR / ".metadata")
    with pytest.raises(CorruptCheckpointError, match="lacks .metadata"):
        validate_checkpoint(str(unfinished))
    no_optimizer = tmp_path / "no_optimizer"
    shutil.copytree(source, no_optimizer)
    shutil.rmtree(no_optimizer / OPTIMIZER_DIR)
    with pytest.raises(CorruptCheckpointError, match=f"lacks {OPTIMIZER_DIR}/"):
        validate_checkpoint(str(no_optimizer))


# ----------------------------------------------------------------------------- the plugin's checks


def _plugin(**kw):
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(**{"fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", **kw})


def _prepare(plugin, mixed_precision="no", **args):
    from accelerate.utils import DistributedType

    accelerator = types.SimpleNamespace(
        state=types.SimpleNamespace(fsdp_plugin=plugin), mixed_precision=mixed_precision, distributed_type=DistributedType.FSDP
    )
    defaults = dict(fsdp=True, fsdp_config={}, torch_compile=False, save_only_model=False, save_on_each_node=False)
    return prepare_fsdp(accelerator, types.SimpleNamespace(**{**defaults, **args}))


def test_the_plugin_is_completed_for_cjepa(monkeypatch):
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType

    # what `--fsdp` alone gives: transformers' defaults (full state dicts, the model's _no_split_modules)
    plugin = _prepare(_plugin(state_dict_type="FULL_STATE_DICT"), mixed_precision="bf16")
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert plugin.transformer_cls_names_to_wrap == ["CJEPALayer"]
    assert plugin.mixed_precision_policy == MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert _prepare(None) is None  # no FSDP asked for (no plugin, no fsdp_plugin_args, no ACCELERATE_USE_FSDP)


@pytest.mark.parametrize(
    "plugin, kw, message",
    [
        (dict(fsdp_version=1), {}, "fsdp_version must be 2 .* got 1"),
        (
            dict(state_dict_type="FULL_STATE_DICT"),
            dict(fsdp_config={"state_dict_type": "FULL_STATE_DICT"}),
            "SHARDED_STATE_DICT .* got FULL",
        ),
        (dict(auto_wrap_policy="SIZE_BASED_WRAP"), {}, "auto_wrap_policy must be TRANSFORMER_BASED_WRAP .* got SIZE_BASED_WRAP"),
        (dict(transformer_cls_names_to_wrap=["CJEPAEmbeddings", "CJEPALayer"]), {}, r"must be \['CJEPALayer'\] .* got \['CJEPAEmb"),
        ({}, dict(mixed_precision="fp16"), "must be bf16 or no, got 'fp16'"),
        (dict(activation_checkpointing=True), {}, "fsdp activation_checkpointing is not supported.*--activation_checkpointing true"),
        ({}, dict(torch_compile=True), "torch_compile is not supported with FSDP"),
        ({}, dict(save_only_model=True), "save_only_model is not supported with FSDP"),
        ({}, dict(save_on_each_node=True), "save_on_each_node is not supported with FSDP"),
    ],
)
def test_unsupported_fsdp_settings_are_refused(plugin, kw, message):
    kw = dict(kw)
    mixed = kw.pop("mixed_precision", "no")
    with pytest.raises(ValueError, match=message):
        _prepare(_plugin(**plugin), mixed_precision=mixed, **kw)


# ----------------------------------------------------------------------------- the documented command


@pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist; `make test` does it)",
)
def test_pretrain_script_with_the_fsdp_accelerate_config(tmp_path):
    from transformers import AutoModel

    out = tmp_path / "run"
    flags = pretrain_args(
        out, 4, "--save_steps", "2", "--per_device_train_batch_size", "16", "--warmup_steps", "1", "--shuffle_buffer", "64"
    )
    config = os.path.join(ROOT, "recipes", "accelerate-fsdp.yaml")
    launch_on_cpu(SCRIPT, *flags, config_file=config, timeout=900)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "jepa_loss" in h] == [1, 2, 3, 4]
    for step in (2, 4):  # sharded checkpoints, valid
        assert (out / f"checkpoint-{step}" / MODEL_DIR).is_dir()
        validate_checkpoint(str(out / f"checkpoint-{step}"))
    # the final save gathered the whole model; the export is its target encoder
    weights = load_file(out / "model.safetensors")
    assert _max_state_diff(weights, read_sharded_model(out / "checkpoint-4")) == 0.0
    encoder = AutoModel.from_pretrained(out / "encoder")
    state = encoder.state_dict()
    assert state.keys() == {k[len("target_encoder.") :] for k in weights if k.startswith("target_encoder.")}
    assert all(torch.equal(v, weights["target_encoder." + k]) for k, v in state.items())
