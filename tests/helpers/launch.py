"""Start a script on several CPU processes (gloo) with `accelerate launch`, as a user would, and wait for it.

The command line of tests/test_distributed.py (`--multi_gpu` with ACCELERATE_USE_CPU=true: a
plain `--cpu` launch starts ONE process), or a config file of recipes/; the rendezvous port is
a free one (`helpers.multinode.free_port`), so that several test sessions can launch at once.
"""

from __future__ import annotations

import os
import subprocess

from helpers.multinode import ACCELERATE, ROOT, free_port


def accelerate_on_cpu(script: str, *args: str, num_processes: int = 2, config_file: str | None = None) -> tuple[list[str], dict]:
    """The `accelerate launch` command line and its environment (over os.environ: one thread per
    process, offline) for `num_processes` CPU processes, as `launch_on_cpu` runs it."""
    if config_file is None:
        launcher = ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        env = {"ACCELERATE_USE_CPU": "true"}
    else:
        launcher, env = ["--config_file", config_file], {}
    cmd = [ACCELERATE, "launch", *launcher, "--num_processes", str(num_processes), "--main_process_port", str(free_port()), script, *args]
    return cmd, {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}


def launch_on_cpu(script: str, *args: str, num_processes: int = 2, config_file: str | None = None, timeout: float = 600) -> str:
    """Run `accelerate launch [--config_file F] ... script args` on `num_processes` CPU processes from
    the repository root; fail with the output's tail unless every process exits 0. Returns the output."""
    cmd, env = accelerate_on_cpu(script, *args, num_processes=num_processes, config_file=config_file)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr
