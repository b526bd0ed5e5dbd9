"""scripts/pretrain.py as the tests run it: the TINY model on the real Fashion-MNIST stream,
the flags of a short run, and the logged steps of a finished one."""

import json
import os

from conftest import TINY
from helpers.launch import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "pretrain.py")
# the TINY model with the paper's objective, whatever the quick start's recipe (the base these flags go over) says
TINY_MODEL = json.dumps({**TINY, "vicreg_weight": 0.001, "encoder_vicreg_weight": 0.0})


def pretrain_args(output_dir, max_steps: int, *extra: str) -> list[str]:
    """Flags of a `max_steps` run of the TINY model (batch 32, a log every step, no online
    evaluation); `extra` flags come last and win."""
    return [
        *("--dataset", "fashion_mnist", "--objective", "cjepa", "--config_overrides", TINY_MODEL),
        *("--output_dir", str(output_dir), "--max_steps", str(max_steps)),
        *("--per_device_train_batch_size", "32", "--logging_steps", "1", "--warmup_steps", "3"),
        *("--dataloader_num_workers", "0", "--shuffle_buffer", "256", "--report_to", "none", "--disable_tqdm", "true"),
        *("--seed", "0", "--eval_strategy", "no", "--eval_on_start", "false", "--eval_dataset", "", "--final_eval_dataset", ""),
        *extra,
    ]


def step_logs(output_dir) -> list[dict]:
    """The training steps' log entries of a finished run (trainer_state.json)."""
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        return [h for h in json.load(f)["log_history"] if "jepa_loss" in h]


def pretrain_module():
    """scripts/pretrain.py imported as a module (its `main(argv)` and `parse_args(argv)`)."""
    import importlib
    import sys

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        return importlib.import_module("pretrain")
    finally:
        sys.path.pop(0)
