"""Shared test settings: offline Hub, a private HF_HOME, tiny models (width 32, 32 px)."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="cjepa-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY = dict(
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
