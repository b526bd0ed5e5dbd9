"""Launch several "nodes" on this one machine, each its own launcher command, started together.

Used by tests/test_multinode.py: `torchrun --nnodes N --node_rank R --nproc_per_node P
--rdzv_backend c10d --rdzv_endpoint 127.0.0.1:PORT`, or `accelerate launch` with a
multi-node config, one command per node; `run_together` starts them at once and waits for all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_node(node_rank: int, nnodes: int, nproc_per_node: int, port: int, script: str, *args: str) -> list[str]:
    """One node's torchrun with the c10d rendezvous: the global ranks are handed out by the
    rendezvous, in arrival order (they need not follow node_rank)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(nnodes),
        "--node_rank",
        str(node_rank),
        "--nproc_per_node",
        str(nproc_per_node),
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
        "--rdzv_id",
        f"test-{port}",
        script,
        *args,
    ]


def accelerate_node(
    config_file: str, machine_rank: int, num_machines: int, num_processes: int, port: int, script: str, *args: str
) -> list[str]:
    """One machine's `accelerate launch` with a multi-node config file; the fields a user changes
    per cluster (machine rank, address, port, process count) are given as flags, which win."""
    return [
        ACCELERATE,
        "launch",
        "--config_file",
        config_file,
        "--num_machines",
        str(num_machines),
        "--num_processes",
        str(num_processes),
        "--machine_rank",
        str(machine_rank),
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        script,
        *args,
    ]


@dataclass
class Finished:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_together(cmds: list[list[str]], env: dict[str, str], cwd: str, timeout: float = 300) -> list[Finished]:
    """Start every command at once (output to files: no pipe can fill up and block a node),
    wait for all, and fail with every node's output tail if any exits non-zero. A node left
    running when another fails or the time runs out is killed: these are this call's own
    children, nothing else."""
    import tempfile

    procs = []
    with tempfile.TemporaryDirectory(prefix="nodes-") as logs:
        for i, cmd in enumerate(cmds):
            out, err = open(os.path.join(logs, f"{i}.out"), "w+"), open(os.path.join(logs, f"{i}.err"), "w+")
            procs.append((cmd, subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True), out, err))
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(p.poll() is None for _, p, _, _ in procs):
                if any(p.poll() not in (None, 0) for _, p, _, _ in procs):
                    # a node failed: the others would wait for it until their collectives time out
                    deadline = min(deadline, time.monotonic() + 15)
                time.sleep(0.2)
        finally:
            for _, proc, _, _ in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)  # the launcher's own process group (start_new_session)
                    proc.wait()
        finished = []
        for cmd, proc, out, err in procs:
            out.seek(0)
            err.seek(0)
            finished.append(Finished(cmd, proc.returncode, out.read(), err.read()))
            out.close()
            err.close()
    if any(f.returncode != 0 for f in finished):
        report = "\n".join(
            f"--- node {i}: exit {f.returncode}: {' '.join(f.cmd[:12])} ...\n{f.stdout[-1500:]}\n{f.stderr[-4000:]}"
            for i, f in enumerate(finished)
        )
        raise AssertionError(f"a node failed:\n{report}")
    return finished
