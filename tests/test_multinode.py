"""Two "nodes" on this machine, one CPU process each, running the real scripts/pretrain.py.

Three launches, shared by the tests (module fixtures):
- one node of two processes, as the README launches it (`accelerate launch --multi_gpu
  --num_processes 2`, CPU), shared output_dir;
- two nodes (`torchrun --nnodes 2 --node_rank 0|1 --nproc_per_node 1 --rdzv_backend c10d`),
  each with an output_dir of its own, as on machines that share no filesystem, and
  `--save_on_each_node true`;
- two nodes resuming from one node's copy of the mid-run checkpoint in a fresh shared
  output_dir, through `accelerate launch --config_file recipes/accelerate-multi-node.yaml`
  (static rendezvous).
The c10d rendezvous hands out the global ranks in arrival order: which node got rank 0 is read
from the output (the node whose output_dir holds trainer_state.json), never assumed.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from helpers.cli import SCRIPT, pretrain_args, step_logs
from helpers.launch import accelerate_on_cpu
from helpers.multinode import ROOT, accelerate_node, free_port, run_together, torchrun_node
from PIL import Image
from safetensors.torch import load_file

from cjepa_hf.training.multinode import storage_problem

STEPS, SAVE = 6, 4  # 48 images: 24 per rank, 3 batches of 8 per data epoch; step 4 is 1 batch into epoch 1
KEYS = ("loss", "jepa_loss", "vicreg_loss", "learning_rate", "weight_decay", "ema_momentum", "online_linear_top1")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}


def _script_args(images, output_dir, *extra):
    return [
        *pretrain_args(output_dir, STEPS, "--save_steps", str(SAVE), "--per_device_train_batch_size", "8", "--shuffle_buffer", "16"),
        "--dataset",
        str(images),
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    rng = np.random.default_rng(0)
    images = tmp / "images"
    for c in range(2):
        (images / f"c{c}").mkdir(parents=True)
        for i in range(24):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(images / f"c{c}" / f"{i}.png")
    one, two = tmp / "one_node", tmp / "two_nodes"
    nodes = [two / "node0", two / "node1"]
    # one node of two processes, and two nodes of one process each: started together
    port = free_port()
    finished = run_together(
        [
            accelerate_on_cpu(SCRIPT, *_script_args(images, one))[0],
            *(torchrun_node(r, 2, 1, port, SCRIPT, *_script_args(images, nodes[r], "--save_on_each_node", "true")) for r in (0, 1)),
        ],
        env=_env(),
        cwd=ROOT,
    )
    # the resume: a fresh shared output_dir with node 1's copy of checkpoint-4
    resumed = tmp / "resumed"
    shutil.copytree(nodes[1] / f"checkpoint-{SAVE}", resumed / f"checkpoint-{SAVE}")
    port = free_port()
    config = os.path.join(ROOT, "recipes", "accelerate-multi-node.yaml")
    args = _script_args(images, resumed, "--resume_from_checkpoint", "latest")
    resumed_run = run_together([accelerate_node(config, r, 2, 2, port, SCRIPT, *args) for r in (0, 1)], env=_env(), cwd=ROOT)
    return {"one": one, "nodes": nodes, "outputs": finished[1:], "resumed": resumed, "resumed_outputs": resumed_run}


def _rank0_dir(nodes):
    with_state = [n for n in nodes if (n / "trainer_state.json").exists()]
    assert len(with_state) == 1, with_state  # only global rank 0 writes the trainer state and the export
    return with_state[0]


def _assert_same_logs(a, b, steps):
    assert [h["step"] for h in a] == [h["step"] for h in b] == list(steps)
    for x, y in zip(a, b):
        for key in KEYS:
            assert x[key] == y[key], (x["step"], key, x[key], y[key])


def test_two_nodes_train_like_one_node_of_two_processes(runs):
    node_dir = _rank0_dir(runs["nodes"])
    _assert_same_logs(step_logs(runs["one"]), step_logs(node_dir), range(1, STEPS + 1))
    assert all(h["vicreg_variance"] > 0 for h in step_logs(runs["one"]))  # the VICReg term over the gathered batch
    args = json.loads((runs["one"] / "training_args.json").read_text())
    assert args["use_cpu"] is True  # set automatically without CUDA, so DDP wraps the model
    # the stream position of every global rank, in the checkpoint of either layout
    state_one = json.loads((runs["one"] / f"checkpoint-{SAVE}" / "cjepa_state.json").read_text())
    assert state_one["data"] == {"epoch": 1, "batches": 1, "world_size": 2, "num_workers": 1, "records": [[8], [8]]}
    for node in runs["nodes"]:
        assert json.loads((node / f"checkpoint-{SAVE}" / "cjepa_state.json").read_text()) == state_one
    w_one = load_file(runs["one"] / "model.safetensors")
    for node in runs["nodes"]:  # save_on_each_node: each node's own final model, equal to the one-node run's
        w_node = load_file(node / "model.safetensors")
        assert w_one.keys() == w_node.keys() and all(torch.equal(w_one[k], w_node[k]) for k in w_one)
    # logging follows the global rank: the start-up summary and the logs are printed once over both nodes
    summaries = [f.stderr.count("pretraining: objective ") for f in runs["outputs"]]
    printed = [f.stdout.count("{'loss': ") for f in runs["outputs"]]
    assert sorted(summaries) == [0, 1] and sorted(printed) == [0, STEPS], (summaries, printed)


def test_each_node_keeps_a_complete_checkpoint_when_nodes_share_no_disk(runs):
    node0, node1 = (n / f"checkpoint-{SAVE}" for n in runs["nodes"])
    # every rank's RNG state in both copies, byte for byte (each node's own process wrote one of them)
    for rank in (0, 1):
        assert (node0 / f"rng_state_{rank}.pth").read_bytes() == (node1 / f"rng_state_{rank}.pth").read_bytes()
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "online_probe.safetensors"):
        assert (node0 / name).read_bytes() == (node1 / name).read_bytes(), name
    # the storage check's markers are gone
    assert not [f for n in runs["nodes"] for f in os.listdir(n) if f.startswith(".cjepa-storage")]


def test_resume_across_two_nodes_is_exact(runs):
    node_dir = _rank0_dir(runs["nodes"])
    resumed = step_logs(runs["resumed"])
    assert [h["step"] for h in resumed] == list(range(1, STEPS + 1))  # the first 4 come from the checkpoint
    # this launch trained steps 5 and 6 only (a run from scratch would print all 6, with the same numbers)
    assert sorted(f.stdout.count("{'loss': ") for f in runs["resumed_outputs"]) == [0, STEPS - SAVE]
    _assert_same_logs(step_logs(node_dir)[SAVE:], resumed[SAVE:], range(SAVE + 1, STEPS + 1))
    w_full, w_resumed = load_file(node_dir / "model.safetensors"), load_file(runs["resumed"] / "model.safetensors")
    assert w_full.keys() == w_resumed.keys() and all(torch.equal(w_full[k], w_resumed[k]) for k in w_full)


# ----------------------------------------------------------------------------- storage layouts, no launch


def test_storage_layouts_that_keep_every_checkpoint_pass():
    # a shared output_dir, rank 0 writes: everybody sees rank 0's files
    assert storage_problem("/runs/x", [0], [[0], [0], [0], [0]], needs_checkpoints=True) is None
    # save_on_each_node on unshared disks (2 nodes x 2 processes): each sees its node's writer only
    assert storage_problem("/runs/x", [0, 2], [[0], [0], [2], [2]], needs_checkpoints=True) is None
    # unshared disks without checkpoints or a resume: only rank 0's final save matters
    assert storage_problem("/runs/x", [0], [[0], [0], [], []], needs_checkpoints=False) is None


def test_storage_layouts_that_lose_checkpoints_are_refused():
    shared = storage_problem("/runs/x", [0, 2], [[0, 2], [0, 2], [0, 2], [0, 2]], needs_checkpoints=False)
    assert "ranks [0, 2] all write checkpoints into the same output_dir '/runs/x'" in shared
    assert "drop --save_on_each_node" in shared
    blind = storage_problem("/runs/x", [0], [[0], [0], [], []], needs_checkpoints=True)
    assert "rank(s) [2, 3] cannot see the files that rank(s) [0] write" in blind
    assert "--save_on_each_node true" in blind
