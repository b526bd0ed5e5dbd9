"""Fast paths give the plain path's numbers; compile does not recompile per batch; the
FLOP formula matches torch's FLOP counter; the benchmark CLI writes what it promises."""

import importlib.util
import json
import math
import os

import pytest
import torch
from conftest import TINY, random_masks

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining
from cjepa_hf.performance import (
    PLAIN_OPTIONS,
    SPLIT_KEYS,
    PretrainingStep,
    StepOptions,
    autocast_context,
    build_adamw,
    copy_model,
    ema_update_loop,
    mark_dynamic_masks,
    peak_flops_for_name,
    pretraining_step_flops,
    synthetic_masks,
    trim_context,
)

CUDA = torch.cuda.is_available()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return CJEPAForPreTraining(CJEPAConfig(**{**TINY, **overrides})).train()


def _batch(config, batch=4, kept=20, blocks=4, per_block=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=g)
    context, targets = random_masks(batch, config.num_patches, kept, blocks, per_block, seed=seed)
    return pixels, context, targets


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_param_diff(a, b, skip=()):
    return max(
        (pa - pb).abs().max().item()
        for (name, pa), pb in zip(a.named_parameters(), b.parameters())
        if name not in skip
    )


def _biases_before_batchnorm(model):
    """The exact gradient of a bias that feeds a BatchNorm is 0: what backward returns is
    rounding noise, which Adam scales up to +-lr steps. Two correct implementations that
    round differently disagree there by O(lr), so parameter comparisons skip them."""
    if model.projector is None:
        return set()
    return {f"projector.linears.{i}.bias" for i in range(len(model.projector.norms))}


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize("source", ["predictor", "context"])
def test_sdpa_matches_eager_loss_and_grads(source):
    eager = _model(vicreg_source=source)
    sdpa = copy_model(eager)
    eager.set_attn_implementation("eager")
    sdpa.set_attn_implementation("sdpa")
    pixels, context, targets = _batch(eager.config)
    loss_e = eager(pixels, context, targets).loss
    loss_s = sdpa(pixels, context, targets).loss
    loss_e.backward()
    loss_s.backward()
    assert abs(loss_e.item() - loss_s.item()) < 1e-5
    grads_e, grads_s = _grads(eager), _grads(sdpa)
    assert grads_e.keys() == grads_s.keys() and len(grads_e) > 0
    for name in grads_e:
        assert (grads_e[name] - grads_s[name]).abs().max().item() < 1e-5, name


# ----------------------------------------------------------------------------- EMA and optimizer


def test_fused_ema_matches_loop():
    model = _model()
    with torch.no_grad():  # make target and context differ
        for p in model.context_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    loop = copy_model(model)
    for momentum in (0.996, 0.5, 1.0):
        model.update_target_encoder(momentum)
        ema_update_loop(loop, momentum)
    assert _max_param_diff(model.target_encoder, loop.target_encoder) < 1e-6
    with pytest.raises(ValueError, match="momentum must lie in"):
        ema_update_loop(loop, 1.5)


def test_adamw_implementations_agree():
    """Same gradients in, same weights out (gradients given, so that only the optimizer is compared)."""
    base = _model()
    g = torch.Generator().manual_seed(0)
    grads = [[torch.randn(p.shape, generator=g) for p in base.parameters() if p.requires_grad] for _ in range(3)]
    models, used = {}, {}
    for impl in ("loop", "foreach", "fused"):
        model = copy_model(base)
        params = [p for p in model.parameters() if p.requires_grad]
        opt, used[impl] = build_adamw(params, impl, lr=1e-2, weight_decay=0.1)
        for step_grads in grads:
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            opt.step()
            opt.zero_grad(set_to_none=True)
        models[impl] = model
    assert used["loop"] == "loop" and used["foreach"] == "foreach"
    assert used["fused"] in ("fused", "foreach")
    assert _max_param_diff(models["loop"], models["foreach"]) < 1e-6
    assert _max_param_diff(models["loop"], models["fused"]) < 1e-6
    assert _max_param_diff(models["loop"], base) > 1e-3  # the steps did move the weights
    with pytest.raises(ValueError, match="implementation must be one of"):
        build_adamw(base.parameters(), "apex")


# ----------------------------------------------------------------------------- the full step


