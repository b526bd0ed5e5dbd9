"""The golden run: a tiny deterministic pretraining run whose figures pin the code's behaviour.

    python tests/golden/golden_run.py --write   # records tests/golden/golden.json (only when behaviour is MEANT to change)

20 optimizer steps of `CJEPATrainer` on a 2-layer, width-32 model at 32 px (an 8x8 patch
grid), for the C-JEPA objective (the paper's predictor VICReg, beta 0.05, plus the encoder
regulariser) and for I-JEPA, in float64 so that the figures do not depend on the CPU's
float32 kernels. Recorded: every logged loss term and schedule value, the target encoder's
pooled output on fixed images, and parameter checksums. tests/test_golden.py must reproduce
them to 1e-6; a refactor that changes one of them changed behaviour.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden.json")
MODEL = dict(
    image_size=32,
    patch_size=4,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    predictor_hidden_size=32,
    predictor_num_hidden_layers=2,
    projector_dims=(64, 64),
    min_keep=4,
)
OBJECTIVES = {
    "cjepa": dict(vicreg_weight=0.05, encoder_vicreg_weight=0.05),
    "ijepa": dict(vicreg_weight=0.0),
}
LOGGED = (
    "loss",
    "jepa_loss",
    "vicreg_loss",
    "vicreg_invariance",
    "vicreg_variance",
    "vicreg_covariance",
    "encoder_vicreg_loss",
    "learning_rate",
    "weight_decay",
    "ema_momentum",
)


def run(objective: str) -> dict:
    from cjepa_hf import CJEPAConfig, CJEPAForPreTraining
    from cjepa_hf.masking import MaskCollator
    from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments

    config = CJEPAConfig(**MODEL, **OBJECTIVES[objective])
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config).double()
    g = torch.Generator().manual_seed(1)
    data = [{"pixel_values": torch.randn(3, 32, 32, generator=g, dtype=torch.float64), "label": i % 4} for i in range(64)]
    with tempfile.TemporaryDirectory() as out:
        args = CJEPATrainingArguments(
            output_dir=out,
            max_steps=20,
            per_device_train_batch_size=8,
            logging_steps=1,
            warmup_steps=5,
            use_cpu=True,
            report_to="none",
            seed=0,
            disable_tqdm=True,
            save_strategy="no",
            online_probe=False,
        )
        trainer = CJEPATrainer(model=model, args=args, train_dataset=data, data_collator=MaskCollator(config, seed=2))
        trainer.train()
    logs = [{k: h[k] for k in LOGGED if k in h} for h in trainer.state.log_history if "jepa_loss" in h]
    images = torch.stack([d["pixel_values"] for d in data[:4]])
    with torch.no_grad():
        pooled = model.target_encoder(images).pooler_output
    checksums = {
        part: float(sum(p.detach().double().sum() for p in getattr(model, part).parameters()))
        for part in ("context_encoder", "target_encoder", "predictor")
    }
    return {"logs": logs, "target_pooled": pooled[:, :8].tolist(), "target_pooled_sum": float(pooled.sum()), "checksums": checksums}


def main() -> None:
    if "--write" not in sys.argv:
        raise SystemExit(__doc__)
    golden = {name: run(name) for name in OBJECTIVES}
    with open(GOLDEN, "w") as f:
        json.dump(golden, f, indent=1)
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
