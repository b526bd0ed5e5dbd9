"""The golden run (tests/golden/golden_run.py) reproduces its recorded figures to 1e-6."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "golden"))
import golden_run  # noqa: E402

with open(golden_run.GOLDEN) as f:
    GOLDEN = json.load(f)


@pytest.mark.parametrize("objective", sorted(golden_run.OBJECTIVES))
def test_the_golden_run_is_reproduced(objective):
    expected, got = GOLDEN[objective], golden_run.run(objective)
    assert len(got["logs"]) == len(expected["logs"]) == 20
    for step, (a, b) in enumerate(zip(got["logs"], expected["logs"]), 1):
        assert a.keys() == b.keys(), step
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(b[key])), (step, key, a[key], b[key])
    for row, row_expected in zip(got["target_pooled"], expected["target_pooled"]):
        assert row == pytest.approx(row_expected, abs=1e-6)
    assert got["target_pooled_sum"] == pytest.approx(expected["target_pooled_sum"], abs=1e-6)
    for part, value in expected["checksums"].items():
        assert got["checksums"][part] == pytest.approx(value, abs=1e-6), part
    # the run moved: the comparison is not between untrained copies
    assert expected["logs"][-1]["jepa_loss"] < 0.9 * expected["logs"][0]["jepa_loss"]
