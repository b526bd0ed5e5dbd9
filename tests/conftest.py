"""Shared test settings: offline Hub, a private HF_HOME, tiny models (width 32, 32 px)."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="cjepa-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from cjepa_hf.bench.runner import TINY_PRESET  # noqa: E402

# Under pytest-xdist (`make test` runs two workers) each worker has one core; alone, two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

# The tests' tiny model: the benchmarks' smoke-run preset (one definition).
TINY = dict(TINY_PRESET)


@pytest.fixture
def tiny_config():
    from cjepa_hf import CJEPAConfig

    return CJEPAConfig(**TINY)


def random_masks(batch: int, num_patches: int, kept: int, blocks: int, per_block: int, seed: int = 0):
    """Context (B, K) and target (B, M, T) index tensors, sorted, without a mask sampler."""
    g = torch.Generator().manual_seed(seed)
    context = torch.stack([torch.randperm(num_patches, generator=g)[:kept].sort().values for _ in range(batch)])
    target = torch.stack(
        [torch.stack([torch.randperm(num_patches, generator=g)[:per_block].sort().values for _ in range(blocks)]) for _ in range(batch)]
    )
    return context, target


def assert_loads_without_package(folder, x: torch.Tensor, expected: torch.Tensor, workdir, resave=None) -> list[str] | None:
    """Load `folder` with AutoModel(trust_remote_code=True) in a fresh process where
    `import cjepa_hf` fails, run it on `x` and compare its pooled output with `expected`.
    With `resave` (a folder): the model loaded as remote code also saves itself there (twice, the
    second time without preprocessor_config.json, which it must write again), that folder loads
    in the same process and gives the same hidden states; returns its file names."""
    import subprocess
    import sys
    import textwrap

    torch.save({"x": x, "expected": expected}, os.path.join(workdir, "io.pt"))
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["cjepa_hf"] = None  # importing cjepa_hf now raises ImportError
        try:
            import cjepa_hf
            raise SystemExit("cjepa_hf is importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert "cjepa_hf" not in type(model).__module__, type(model).__module__
        io = torch.load({os.path.join(str(workdir), "io.pt")!r})
        with torch.no_grad():
            out = model(io["x"]).pooler_output
        print("MAXDIFF", (out - io["expected"]).abs().max().item(), type(model).__name__)
        resave = {None if resave is None else str(resave)!r}
        if resave is not None:
            import os
            model.save_pretrained(resave)
            os.remove(os.path.join(resave, "preprocessor_config.json"))
            model.save_pretrained(resave)  # writes the default image processor again
            again = AutoModel.from_pretrained(resave, trust_remote_code=True).eval()
            with torch.no_grad():
                assert torch.equal(model(io["x"]).last_hidden_state, again(io["x"]).last_hidden_state)
            print("FILES", " ".join(sorted(os.listdir(resave))))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": os.path.join(str(workdir), "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("MAXDIFF")][0]
    assert float(line.split()[1]) < 1e-6 and line.split()[2] == "CJEPAModel"
    if resave is not None:
        return [ln for ln in result.stdout.splitlines() if ln.startswith("FILES")][0].split()[1:]
    return None


@pytest.fixture(scope="session")
def two_process_checks(tmp_path_factory):
    """The output folder of the one two-process launch of tests/helpers/two_processes.py (DDP
    checks in ./ddp, FSDP2 checks in ./fsdp, the launch's output in output.txt), shared by test_distributed.py and test_fsdp.py:
    under pytest-xdist the first worker to need it launches, any other waits on a lock and reads
    the same folder (the session's common temporary directory)."""
    from filelock import FileLock
    from helpers.launch import launch_on_cpu

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, common to the workers of this session
    out = root / "two_process_checks"
    with FileLock(str(root / "two_process_checks.lock")):
        if not (out / "done").exists():
            output = launch_on_cpu(os.path.join(os.path.dirname(__file__), "helpers", "two_processes.py"), str(out), timeout=900)
            (out / "output.txt").write_text(output)  # both processes' stdout and stderr
            (out / "done").write_text("")
    return out