def test_fast_step_matches_plain_step():
    plain = PretrainingStep(_model(), PLAIN_OPTIONS, lr=1e-3)
    fast = PretrainingStep(copy_model(plain.model), StepOptions(), lr=1e-3)  # sdpa, fused AdamW, foreach EMA
    assert plain.model.config._attn_implementation == "eager"
    assert fast.model.config._attn_implementation == "sdpa"
    masks, _ = synthetic_masks(plain.model.config, 4, 4, seed=1)
    pixels = _batch(plain.model.config)[0]
    for context, targets in masks:
        loss_p = plain.step(pixels, context, targets)
        loss_f = fast.step(pixels, context, targets)
        assert abs(loss_p.item() - loss_f.item()) < 1e-5
    assert _max_param_diff(plain.model, fast.model, skip=_biases_before_batchnorm(plain.model)) < 1e-5
    assert _max_param_diff(plain.model.target_encoder, fast.model.target_encoder) < 1e-5


def test_gradient_checkpointing_same_loss_and_grads():
    ref = _model(drop_path_rate=0.0)
    ckpt = copy_model(ref)
    PretrainingStep(ckpt, StepOptions(gradient_checkpointing=True))
    PretrainingStep(ref, StepOptions())
    assert any(getattr(m, "gradient_checkpointing", False) for m in ckpt.predictor.modules())
    assert any(getattr(m, "gradient_checkpointing", False) for m in ckpt.context_encoder.modules())
    pixels, context, targets = _batch(ref.config)
    loss_r, loss_c = ref(pixels, context, targets).loss, ckpt(pixels, context, targets).loss
    loss_r.backward()
    loss_c.backward()
    assert abs(loss_r.item() - loss_c.item()) < 1e-6
    grads_r, grads_c = _grads(ref), _grads(ckpt)
    assert grads_r.keys() == grads_c.keys()
    for name in grads_r:
        assert (grads_r[name] - grads_c[name]).abs().max().item() < 1e-6, name


def test_instrumented_step_gives_the_same_step_and_a_consistent_split():
    a = PretrainingStep(_model(), StepOptions())
    b = PretrainingStep(copy_model(a.model), StepOptions())
    pixels, context, targets = _batch(a.model.config)
    loss_a = a.step(pixels, context, targets)
    loss_b, split = b.instrumented_step(pixels, context, targets)
    assert loss_a.item() == loss_b.item()
    assert _max_param_diff(a.model, b.model) == 0.0
    # the stage wrappers are gone again
    assert type(b.model.context_encoder).__name__ == "CJEPAModel"
    assert set(split) == {*SPLIT_KEYS, "total"}
    assert all(split[k] >= 0 for k in SPLIT_KEYS if k != "other")
    assert math.isclose(sum(split[k] for k in SPLIT_KEYS), split["total"], rel_tol=1e-9)
    assert split["context_forward_backward"] > 0 and split["predictor_forward_backward"] > 0


# ----------------------------------------------------------------------------- bf16 autocast


