#!/usr/bin/env python
"""The attacks of issue 23 on the training and evaluation commands, end to end, with tiny CPU runs.

    PYTHONPATH=src python docs/attacks.py              # every attack (about 5 minutes on 2 cores)
    PYTHONPATH=src python docs/attacks.py resume lock  # those whose name contains a word

Each attack runs `scripts/pretrain.py` (or `scripts/linear_probe.py`) as a command in a fresh
process, as a user would, and prints one line: PASS or FAIL, the attack, the exit status and
the line that explains it. A run must exit 0 only when it did the work it was asked for, and
never touch another run's files. Exit status: the number of FAILs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = os.path.join(ROOT, "scripts", "pretrain.py")
PROBE = os.path.join(ROOT, "scripts", "linear_probe.py")
TINY = {
    "image_size": 32,
    "patch_size": 4,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "predictor_hidden_size": 32,
    "predictor_num_hidden_layers": 2,
    "projector_dims": [64, 64],
    "min_keep": 4,
    "vicreg_weight": 0.001,
    "encoder_vicreg_weight": 0.0,
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.join(ROOT, "src")}


def flags(out: str, steps: int, *extra: str, model: dict | None = None) -> list[str]:
    """A tiny run on Fashion-MNIST (batch 8, a log every step, no evaluation); `extra` wins."""
    return [
        *("--dataset", "fashion_mnist", "--config_overrides", json.dumps({**TINY, **(model or {})})),
        *("--output_dir", out, "--max_steps", str(steps), "--per_device_train_batch_size", "8", "--logging_steps", "1"),
        *("--warmup_steps", "1", "--dataloader_num_workers", "0", "--shuffle_buffer", "0", "--report_to", "none"),
        *("--disable_tqdm", "true", "--seed", "0", "--eval_strategy", "no", "--eval_on_start", "false"),
        *("--eval_dataset", "", "--final_eval_dataset", "", "--save_steps", str(steps)),
        *extra,
    ]


def run(args: list[str], script: str = PRETRAIN, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def why(proc: subprocess.CompletedProcess) -> str:
    """The line that explains an outcome: the error's last line, else the last warning / the done line."""
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    for marker in ("Error:", "error", "WARNING", "done in"):
        found = [ln for ln in lines if marker in ln]
        if found:
            return found[-1].strip()[:220]
    return lines[-1][:220] if lines else ""


def steps_of(out: str) -> int | None:
    path = os.path.join(out, "pretrain_summary.json")
    return json.load(open(path))["global_step"] if os.path.exists(path) else None


