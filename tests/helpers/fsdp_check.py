"""FSDP2 checks, run by tests/helpers/two_processes.py under a 2-process launch on the CPU (gloo), see
tests/test_fsdp.py: C-JEPA training with FSDP2 against DDP.

One launch, five runs of CJEPATrainer on the same tiny model and data (logging every step):
  ddp      DDP, 4 steps, the k-NN monitor at step 4         the reference
  fsdp     FSDP2, the same, sharded checkpoints at 2 and 4, then save_model (the full weights)
  resumed  FSDP2 resumed from fsdp/checkpoint-2, to step 4
  ckpt     FSDP2 with --activation_checkpointing, 4 steps
  bf16     FSDP2 with bf16 mixed precision, 2 steps
Each process writes OUT/result_{rank}.json (per-step logs, facts about the sharding); rank 0
also writes OUT/{run}_state.pt (the full model, gathered) and OUT/fsdp_target.pt (the target
encoder gathered by `gather_target_encoder` at the end of the fsdp run, with a probe input and
its pooled output).
"""

import json
import os
import sys

import torch
from accelerate.state import AcceleratorState

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import TINY  # noqa: E402

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining  # noqa: E402
from cjepa_hf.masking import MaskCollator  # noqa: E402
from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments  # noqa: E402
from cjepa_hf.training.fsdp import gather_target_encoder, is_fsdp_model  # noqa: E402

# the VICReg terms and the encoder regulariser both gather across processes; the projector has BatchNorm
CONFIG = dict(TINY, encoder_vicreg_weight=0.1, encoder_vicreg_features="both")


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, whole (DTensors all-gathered: every process calls this)."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone() for k, v in model.state_dict().items()}


def run(
    out: str, name: str, fsdp: bool, steps: int, save_steps: int | None = None, resume: str | None = None, monitor: bool = False, **extra
) -> dict:
    # A fresh Accelerate state per run: the runs differ in distributed type and mixed precision.
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.manual_seed(0)
    config = CJEPAConfig(**CONFIG)
    model = CJEPAForPreTraining(config)
    g = torch.Generator().manual_seed(1)
    data = [{"pixel_values": torch.randn(3, 32, 32, generator=g), "label": i % 3} for i in range(64)]
    eval_set = None
    if monitor:
        # the k-NN monitor at the last step: 51 images over 2 processes in batches of 5 (6 batches on
        # one rank, 5 on the other), encoded by the gathered target encoder under FSDP
        from cjepa_hf.online_eval import KNNMonitorSet

        eval_set = KNNMonitorSet("fashion_mnist", image_size=32, patch_size=4, bank_size=31, query_size=20)
        extra = dict(extra, eval_strategy="steps", eval_steps=steps, per_device_eval_batch_size=5)
    args = CJEPATrainingArguments(
        output_dir=os.path.join(out, name),
        max_steps=steps,
        per_device_train_batch_size=4,
        logging_steps=1,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        use_cpu=True,
        report_to="none",
        warmup_steps=1,
        seed=0,
        disable_tqdm=True,
        save_only_model=False,
        online_probe_num_labels=3,
        fsdp=True if fsdp else None,
        **extra,
    )
    trainer = CJEPATrainer(model=model, args=args, train_dataset=data, data_collator=MaskCollator(config, seed=3), eval_dataset=eval_set)
    seen = {}
    if extra.get("bf16"):
        # the dtype the blocks compute in (FSDP2 gathers the parameters in bf16 for the forward)
        def record(module, inputs, output):
            seen.setdefault("compute_dtype", str(module.attention.qkv.weight.dtype))

        model.context_encoder.layers[0].register_forward_hook(record)
    trainer.train(resume_from_checkpoint=resume)
    wrapped = trainer.model
    result = {
        "logs": [h for h in trainer.state.log_history if "jepa_loss" in h],
        "evals": [h for h in trainer.state.log_history if "eval_knn_top1" in h],
        "fsdp_enabled": trainer.is_fsdp_enabled,
        "sharded": is_fsdp_model(wrapped),
        "wrapper": type(trainer.model_wrapped).__name__,
        **seen,
    }
    if fsdp:
        from torch.distributed.fsdp import FSDPModule

        result["fsdp_units"] = sorted(n for n, m in wrapped.named_modules() if isinstance(m, FSDPModule))
        layer = wrapped.target_encoder.layers[0].attention.qkv.weight
        result["local_rows"] = layer.to_local().shape[0]
        result["full_rows"] = layer.shape[0]
        result["master_dtype"] = str(layer.dtype)
        policy = trainer.accelerator.state.fsdp_plugin.mixed_precision_policy
        result["policy"] = None if policy is None else [str(policy.param_dtype), str(policy.reduce_dtype)]
    state = full_state(wrapped)
    if name == "fsdp":
        encoder = gather_target_encoder(wrapped)
        trainer.save_model(os.path.join(out, "fsdp", "final"))  # the full weights, gathered (scripts/pretrain.py's save)
        if trainer.is_world_process_zero():
            x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
            with torch.no_grad():
                pooled = encoder(x).pooler_output
            torch.save({"state": encoder.state_dict(), "x": x, "pooled": pooled}, os.path.join(out, "fsdp_target.pt"))
    if trainer.is_world_process_zero():
        torch.save(state, os.path.join(out, f"{name}_state.pt"))
    trainer.accelerator.wait_for_everyone()
    return result


def main(out: str) -> None:
    results = {"ddp": run(out, "ddp", fsdp=False, steps=4, monitor=True)}
    results["fsdp"] = run(out, "fsdp", fsdp=True, steps=4, save_steps=2, monitor=True)
    results["resumed"] = run(
        out, "resumed", fsdp=True, steps=4, save_steps=2, resume=os.path.join(out, "fsdp", "checkpoint-2"), monitor=True
    )
    results["ckpt"] = run(out, "ckpt", fsdp=True, steps=4, activation_checkpointing=True)
    results["bf16"] = run(out, "bf16", fsdp=True, steps=2, bf16=True)
    rank = torch.distributed.get_rank()
    with open(os.path.join(out, f"result_{rank}.json"), "w") as f:
        json.dump(results, f, indent=2)
