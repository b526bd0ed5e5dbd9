"""The tiny in-process training set-up the trainer, fault and online-evaluation tests share:
random 32 px images, a `CJEPATrainer` on the `TINY` config, ordered streams, and the
`train_tiny.py` subprocess for resumes in a fresh process."""

import os
import subprocess
import sys

import torch
from conftest import TINY

from cjepa_hf import CJEPAConfig, CJEPAForPreTraining
from cjepa_hf.masking import MaskCollator
from cjepa_hf.trainer import CJEPATrainer, CJEPATrainingArguments

TRAIN_TINY = os.path.join(os.path.dirname(__file__), "train_tiny.py")


def tiny_data(n: int = 32, seed: int = 0, poison=(), labels: bool = False) -> list[dict]:
    """`n` random (3, 32, 32) images; those at `poison` are all NaN; with `labels`, 3 classes (i % 3)."""
    g = torch.Generator().manual_seed(seed)
    data = [{"pixel_values": torch.randn(3, 32, 32, generator=g)} for _ in range(n)]
    for i in poison:
        data[i]["pixel_values"] = torch.full((3, 32, 32), float("nan"))
    if labels:
        for i, example in enumerate(data):
            example["label"] = i % 3
    return data


def tiny_trainer(out, data, config: CJEPAConfig | None = None, eval_dataset=None, **kw) -> CJEPATrainer:
    """A CJEPATrainer on the TINY model (init seed 0): batch 4, a log every step, no saves
    unless asked; keyword arguments replace the training arguments."""
    config = config if config is not None else CJEPAConfig(**TINY)
    torch.manual_seed(0)
    model = CJEPAForPreTraining(config)
    args = CJEPATrainingArguments(
        **{
            "output_dir": str(out),
            "use_cpu": True,
            "report_to": "none",
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "save_strategy": "no",
            "disable_tqdm": True,
            "warmup_steps": 1,
            "seed": 0,
            **kw,
        }
    )
    return CJEPATrainer(model=model, args=args, train_dataset=data, data_collator=MaskCollator(config, seed=0), eval_dataset=eval_dataset)


class OrderedStream(torch.utils.data.IterableDataset):
    """A stream in a fixed order that cannot seek (the trainer builds a plain sequential
    DataLoader for streams; resuming falls back to Trainer's replay)."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


class SeekableOrderedStream(OrderedStream):
    """A stream in a fixed order that can seek (`resume_at`, as `cjepa_hf.data` streams):
    with W DataLoader workers, worker w reads every W-th item from w."""

    def __init__(self, items):
        super().__init__(items)
        self.skip = None

    def set_epoch(self, epoch):
        self.skip = None

    def resume_at(self, epoch, records):
        self.skip = list(records)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        start = self.skip[worker] if self.skip else 0
        return iter(self.items[worker::workers][start:])


def train_tiny_here(args) -> None:
    """tests/helpers/train_tiny.py with `args`, in this process (no interpreter to start: about
    10 s saved per run), on one torch thread as the fresh process runs."""
    from helpers import train_tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_tiny.main(args)
    finally:
        torch.set_num_threads(threads)


def run_train_tiny(args, timeout: int = 400) -> None:
    """tests/helpers/train_tiny.py in a fresh process (one thread) with `args`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, TRAIN_TINY, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
