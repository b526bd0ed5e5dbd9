"""Train a tiny C-JEPA model with CJEPATrainer; used by the tests, in a fresh process or in theirs (`main(argv)`).

usage: train_tiny.py OUTPUT_DIR MAX_STEPS [--save-steps K] [--resume CKPT] [--workers N] [--grad-accum G] [--labels]
Writes OUTPUT_DIR/run.json: per-step losses, the masks' fingerprints, and target-encoder checksums
(with --labels, 3-class labels train the online probe; its weights are written too).
"""

import argparse
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import TINY  # noqa: E402

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining  # noqa: E402
from cjepa_hf.masking import MaskCollator  # noqa: E402
from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments  # noqa: E402


class Recording(CJEPATrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        digest = hashlib.sha1()
        digest.update(inputs["context_indices"].numpy().tobytes())
        digest.update(inputs["target_indices"].numpy().tobytes())
        self.mask_digests.append(digest.hexdigest())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--save-steps", type=int, default=1000)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--labels", action="store_true")
    a = parser.parse_args(None if argv is None else [str(x) for x in argv])

    torch.manual_seed(0)
    config = CJEPAConfig(**TINY)
    g = torch.Generator().manual_seed(1)
    data = [{"pixel_values": torch.randn(3, 32, 32, generator=g)} for _ in range(96)]
    if a.labels:
        for i, example in enumerate(data):
            example["label"] = i % 3
    model = CJEPAForPreTraining(config)
    args = CJEPATrainingArguments(
        output_dir=a.output_dir,
        max_steps=a.max_steps,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_steps=a.save_steps,
        use_cpu=True,
        report_to="none",
        warmup_steps=2,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=a.workers,
        gradient_accumulation_steps=a.grad_accum,
        save_only_model=False,
        online_probe_num_labels=3 if a.labels else None,
    )
    trainer = Recording(model=model, args=args, train_dataset=data, data_collator=MaskCollator(config, seed=3))
    trainer.mask_digests = []
    trainer.train(resume_from_checkpoint=a.resume)
    logs = [h for h in trainer.state.log_history if "jepa_loss" in h]
    target = torch.cat([p.detach().flatten() for p in model.target_encoder.parameters()])
    with open(os.path.join(a.output_dir, "run.json"), "w") as f:
        json.dump(
            {
                "logs": logs,
                "masks": trainer.mask_digests,
                "target": target.double().tolist()[:4096],
                "target_sum": float(target.double().sum()),
                "probe": [] if trainer.online_probe is None else trainer.online_probe.head.weight.flatten().tolist(),
            },
            f,
        )


if __name__ == "__main__":
    main()
