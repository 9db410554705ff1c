"""Data preparation: MMSSL and MMRec formats round-trip through RecBole with their splits intact."""

import json
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, base_config, bundled
from recbole_mmssl.config import Config
from recbole_mmssl.data import InteractionDataset, MultiModalDataset
from recbole_mmssl.data.prepare import from_mmrec, from_mmssl, main

SHARED = REPO.parent / "shared" / "data-src"


def loaded_splits(config_dict, cls=InteractionDataset):
    """phase -> {user token: set of item tokens}, as RecBole loads and splits the folder."""
    dataset = cls(Config(model="LightGCN", config_dict=config_dict))
    result = {}
    for phase, split in zip(("train", "valid", "test"), dataset.build()):
        users = dataset.id2token("user_id", split.inter_feat["user_id"].numpy())
        items = dataset.id2token("item_id", split.inter_feat["item_id"].numpy())
        sets = defaultdict(set)
        for u, i in zip(users, items):
            sets[str(u)].add(str(i))
        result[phase] = dict(sets)
    return dataset, result


def sets_from_pairs(pairs):
    sets = defaultdict(set)
    for u, i in pairs:
        sets[str(u)].add(str(i))
    return dict(sets)


def write_mmssl(folder, splits, features):
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": "train.json", "valid": "val.json", "test": "test.json"}
    for phase, name in names.items():
        (folder / name).write_text(json.dumps(splits[phase]))
    for modality, array in features.items():
        np.save(folder / f"{modality}_feat.npy", array)


def random_mmssl(n_users=25, n_items=18, seed=3):
    rng = np.random.default_rng(seed)
    splits = {"train": {}, "valid": {}, "test": {}}
    for u in range(n_users):
        items = [int(i) for i in rng.choice(n_items, size=5, replace=False)]
        splits["train"][str(u)] = items[:3]
        splits["valid"][str(u)] = items[3:4] if u % 3 else []
        splits["test"][str(u)] = items[4:]
    return splits


def test_mmssl_round_trip_with_features(tmp_path):
    splits = random_mmssl()
    features = {"image": np.random.default_rng(0).normal(size=(18, 6)).astype(np.float16),
                "text": np.random.default_rng(1).normal(size=(18, 3))}
    write_mmssl(tmp_path / "src", splits, features)
    from_mmssl(str(tmp_path / "src"), "mini", str(tmp_path / "data"))
    config = base_config(tmp_path, "mini", modalities=["image", "text"])
    dataset, loaded = loaded_splits(config, MultiModalDataset)
    for phase in loaded:
        expected = {u: {str(i) for i in items} for u, items in splits[phase].items() if items}
        assert loaded[phase] == expected
    for modality, source in features.items():
        for internal_id, token in enumerate(dataset.field2id_token["item_id"][1:], start=1):
            np.testing.assert_array_equal(dataset.modality_features[modality][internal_id].numpy(),
                                          source[int(token)].astype(np.float32))


def test_mmrec_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for u in range(30):
        items = rng.choice(20, size=6, replace=False)
        labels = [0, 0, 0, 0, 1, 2]
        rows += [(u, int(i), 5.0, 1000 + k, lab) for k, (i, lab) in enumerate(zip(items, labels))]
    src = tmp_path / "mmrec"
    src.mkdir()
    frame = pd.DataFrame(rows, columns=["userID", "itemID", "rating", "timestamp", "x_label"])
    frame.to_csv(src / "baby.inter", sep="\t", index=False)
    image = rng.normal(size=(20, 4)).astype(np.float32)
    np.save(src / "image_feat.npy", image)
    from_mmrec(str(src / "baby.inter"), "mini", str(tmp_path / "data"))
    dataset, loaded = loaded_splits(base_config(tmp_path, "mini", modalities=["image"]), MultiModalDataset)
    for label, phase in enumerate(("train", "valid", "test")):
        part = frame[frame.x_label == label]
        assert loaded[phase] == sets_from_pairs(zip(part.userID, part.itemID))
    tokens = dataset.field2id_token["item_id"][1:].astype(int)
    np.testing.assert_array_equal(dataset.modality_features["image"][1:].numpy(), image[tokens])