def saved_dataset(folder: str, n: int, image=None) -> str:
    """A save_to_disk folder of `n` random 36 px images (a source whose size is known)."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(n)
    if image is None:
        images = [Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)) for _ in range(n)]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    else:
        images, features = [image] * n, None
    datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features).save_to_disk(folder)
    return folder


# ----------------------------------------------------------------------------- the attacks
def epoch_boundary(tmp):
    data = saved_dataset(os.path.join(tmp, "d48"), 48)
    out, res = os.path.join(tmp, "full"), os.path.join(tmp, "res")
    run([*flags(out, 12, "--save_steps", "6"), "--dataset", data])
    shutil.copytree(os.path.join(out, "checkpoint-6"), os.path.join(res, "checkpoint-6"))
    p = run([*flags(res, 12, "--save_steps", "6", "--resume_from_checkpoint", "latest"), "--dataset", data])
    return p, p.returncode == 0 and steps_of(res) == 12, f"steps {steps_of(res)} of 12"


def past_the_end(tmp):
    big, small = saved_dataset(os.path.join(tmp, "d48"), 48), saved_dataset(os.path.join(tmp, "d24"), 24)
    out = os.path.join(tmp, "run")
    run([*flags(out, 4), "--dataset", big])
    p = run([*flags(out, 8, "--resume_from_checkpoint", "latest"), "--dataset", small])
    return p, p.returncode != 0 and "not the data that run was trained on" in p.stderr, ""


def undecodable_folder(tmp):
    folder = os.path.join(tmp, "imgs", "a")
    os.makedirs(folder)
    for i in range(5):
        open(os.path.join(folder, f"{i}.jpg"), "wb").write(b"not an image" * 9)
    out = os.path.join(tmp, "run")
    p = run([*flags(out, 3), "--dataset", os.path.dirname(folder)])
    return p, p.returncode != 0 and not os.path.exists(os.path.join(out, "encoder")), ""


def integer_image_column(tmp):
    import datasets

    path = os.path.join(tmp, "ints.parquet")
    datasets.Dataset.from_dict({"image": list(range(40))}).to_parquet(path)
    out = os.path.join(tmp, "run")
    p = run([*flags(out, 3), "--dataset", path])
    return p, p.returncode != 0 and not os.path.exists(os.path.join(out, "encoder")), ""


def _changed_model(tmp, change):
    out = os.path.join(tmp, "run")
    run(flags(out, 2))
    p = run(flags(out, 4, "--resume_from_checkpoint", "latest", model=change))
    field = next(iter(change))
    return p, p.returncode != 0 and field in p.stderr and "model config differs" in p.stderr, ""


def resume_more_heads(tmp):
    return _changed_model(tmp, {"num_attention_heads": 8})


def resume_wider(tmp):
    return _changed_model(tmp, {"hidden_size": 64, "predictor_hidden_size": 64})


def resume_vicreg_weight(tmp):
    return _changed_model(tmp, {"vicreg_weight": 0.5})


def resume_new_lr_seed_save_steps(tmp):
    out = os.path.join(tmp, "run")
    run(flags(out, 2))
    p = run(flags(out, 4, "--resume_from_checkpoint", "latest", "--learning_rate", "0.002", "--seed", "3", "--save_steps", "1"))
    said = all(s in p.stderr for s in ("learning_rate 0.001 -> 0.002", "seed 0 -> 3", "save_steps 2 -> 1"))
    return p, p.returncode == 0 and said and os.path.isdir(os.path.join(out, "checkpoint-3")), "named and honoured"


def two_runs_one_folder(tmp):
    out = os.path.join(tmp, "run")
    first = subprocess.Popen(
        [sys.executable, PRETRAIN, *flags(out, 100000)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV
    )
    try:
        for line in first.stdout:
            if line.startswith("{'loss'"):
                break
        p = run(flags(out, 3))
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    ok = p.returncode != 0 and f"pid {first.pid}" in p.stderr and not os.path.exists(os.path.join(out, "encoder"))
    return p, ok, ""


def fresh_run_over_old_checkpoints(tmp):
    out = os.path.join(tmp, "run")
    run(flags(out, 2))
    before = open(os.path.join(out, "checkpoint-2", "model.safetensors"), "rb").read()
    p = run(flags(out, 3, "--save_steps", "1"))
    kept = open(os.path.join(out, "checkpoint-2", "model.safetensors"), "rb").read() == before
    again = run(flags(out, 3, "--overwrite_output_dir", "true"))
    return p, p.returncode != 0 and kept and again.returncode == 0 and steps_of(out) == 3, "then --overwrite_output_dir true: exit 0"


def _signal(tmp, signum, code):
    out = os.path.join(tmp, "run")
    proc = subprocess.Popen(
        [sys.executable, PRETRAIN, *flags(out, 100000)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    for line in proc.stdout:
        if line.startswith("{'loss'"):
            proc.send_signal(signum)
            break
    stdout, stderr = proc.communicate(timeout=300)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    saved = [n for n in os.listdir(out) if n.startswith("checkpoint-")]
    return p, p.returncode == code and len(saved) == 1 and not os.path.exists(os.path.join(out, "encoder")), f"saved {saved}"


def sigterm(tmp):
    return _signal(tmp, signal.SIGTERM, 143)


def sigint(tmp):
    return _signal(tmp, signal.SIGINT, 130)


def _refused_before_training(tmp, *extra, needle):
    out = os.path.join(tmp, "run")
    start = time.time()
    p = run(flags(out, 50, *extra))
    quick = not (os.path.isdir(out) and any(n.startswith("checkpoint") for n in os.listdir(out)))
    return p, p.returncode != 0 and quick and needle in p.stderr, f"{time.time() - start:.0f} s"


def final_eval_typo(tmp):
    return _refused_before_training(tmp, "--final_eval_dataset", "fashion_mnsit", needle="'fashion_mnsit' cannot be loaded")


def uncreatable_output_dir(tmp):
    open(os.path.join(tmp, "file"), "w").close()
    p = run(flags(os.path.join(tmp, "file", "run"), 2))
    return p, p.returncode != 0 and "cannot create output_dir" in p.stderr, ""


def accumulation_zero(tmp):
    return _refused_before_training(tmp, "--gradient_accumulation_steps", "0", needle="gradient_accumulation_steps must be >= 1")


def max_steps_zero(tmp):
    return _refused_before_training(tmp, "--max_steps", "0", needle="max_steps must be > 0")


def negative_weight_decay(tmp):
    return _refused_before_training(tmp, "--weight_decay", "-1", needle="weight_decay must be a finite number >= 0")


def final_lr_above_peak(tmp):
    return _refused_before_training(tmp, "--final_lr", "0.1", needle="must not exceed the peak learning_rate")


def label_column_typo(tmp):
    return _refused_before_training(tmp, "--label_column", "nope", needle="--label_column 'nope' does not exist")


def missing_relative_parquet(tmp):
    return _refused_before_training(tmp, "--dataset", "data/train.parquet", needle="'data/train.parquet' does not exist")


def empty_folder(tmp):
    os.makedirs(os.path.join(tmp, "empty"))
    return _refused_before_training(tmp, "--dataset", os.path.join(tmp, "empty"), needle="is an empty folder")


def monitor_turned_off(tmp):
    p = run(flags(os.path.join(tmp, "run"), 1, "--eval_dataset", "fashion_mnist", "--eval_bank_size", "20", "--eval_query_size", "10"))
    return p, p.returncode == 0 and "k-NN monitor off" in p.stderr, ""


def linear_probe_bad_image(tmp):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in "ab":
            os.makedirs(os.path.join(tmp, split, c))
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(tmp, split, c, f"{i}.png"))
    open(os.path.join(tmp, "train", "a", "bad.png"), "wb").write(b"garbage" * 20)
    args = ["--raw_pixels", "--image_size", "32", "--train_dir", os.path.join(tmp, "train"), "--validation_dir", os.path.join(tmp, "val")]
    p = run(args, script=PROBE)
    return p, p.returncode == 0 and "skipped 1 bad image(s) of 13" in p.stderr, ""


ATTACKS = [
    epoch_boundary,
    past_the_end,
    undecodable_folder,
    integer_image_column,
    resume_more_heads,
    resume_wider,
    resume_vicreg_weight,
    resume_new_lr_seed_save_steps,
    two_runs_one_folder,
    fresh_run_over_old_checkpoints,
    sigterm,
    sigint,
    final_eval_typo,
    uncreatable_output_dir,
    accumulation_zero,
    max_steps_zero,
    negative_weight_decay,
    final_lr_above_peak,
    label_column_typo,
    missing_relative_parquet,
    empty_folder,
    monitor_turned_off,
    linear_probe_bad_image,
]


def main(words: list[str]) -> int:
    failures = 0
    for attack in ATTACKS:
        if words and not any(w in attack.__name__ for w in words):
            continue
        with tempfile.TemporaryDirectory(prefix="cjepa-attack-") as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)  # relative paths are the attacker's
            start = time.time()
            try:
                proc, ok, note = attack(tmp)
                line = f"exit {proc.returncode}; {note + '; ' if note else ''}{why(proc)}"
            except Exception as error:  # noqa: BLE001 - an attack that cannot even run is a failure
                ok, line = False, f"{type(error).__name__}: {error}"
            finally:
                os.chdir(cwd)
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {attack.__name__} ({time.time() - start:.0f} s): {line}", flush=True)
    print(f"{failures} failure(s)")
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
