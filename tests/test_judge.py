"""cjepa_hf.judge: an encoder against its random initialisation and raw pixels."""

import os

import pytest
import torch
from conftest import TINY

from cjepa_hf import CJEPAConfig, CJEPAModel
from cjepa_hf.judge import _raw_pixel_cache, judge_encoder, judgement_table

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs the Fashion-MNIST IDX files (`make test` installs them)",
)


def test_judgement_scores_three_feature_sets_and_caches_raw_pixels(tmp_path):
    config = CJEPAConfig(**TINY)
    torch.manual_seed(0)
    trained, initial = CJEPAModel(config), CJEPAModel(config)
    kw = dict(image_size=32, pad_to=32, train_samples=300, test_samples=200, cache_dir=str(tmp_path))
    first = judge_encoder(trained, initial, **kw)
    for name in ("trained", "random_init", "raw_pixels"):
        assert 0.1 < first[name]["knn_top1"] <= 1.0 and 0.1 < first[name]["linear_top1"] <= 1.0, name
    assert first["raw_pixels"]["dims"] == 3072 and first["trained"]["dims"] == 32
    assert first["protocol"]["test_samples"] == 200 and "probes_raw_pixels" in first["seconds"]
    assert len(os.listdir(tmp_path)) == 1
    # the raw-pixel scores depend on the protocol only: the second judgement reads them back
    again = judge_encoder(initial, trained, **kw)
    assert again["raw_pixels"] == first["raw_pixels"] and "probes_raw_pixels" not in again["seconds"]
    assert again["trained"] == first["random_init"] and again["random_init"] == first["trained"]
    # another protocol is another cache entry
    protocol = {**first["protocol"], "test_samples": 200}
    protocol = {
        k: protocol[k]
        for k in (
            "dataset",
            "train_split",
            "test_split",
            "train_samples",
            "test_samples",
            "image_size",
            "pad_to",
            "knn_k",
            "knn_temperature",
            "seed",
        )
    }
    assert os.path.basename(_raw_pixel_cache(protocol, str(tmp_path))) == os.listdir(tmp_path)[0]
    assert _raw_pixel_cache({**protocol, "test_samples": 100}, str(tmp_path)) != _raw_pixel_cache(protocol, str(tmp_path))
    assert judgement_table(first).count("\n") == 4
