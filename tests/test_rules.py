"""The rules that derive preset values from the training data, on hand-made statistics."""

import pytest

from conftest import base_config, built, toy_splits, write_dataset
from recbole_mmssl.config.rules import Statistics, last_layer_norm


@pytest.mark.parametrize("users, items, interactions, norm", [
    (9_298, 6_710, 59_541, "none"),      # TikTok's training split: one layer reaches 57 of 6,710 items
    (943, 1_682, 80_367, "softmax"),     # MovieLens-100k: one layer reaches 4,072 items, past the catalogue
    (19_445, 7_050, 118_551, "none"),    # Amazon-Baby: 103 of 7,050
    (1_000, 1_000, 9_999, "none"),       # 9.999 x 9.999 = 99.98 items: just short of a tenth...
    (1_000, 1_000, 10_000, "softmax"),   # ... and 10 x 10 = 100: a tenth
])
def test_softmax_where_one_layer_reaches_a_tenth_of_the_catalogue(users, items, interactions, norm):
    stats = Statistics(users, items, interactions, 1024)
    reach = (interactions / users) * (interactions / items)  # items of an item's users, by hand
    assert (reach >= 0.1 * items) == (norm == "softmax")
    assert last_layer_norm(stats) == norm


def test_the_rule_is_monotone_in_the_density():
    norms = [last_layer_norm(Statistics(1_000, 2_000, n, 1024)) for n in (2_000, 10_000, 20_000, 100_000, 400_000)]
    first_softmax = norms.index("softmax")
    assert set(norms[:first_softmax]) == {"none"} and set(norms[first_softmax:]) == {"softmax"}


def test_auto_is_resolved_from_the_training_split(tmp_path, in_tmp):
    import numpy as np

    features = {"image": np.random.default_rng(0).normal(size=(80, 4)).astype(np.float32)}
    write_dataset(tmp_path / "data", "toy", toy_splits(), features, [f"i{k}" for k in range(80)])
    config = base_config(tmp_path, "toy", modalities=["image"], n_heads=2, embedding_size=8)
    cfg, _, model, _ = built("MMSSL", {**config, "variant": "improved"})  # 40 users x 4 items over 80
    assert cfg["last_layer_norm"] == last_layer_norm(Statistics(40, 80, 160, 64)) == "softmax"  # 4 x 2 >= 8
    assert model.last_layer_norm == "softmax" and "rule" in cfg.origins["last_layer_norm"]
