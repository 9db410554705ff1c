"""Synthetic catalogs for scale tests: the counts asked for, heavy-tailed popularity, loadable."""

import numpy as np
import pytest

from conftest import base_config
from recbole_mmssl.config import Config
from recbole_mmssl.data import MultiModalDataset
from recbole_mmssl.data.synthetic import _rank_within, dataset_config, interactions, synthetic_catalog
from recbole_mmssl.errors import InputError


def test_rank_within_groups_by_hand():
    groups = np.array([5, 2, 5, 2, 5])
    order = np.array([3, 9, 1, 0, 7])  # group 5: elements 2 (1), 0 (3), 4 (7); group 2: elements 3 (0), 1 (9)
    assert _rank_within(groups, order).tolist() == [1, 1, 0, 0, 2]


def test_interactions_have_the_asked_counts_and_a_heavy_tail():
    pairs = interactions(n_users=400, n_items=300, n_interactions=6000, seed=3)
    assert len(pairs) == 6000 and len(np.unique(pairs, axis=0)) == 6000
    users, items = np.bincount(pairs[:, 0], minlength=400), np.bincount(pairs[:, 1], minlength=300)
    assert users.min() >= 3 and items.min() >= 1
    top = np.sort(items)[::-1]
    assert top[:30].sum() > 2.5 * 0.1 * len(pairs)  # the top 10% of items hold over 2.5x their share
    again = interactions(n_users=400, n_items=300, n_interactions=6000, seed=3)
    np.testing.assert_array_equal(pairs, again)


def test_too_few_interactions_is_refused():
    with pytest.raises(InputError, match="needs at least 1300 interactions"):
        interactions(n_users=100, n_items=1000, n_interactions=1200)


def test_catalog_loads_as_a_multimodal_dataset(tmp_path):
    folder, name = synthetic_catalog(str(tmp_path / "data"), 200, n_users=150, n_interactions=1500, seed=1)
    assert "Nothing here is real data" in (tmp_path / "data" / name / "SYNTHETIC").read_text()
    config = Config(model="VBPR", config_dict={**base_config(tmp_path, name), **dataset_config(name)})
    dataset = MultiModalDataset(config)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (150, 200, 1500)
    assert {m: tuple(t.shape) for m, t in dataset.modality_features.items()} == {"image": (201, 128),
                                                                                  "text": (201, 128)}
