"""The rules that derive preset values from the training data, on hand-made statistics."""

import math

import pytest

from conftest import built, toy_splits, write_dataset, base_config
from recbole_mmssl.config.rules import Statistics, gnn_layers


@pytest.mark.parametrize("users, items, interactions, layers", [
    (9_298, 6_710, 59_541, 3),   # TikTok's training split: d_u 6.4, d_i 8.9, reach 57 items a layer: 2 + 1
    (943, 1_682, 80_367, 2),     # MovieLens-100k: one layer reaches 4,072 items, past the catalogue: 1 + 1
    (19_445, 7_050, 118_551, 3),  # Amazon-Baby-like
    (1_000, 100_000, 50_000, 4),  # a large, sparse catalogue: reach 25 items a layer, 3 + 1
    (1_000, 100_000, 20_000, 4),  # sparser still: 6.6 + 1 layers by the formula, the paper's deepest
    (1_000, 1_000, 500, 4),      # reach that never grows
])
def test_layers_reach_a_tenth_of_the_catalogue(users, items, interactions, layers):
    stats = Statistics(users, items, interactions, 1024)
    assert gnn_layers(stats) == layers
    branching = (interactions / users) * (interactions / items)
    reaching = layers - 1  # the layers before the softmaxed last one
    if 1 < reaching < 3:  # the fewest layers whose reach holds a tenth of the items, by hand
        assert branching ** reaching >= 0.1 * items > branching ** (reaching - 1)


def test_layers_fall_as_the_data_gets_denser():
    counts = [gnn_layers(Statistics(1_000, 2_000, n, 1024)) for n in (2_000, 5_000, 20_000, 100_000, 400_000)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] == 2


def test_auto_is_resolved_from_the_training_split(tmp_path, in_tmp):
    write_dataset(tmp_path / "data", "toy", toy_splits())  # 40 users x 4 training items over 80 items
    config, _, model, _ = built("LightGCN", {**base_config(tmp_path, "toy"), "n_layers": "auto"})
    stats = Statistics(40, 80, 160, 64)
    assert config["n_layers"] == gnn_layers(stats) == 1 + math.ceil(math.log(8) / math.log(4 * 2))
    assert model.n_layers == config["n_layers"] and "rule" in config.origins["n_layers"]
