"""MultiModalDataset / InteractionDataset: feature alignment and the refusal of bad input."""

import re

import numpy as np
import pytest
import torch

from conftest import base_config, bundled, toy_splits, write_dataset
from recbole_mmssl.config import Config
from recbole_mmssl.data import InteractionDataset, MultiModalDataset
from recbole_mmssl.data.dataset import shuffled_rows


def make(config_dict, cls=MultiModalDataset, model="LightGCN"):
    return cls(Config(model=model, config_dict=config_dict))


def test_rows_follow_internal_ids(toy_multimodal):
    config, features, tokens = toy_multimodal
    dataset = make(config)
    row_of = {t: r for r, t in enumerate(tokens)}
    item_tokens = dataset.field2id_token["item_id"]
    moved = 0
    for modality, source in features.items():
        table = dataset.modality_features[modality]
        assert table.dtype == torch.float32 and table.shape == (dataset.item_num, source.shape[1])
        assert torch.count_nonzero(table[0]) == 0
        for internal_id in range(1, dataset.item_num):
            np.testing.assert_array_equal(table[internal_id].numpy(), source[row_of[item_tokens[internal_id]]])
            moved += row_of[item_tokens[internal_id]] != internal_id - 1
    assert moved > dataset.item_num


def test_real_tiktok_features_match_source_rows():
    """Bundled TikTok: every internal item id's row equals the .npy row of its token."""
    folder = bundled("tiktok")
    dataset = make({"dataset": "tiktok", "state": "ERROR"})
    tokens = dataset.field2id_token["item_id"][1:].astype(int)
    assert (tokens != np.arange(len(tokens))).sum() > 6000
    for modality in ("image", "audio"):
        source = np.load(folder / f"tiktok.{modality}.npy").astype(np.float32)
        np.testing.assert_array_equal(dataset.modality_features[modality][1:].numpy(), source[tokens])


@pytest.fixture
def broken(tmp_path):
    """A toy dataset writer whose caller breaks one thing; returns (write, config)."""
    splits = toy_splits()
    tokens = [f"i{k}" for k in range(80)]
    image = np.random.default_rng(0).normal(size=(80, 4)).astype(np.float32)

    def write(**changes):
        folder = write_dataset(tmp_path / "data", "toy", changes.pop("splits", splits),
                               {"image": changes.pop("image", image)}, changes.pop("tokens", tokens))
        return folder

    return write, base_config(tmp_path, "toy", modalities=["image"])


def expect_error(config, pattern, cls=MultiModalDataset, build=False):
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        dataset = make(config, cls)
        if build:
            dataset.build()
    assert re.search(pattern, str(info.value), re.S), str(info.value)
    return str(info.value)


def test_missing_feature_file(broken):
    write, config = broken
    folder = write()
    (folder / "toy.image.npy").unlink()
    message = expect_error(config, r"toy\.image\.npy.*expected shape \(80, dim\)")
    assert "python -m recbole_mmssl.data.prepare features" in message


def test_row_count_differs_from_token_list(broken):
    write, config = broken
    write(image=np.ones((79, 4), dtype=np.float32))
    expect_error(config, r"toy\.image\.npy has 79 rows but .*toy\.feature_items lists 80 items")


def test_interacted_item_without_feature_row(broken):
    write, config = broken
    tokens = [f"i{k}" for k in range(80)]
    tokens[7] = "i99"
    write(tokens=tokens)
    expect_error(config, r"1 item\(s\) .* no feature row in .*toy\.feature_items .*'i7'")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_values(broken, bad):
    write, config = broken
    image = np.ones((80, 4), dtype=np.float32)
    image[12, 3] = bad
    write(image=image)
    expect_error(config, r"toy\.image\.npy has NaN or Inf values in 1 row\(s\), e\.g\. rows \[12\]")


def test_non_2d_array(broken):
    write, config = broken
    write(image=np.ones((80, 4, 2), dtype=np.float32))
    expect_error(config, r"toy\.image\.npy holds an array of shape \(80, 4, 2\); it must be 2-D")


def test_unknown_modality(broken):
    write, config = broken
    write()
    config.update(modalities=["image", "vidoe"], feature_files={"image": "toy.image.npy"})
    expect_error(config, r"Unknown modality \['vidoe'\] for dataset toy.*\['image'\]")