def bundled_pairs(name, phase):
    frame = pd.read_csv(bundled(name) / f"{name}.{phase}.inter", sep="\t", dtype=str)
    return list(zip(frame.iloc[:, 0], frame.iloc[:, 1]))


def test_real_tiktok_interactions_round_trip_through_both_formats(tmp_path):
    """The bundled TikTok split, rewritten in the MMSSL and the MMRec format, converts back exactly."""
    phases = ("train", "valid", "test")
    pairs = {phase: bundled_pairs("tiktok", phase) for phase in phases}
    users = sorted({u for p in pairs.values() for u, _ in p}, key=int)
    mmssl = {phase: {u: [] for u in users} for phase in phases}
    for phase in phases:
        for u, i in pairs[phase]:
            mmssl[phase][u].append(int(i))
    write_mmssl(tmp_path / "mmssl", mmssl, {})
    from_mmssl(str(tmp_path / "mmssl"), "tt_json", str(tmp_path / "data"))

    frame = pd.DataFrame([(u, i, k) for k, phase in enumerate(phases) for u, i in pairs[phase]],
                         columns=["userID", "itemID", "x_label"])
    (tmp_path / "mmrec").mkdir()
    frame.to_csv(tmp_path / "mmrec" / "tt.inter", sep="\t", index=False)
    from_mmrec(str(tmp_path / "mmrec" / "tt.inter"), "tt_mmrec", str(tmp_path / "data"))

    for name in ("tt_json", "tt_mmrec"):
        _, loaded = loaded_splits(base_config(tmp_path, name, cold_start_users="keep"))
        for phase in phases:
            assert loaded[phase] == sets_from_pairs(pairs[phase]), (name, phase)
    assert sum(map(len, pairs.values())) == 59541 + 3051 + 6130


@pytest.mark.skipif(not SHARED.is_dir(), reason="the project's data-src folder is not beside this checkout")
@pytest.mark.parametrize("name, src", [("tiktok", "tiktok-hkuds"), ("amazon-baby", "amazon-baby-hkuds-split"),
                                       ("amazon-sports", "amazon-sports-hkuds-split")])
def test_bundled_datasets_equal_their_sources(name, src):
    for phase, file in (("train", "train.json"), ("valid", "val.json"), ("test", "test.json")):
        source = json.loads((SHARED / src / file).read_text())
        expected = {u: {str(i) for i in items} for u, items in source.items() if items}
        assert sets_from_pairs(bundled_pairs(name, phase)) == expected


def test_install_features_through_an_item_map(tmp_path):
    folder = tmp_path / "data" / "mini"
    folder.mkdir(parents=True)
    (folder / "mini.feature_items").write_text("".join(f"{k}\n" for k in range(5)))
    other_ids = [3, 0, 4, 1, 2]  # the source file's row of item token k
    (folder / "mini.item_map.tsv").write_text(
        "item_id\tother_id\n" + "".join(f"{k}\t{o}\n" for k, o in enumerate(other_ids)))
    source = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.save(tmp_path / "image_feat.npy", source)
    assert main(["features", str(folder), "--feature", f"image={tmp_path / 'image_feat.npy'}",
                 "--rows-indexed-by", "other_id"]) == 0
    installed = np.load(folder / "mini.image.npy")
    for token, row in enumerate(other_ids):
        np.testing.assert_array_equal(installed[token], source[row])


def test_cli_reports_a_bad_split_label(tmp_path, capsys):
    (tmp_path / "bad.inter").write_text("userID\titemID\tx_label\n0\t1\t0\n0\t2\t7\n")
    with pytest.raises(SystemExit) as stop:
        main(["mmrec", str(tmp_path / "bad.inter"), "--name", "bad", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "bad.inter line 3: x_label is '7'; use 0, 1 or 2" in capsys.readouterr().err


def test_cli_reports_a_malformed_mmssl_list(tmp_path, capsys):
    write_mmssl(tmp_path / "src", {"train": {"0": [1, "x"]}, "valid": {}, "test": {}}, {})
    with pytest.raises(SystemExit) as stop:
        main(["mmssl", str(tmp_path / "src"), "--name", "bad", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "train.json: user 0 must map to a list of non-negative integer item ids" in capsys.readouterr().err
