"""DDP checks, run by tests/helpers/two_processes.py under `accelerate launch --multi_gpu --num_processes 2` on
the CPU (see tests/test_distributed.py).

1. One forward/backward of CJEPAForPreTraining under DDP with the VICReg terms on the
   all-gathered batch, against one process on the concatenated batch.
2. A few CJEPATrainer steps on 2 processes; the ranks' weights must stay identical.
Rank 0 writes OUT/result.json.
"""

import copy
import json
import os
import sys

import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import TINY  # noqa: E402

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining  # noqa: E402
from cjepa_hf.masking import MaskCollator  # noqa: E402
from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments  # noqa: E402

KEYS = ("loss", "jepa_loss", "vicreg_invariance", "vicreg_variance", "vicreg_covariance", "encoder_variance", "encoder_covariance")


def gradient_check(out_dir: str) -> dict:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    # the encoder regulariser on pooled and per-token features: its statistics come from all ranks
    config = CJEPAConfig(**TINY, encoder_vicreg_weight=0.1, encoder_vicreg_features="both")
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(5)
    pixels = torch.randn(8, 3, 32, 32, generator=g)
    context, target = MaskCollator(config, seed=1).masks_for(0, 8)
    ddp = accelerator.prepare(model)
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    out = ddp(pixels[part], context[part], target[part], gather_distributed=True)
    out.loss.backward()
    result = {}
    for key in KEYS:
        result[key] = accelerator.reduce(getattr(out, key).detach().reshape(1), reduction="mean").item()
    grads = {n: p.grad.clone() for n, p in accelerator.unwrap_model(ddp).named_parameters() if p.grad is not None}
    ref_out = reference(pixels, context, target)
    ref_out.loss.backward()
    ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    result["max_grad_diff"] = max((grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads)
    result["max_grad"] = max(g.abs().max().item() for g in ref_grads.values())
    result["same_grad_keys"] = sorted(grads) == sorted(ref_grads)
    for key in KEYS:
        result["ref_" + key] = getattr(ref_out, key).item()
    return result


def trainer_check(out_dir: str) -> dict:
    config = CJEPAConfig(**TINY)
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    g = torch.Generator().manual_seed(2)
    data = [{"pixel_values": torch.randn(3, 32, 32, generator=g)} for _ in range(64)]
    args = CJEPATrainingArguments(
        output_dir=os.path.join(out_dir, "trainer"),
        max_steps=4,
        per_device_train_batch_size=4,
        logging_steps=2,
        use_cpu=True,
        report_to="none",
        warmup_steps=1,
        seed=0,
        disable_tqdm=True,
        save_strategy="no",
    )
    trainer = CJEPATrainer(model=model, args=args, train_dataset=data, data_collator=MaskCollator(config, seed=0))
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = trainer.accelerator.gather(flat.unsqueeze(0))
    ema_moved = not torch.equal(
        model.target_encoder.layers[0].attention.qkv.weight, CJEPAForPreTraining(config).target_encoder.layers[0].attention.qkv.weight
    )
    return {
        "world_size": trainer.accelerator.num_processes,
        "rank_weight_max_diff": (gathered[0] - gathered[-1]).abs().max().item(),
        "ddp_wrapped": type(trainer.model_wrapped).__name__,
        "find_unused_parameters": getattr(trainer.model_wrapped, "find_unused_parameters", None),
        "logged": [h for h in trainer.state.log_history if "vicreg_loss" in h],
        "ema_moved": ema_moved,
    }


def online_eval_check(out_dir: str) -> dict:
    """The online probe and the k-NN monitor on 2 processes: the probe copies stay equal, and
    the monitor (each rank encodes half of the set, features gathered) equals one process
    scoring the whole set with the offline k-NN."""
    from cjepa_hf.evaluation import extract_features, knn_accuracy
    from cjepa_hf.online_eval import KNNMonitorSet

    config = CJEPAConfig(**TINY)
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    g = torch.Generator().manual_seed(3)
    data = [{"pixel_values": torch.randn(3, 32, 32, generator=g), "label": i % 3} for i in range(64)]
    monitor = KNNMonitorSet("fashion_mnist", image_size=32, patch_size=4, bank_size=31, query_size=20)
    args = CJEPATrainingArguments(
        output_dir=os.path.join(out_dir, "online"),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        warmup_steps=1,
        seed=0,
        disable_tqdm=True,
        save_strategy="no",
        online_probe_num_labels=10,
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=8,
    )
    trainer = CJEPATrainer(model=model, args=args, train_dataset=data, data_collator=MaskCollator(config, seed=0), eval_dataset=monitor)
    trainer.train()
    probe = trainer.online_probe.head.weight.detach().flatten()
    gathered = trainer.accelerator.gather(probe.unsqueeze(0))
    evals = [h for h in trainer.state.log_history if "eval_knn_top1" in h]
    pixels = torch.stack([x for _, xs, _ in monitor.batches(batch_size=64) for x in xs])
    labels = torch.cat([y for _, _, y in monitor.batches(batch_size=64)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, labels), batch_size=64)
    features, _ = extract_features(model.target_encoder, loader)
    return {
        "probe_rank_max_diff": (gathered[0] - gathered[-1]).abs().max().item(),
        "probe_logged": [h["online_linear_top1"] for h in trainer.state.log_history if "online_linear_top1" in h],
        "eval_knn_top1": evals[-1]["eval_knn_top1"],
        "eval_linear_top1": evals[-1]["eval_linear_top1"],
        "ref_knn_top1": knn_accuracy(features[:31], labels[:31], features[31:], labels[31:], k=20, temperature=0.07),
        "ref_linear_top1": trainer.online_probe.accuracy(features[31:], labels[31:]),
    }


def main(out_dir: str) -> None:
    result = {"gradients": gradient_check(out_dir)}
    result["trainer"] = trainer_check(out_dir)
    result["online_eval"] = online_eval_check(out_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(result, f, indent=2)