def test_duplicate_item_tokens(broken):
    write, config = broken
    tokens = [f"i{k}" for k in range(80)]
    tokens[3] = "i5"
    write(tokens=tokens)
    expect_error(config, r"toy\.feature_items names 1 item token\(s\) twice, e\.g\. \['i5'\]")


def test_feature_width_checked_against_feature_dims(broken):
    write, config = broken
    write()
    config["feature_dims"] = {"image": [4096]}
    expect_error(config, r"toy\.image\.npy has 4 columns; modality image .* expects 4096")


@pytest.mark.parametrize("content", ["", "user_id:token\titem_id:token\n"])
def test_empty_interactions_file(broken, content):
    write, config = broken
    folder = write()
    (folder / "toy.valid.inter").write_text(content)
    expect_error(config, r"toy\.valid\.inter (is empty|has a header but no interactions)", cls=InteractionDataset)


def test_missing_dataset_folder(tmp_path):
    config = base_config(tmp_path, "nowhere")
    expect_error(config, r"Dataset folder .*nowhere not found.*recbole_mmssl\.data\.prepare", cls=InteractionDataset)


def cold_splits():
    splits = toy_splits()
    splits["test"].append(("newcomer", "i3"))
    return splits


def test_user_without_training_items_is_an_error(broken):
    write, config = broken
    write(splits=cold_splits())
    expect_error(config, r"1 user\(s\) of the test split .* no training interaction .*'newcomer'",
                 cls=InteractionDataset, build=True)


@pytest.mark.parametrize("policy, kept", [("drop", 0), ("keep", 1)])
def test_cold_start_policies(broken, policy, kept):
    write, config = broken
    write(splits=cold_splits())
    config["cold_start_users"] = policy
    dataset = make(config, InteractionDataset)
    test = dataset.build()[2]
    newcomer = dataset.token2id("user_id", "newcomer")
    assert int((test.inter_feat["user_id"] == newcomer).sum()) == kept
    assert len(test.inter_feat) == 40 + kept


def test_amazon_baby_without_features_names_files_shapes_and_sources():
    folder = bundled("amazon-baby")
    assert not (folder / "amazon-baby.image.npy").exists()
    message = expect_error({"dataset": "amazon-baby", "state": "ERROR"}, r"amazon-baby needs item features")
    assert re.search(r"image: .*amazon-baby\.image\.npy \(expected shape \(7050, 4096\)\)", message)
    assert re.search(r"text: .*amazon-baby\.text\.npy \(expected shape \(7050, 1024 or 384\)\)", message)
    assert "github.com/HKUDS/MMSSL" in message and "github.com/enoche/MMRec" in message
    assert re.search(r"prepare features \S*amazon-baby --feature image=\S+ --feature text=\S+", message)


def test_feature_shuffle_seed_permutes_rows_across_items(toy_multimodal):
    """One permutation of the items for every modality, reproducible from the seed alone."""
    config, _, _ = toy_multimodal
    plain = make(config).modality_features
    shuffled = make({**config, "feature_shuffle_seed": 11}).modality_features
    again = make({**config, "feature_shuffle_seed": 11}).modality_features
    other = make({**config, "feature_shuffle_seed": 12}).modality_features
    n_items = plain["image"].shape[0]
    rows = {tuple(r) for r in plain["image"][1:].tolist()}
    perm = np.array([[tuple(r) for r in plain["image"][1:].tolist()].index(tuple(s))
                     for s in shuffled["image"][1:].tolist()])
    assert sorted(perm.tolist()) == list(range(n_items - 1)) and (perm != np.arange(n_items - 1)).sum() > 60
    np.testing.assert_array_equal(perm, shuffled_rows(n_items - 1, 11))
    for m in ("image", "text"):
        assert torch.count_nonzero(shuffled[m][0]) == 0
        assert torch.equal(shuffled[m][1:], plain[m][1:][perm])  # the same permutation for every modality
        assert torch.equal(again[m], shuffled[m])
        assert not torch.equal(other[m], shuffled[m])
    assert {tuple(r) for r in shuffled["image"][1:].tolist()} == rows