def test_bf16_is_refused_on_cpu():
    with pytest.raises(ValueError, match="refused on device 'cpu'"):
        autocast_context("cpu", "bf16")
    with pytest.raises(ValueError, match="refused"):
        PretrainingStep(_model(), StepOptions(dtype="bf16"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        StepOptions(dtype="fp16")


@pytest.mark.skipif(not CUDA, reason="bf16 autocast is a CUDA path; no GPU in this run")
def test_bf16_autocast_keeps_fp32_master_weights():
    model = _model().cuda()
    plain = PretrainingStep(copy_model(model), StepOptions())
    step = PretrainingStep(model, StepOptions(dtype="bf16"))
    pixels, context, targets = (t.cuda() for t in _batch(model.config))
    loss = step.step(pixels, context, targets)
    loss_ref = plain.step(pixels, context, targets)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for s in step.optimizer.state.values() for v in s.values() if v.dim() > 0)
    assert torch.isfinite(loss) and abs(loss.item() - loss_ref.item()) < 5e-2 * abs(loss_ref.item())


@pytest.mark.skipif(not CUDA, reason="host-device sync detection needs CUDA (torch.cuda.set_sync_debug_mode)")
def test_step_does_not_synchronize():
    step = PretrainingStep(_model().cuda(), StepOptions(dtype="bf16"))
    pixels, context, targets = (t.cuda() for t in _batch(step.model.config))
    step.step(pixels, context, targets)  # warm-up: lazy init may sync once
    torch.cuda.set_sync_debug_mode("error")
    try:
        step.step(pixels, context, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- torch.compile


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compile_does_not_recompile_when_mask_sizes_change(fresh_dynamo):
    """20 steps whose context length and block size change; backend aot_eager (dynamo +
    AOTAutograd, the part that decides recompiles) to stay fast on 2 CPU cores."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    eager = PretrainingStep(_model(), StepOptions())
    compiled = PretrainingStep(copy_model(eager.model), StepOptions(compile=True, compile_backend=counter))
    masks, _ = synthetic_masks(eager.model.config, 4, 20, seed=3)
    shapes = {(c.shape[1], t.shape[2]) for c, t in masks}
    assert len(shapes) >= 5, shapes  # the test means something only if the sizes change
    pixels = _batch(eager.model.config)[0]
    for context, targets in masks:
        loss_c = compiled.step(pixels, context, targets)
        loss_e = eager.step(pixels, context, targets)
        assert abs(loss_c.item() - loss_e.item()) < 1e-4
    print(f"{counter.frame_count} compile(s) for {len(shapes)} mask shapes")
    assert 1 <= counter.frame_count <= 3, f"{counter.frame_count} compiles for {len(shapes)} mask shapes"
    assert _max_param_diff(compiled.model, eager.model, skip=_biases_before_batchnorm(eager.model)) < 1e-4
    # compile is in place: parameter names (and so checkpoints) do not change
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())


def test_mark_dynamic_masks_checks_shapes():
    with pytest.raises(ValueError, match="context_indices must be"):
        mark_dynamic_masks(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))


def test_trim_context_keeps_a_random_subset():
    config = CJEPAConfig.from_preset("vit-t16")
    [(context, _)], _ = synthetic_masks(config, 64, 1, seed=0)
    kept = context.shape[1]
    context = context[:, : (kept // 8) * 8 + 5]  # a length that is not a multiple of 8
    g = torch.Generator().manual_seed(0)
    trimmed = trim_context(context, 8, g)
    assert trimmed.shape == (64, (context.shape[1] // 8) * 8)
    assert torch.equal(trimmed, trimmed.sort(dim=1).values)
    for row, full in zip(trimmed, context):
        assert set(row.tolist()) <= set(full.tolist())
    # random columns, not the last ones: the last patch of a row survives in most rows
    survives = (trimmed[:, -1] == context[:, -1]).float().mean().item()
    assert 0.5 < survives < 1.0
    assert trim_context(trimmed, 8) is trimmed  # already a multiple
    short = context[:, :5]
    assert trim_context(short, 8) is short  # shorter than one bucket
    with pytest.raises(ValueError, match="multiple must be a positive integer"):
        trim_context(context, 0)


# ----------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("source", ["predictor", "context"])
def test_flop_formula_matches_torch_flop_counter(source):
    """Eager attention, so that the counter sees every matmul (it does not count the CPU
    flash-attention kernel)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _model(vicreg_source=source)
    model.set_attn_implementation("eager")
    pixels, context, targets = _batch(model.config, batch=4, kept=20, blocks=4, per_block=9)
    with FlopCounterMode(display=False) as counter:
        model(pixels, context, targets).loss.backward()
    formula = pretraining_step_flops(model.config, 4, 20, 4, 9)
    assert formula["total"] == counter.get_total_flops()
    assert formula["total"] == sum(v for k, v in formula.items() if k != "total")


def test_peak_flops_table():
    assert peak_flops_for_name("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_flops_for_name("NVIDIA H100 PCIe") == 756.0e12
    assert peak_flops_for_name("NVIDIA H200") == 989.4e12
    assert peak_flops_for_name("NVIDIA A100-SXM4-80GB") == 312.0e12
    assert peak_flops_for_name("Tesla T4") is None


# ----------------------------------------------------------------------------- the CLI


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(ROOT, "scripts", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_script_smoke(tmp_path, capsys):
    benchmark = _load_benchmark()
    output = tmp_path / "bench.json"
    benchmark.main(["--preset", "tiny", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--device", "cpu",
                    "--output", str(output)])
    out = json.loads(output.read_text())
    for key in ("images_per_s", "baseline_images_per_s", "speedup", "peak_memory_bytes", "device", "split_s",
                "baseline_split_s", "tflops", "mfu", "flop_formula", "config", "options", "baseline_options",
                "torch_version", "flops_per_step_mean", "masks", "results"):
        assert key in out, key
    for key in ("images_per_s", "baseline_images_per_s", "speedup", "tflops", "flops_per_step_mean"):
        assert out[key] > 0, key
    assert out["peak_memory_bytes"] is None or out["peak_memory_bytes"] > 0
    assert out["mfu"] is None  # no known peak on the CPU
    assert out["options"]["attn_implementation"] == "sdpa"
    assert out["baseline_options"] == PLAIN_OPTIONS.to_dict()
    assert out["results"]["baseline"]["options"]["adamw_used"] == "loop"
    assert all(out["split_s"][k] >= 0 for k in SPLIT_KEYS if k != "other")
    assert len(out["masks"]["context_lengths"]) == 2
    assert "speedup over the plain path" in capsys.readouterr().out


def test_benchmark_script_refuses_bf16_on_cpu():
    benchmark = _load_benchmark()
    with pytest.raises(SystemExit, match="refused on device 'cpu'"):
        benchmark.main(["--preset", "tiny", "--dtype", "bf16", "--device", "cpu"])
