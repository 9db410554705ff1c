"""MovieLens-100k built from RecBole's own copy: all ratings, MMRec's split rule, real content."""

import os
from collections import Counter

import numpy as np
import pytest

from recbole_mmssl.config import Config
from recbole_mmssl.data import MultiModalDataset
from recbole_mmssl.data.folder import random_user_split, split_sizes
from recbole_mmssl.data.movielens import recbole_copy
from recbole_mmssl.data.prepare import main as prepare_main
from recbole_mmssl.errors import MissingInputError


def read_pairs(path):
    with open(path, encoding="utf-8") as f:
        next(f)
        return [tuple(line.rstrip("\n").split("\t")) for line in f]


@pytest.mark.parametrize("n, sizes", [(20, (16, 2, 2)), (27, (22, 2, 3)), (10, (8, 1, 1)), (9, (7, 1, 1)),
                                      (3, (1, 1, 1)), (2, (2, 0, 0))])
def test_split_sizes_follow_the_rule(n, sizes):
    assert split_sizes(n) == sizes


def test_split_is_seeded_and_keeps_every_pair():
    pairs = [(f"u{u}", f"i{i}") for u in range(5) for i in range(3 * u + 12)]
    first, again, other = random_user_split(pairs, 1), random_user_split(pairs, 1), random_user_split(pairs, 2)
    assert first == again and first != other
    assert sorted(p for phase in first.values() for p in phase) == sorted(pairs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    pytest.importorskip("sentence_transformers", reason="the [encode] extra is not installed")
    assert prepare_main(["ml-100k", "--out", str(root), "--device", "cpu"]) == 0
    return root


def test_counts_and_split_sizes(built):
    folder = built / "ml-100k"
    splits = {phase: read_pairs(folder / f"ml-100k.{phase}.inter") for phase in ("train", "valid", "test")}
    source = read_pairs(os.path.join(recbole_copy(), "ml-100k.inter"))
    every = [p for phase in splits.values() for p in phase]
    assert len(every) == len(set(every)) == 100_000
    assert set(every) == {(u, i) for u, i, *_ in source}
    users = Counter(u for u, _ in every)
    assert len(users) == 943 and len({i for _, i in every}) == 1682
    counts = {phase: Counter(u for u, _ in pairs) for phase, pairs in splits.items()}
    assert set(counts["train"]) == set(users)
    for user, n in users.items():
        assert (counts["train"][user], counts["valid"][user], counts["test"][user]) == split_sizes(n)


def test_content_rows_describe_their_movies(built):
    from recbole_mmssl.data.encode import load_text_encoder

    folder = built / "ml-100k"
    tokens = (folder / "ml-100k.feature_items").read_text().split()
    genre, text = np.load(folder / "ml-100k.genre.npy"), np.load(folder / "ml-100k.text.npy")
    assert genre.shape == (1682, 19) and text.shape == (1682, 384)
    toy_story = tokens.index("1")  # Toy Story (1995): Animation, Children's, Comedy
    assert genre[toy_story].sum() == 3 and set(np.unique(genre)) == {0.0, 1.0}
    direct = load_text_encoder(device="cpu").encode(["Toy Story (1995). Animation Children's Comedy"])[0]
    np.testing.assert_allclose(text[toy_story], direct, atol=1e-5)


def test_loads_with_its_properties_file(built, tmp_path):
    config = Config(model="VBPR", config_dict={"dataset": "ml-100k", "data_path": str(built), "state": "ERROR",
                                               "checkpoint_dir": str(tmp_path)})
    dataset = MultiModalDataset(config)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (943, 1682, 100_000)
    assert {m: tuple(t.shape) for m, t in dataset.modality_features.items()} == {"text": (1683, 384),
                                                                                  "genre": (1683, 19)}


def test_missing_folder_names_the_prepare_command(tmp_path):
    config = Config(model="LightGCN", config_dict={"dataset": "ml-100k", "data_path": str(tmp_path / "none"),
                                                   "state": "ERROR"})
    from recbole_mmssl.data import InteractionDataset

    with pytest.raises(MissingInputError, match="python -m recbole_mmssl.data.prepare ml-100k"):
        InteractionDataset(config)
