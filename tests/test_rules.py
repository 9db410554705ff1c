"""The rules that derive preset values from the training data, on hand-made statistics."""

import math

import pytest

from conftest import base_config, built, toy_splits, write_dataset
from recbole_mmssl.config.rules import Statistics, softmax_share


@pytest.mark.parametrize("users, items, interactions, share", [
    (9_298, 6_710, 59_541, 0.0),     # TikTok's training split: one layer reaches 57 of 6,710 items (0.85%)
    (943, 1_682, 80_367, 1.0),       # MovieLens-100k: one layer reaches 4,072 items, past the catalogue
    (19_445, 7_050, 118_551, 0.0),   # Amazon-Baby: 103 of 7,050 (1.5%)
    (1_000, 1_000, 10_000, 1.0),     # 10 x 10 = 100 items: a tenth, the softmax in full
    (1_000, 1_000, 6_065, 0.0),      # 6.065 x 6.065 = 36.8 items: a tenth over e, no softmax
    (1_000, 1_000, 7_788, 0.5),      # 7.788^2 = 60.65 items: a tenth over sqrt(e), half of each
])
def test_the_softmax_share_grows_with_the_log_of_the_reach(users, items, interactions, share):
    stats = Statistics(users, items, interactions)
    assert softmax_share(stats) == pytest.approx(share, abs=2e-4)


def test_the_share_is_monotone_and_continuous_in_the_density():
    """From no softmax to the full softmax over interaction counts one apart: never falling, and
    no step larger than the log's slope allows (about 2 / n at n interactions)."""
    counts = range(5_000, 12_001)
    shares = [softmax_share(Statistics(1_000, 1_000, n)) for n in counts]
    assert shares[0] == 0.0 and shares[-1] == 1.0
    steps = [b - a for a, b in zip(shares, shares[1:])]
    assert min(steps) >= 0
    assert max(step * n for step, n in zip(steps, counts)) < 2.0 + 1e-3
    assert math.isclose(sum(steps), 1.0)


def test_auto_is_resolved_from_the_training_split(tmp_path, in_tmp):
    import numpy as np

    features = {"image": np.random.default_rng(0).normal(size=(80, 4)).astype(np.float32)}
    write_dataset(tmp_path / "data", "toy", toy_splits(), features, [f"i{k}" for k in range(80)])
    config = base_config(tmp_path, "toy", modalities=["image"], n_heads=2, embedding_size=8)
    cfg, _, model, _ = built("MMSSL", {**config, "variant": "improved"})  # 40 users x 4 items over 80
    assert cfg["softmax_share"] == softmax_share(Statistics(40, 80, 160)) == 1.0  # 4 x 2 = 8 = a tenth of 80
    assert model.softmax_share == 1.0 and model.last_layer_norm == "softmax"
    assert "rule" in cfg.origins["softmax_share"]
