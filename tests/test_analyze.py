"""analyze: user groups by activity, head/tail items, and RecBole's list metrics as configured."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct

from conftest import base_config, is_picture, write_dataset
from recbole_mmssl import run_recbole_mmssl
from recbole_mmssl.experiments.analyze import LIST_METRICS, analyze, user_groups
from recbole_mmssl.config import Config
from recbole_mmssl.quick_start import load_data_and_model
from recbole_mmssl.experiments.rankings import Rankings, per_user_metrics


def test_user_groups_by_boundaries_and_quartiles():
    counts = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    index, names = user_groups(counts, [0, 4, 6])
    assert names == ["[0, 4)", "[4, 6)", "[6, +)"]
    assert index.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    index, names = user_groups(counts)  # quartiles 1, 2.75, 4.5, 6.25 -> boundaries 1, 2, 4, 6
    assert names == ["[1, 2)", "[2, 4)", "[4, 6)", "[6, +)"]
    assert index.tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="leave out users with 1 training"):
        user_groups(counts, [4, 6, 9])  # the paper's Amazon groups without 0: users below 4 would vanish


def five_users():
    """Five users' top-3 lists over items 1..6 (7 with RecBole's padding) and their hits."""
    items = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 3, 5], [1, 2, 3], [2, 1, 6]])
    # hits at the ranks below, then the number of the user's held-out items
    topk = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 1], [1, 0, 1, 2], [0, 0, 1, 2], [0, 0, 1, 1]])
    struct = DataStruct()
    struct.set("rec.items", items)
    struct.set("rec.topk", topk)
    struct.set("data.num_items", 7)
    struct.set("data.count_items", {1: 10, 2: 6, 3: 3, 4: 2, 5: 1, 6: 1})
    return struct


def test_recbole_metrics_as_configured_on_five_users():
    config = Config(model="BPR", dataset="toy", config_dict={
        "data_path": "unused", "topk": [3], "metrics": ["Recall", "NDCG"] + LIST_METRICS})
    result = Evaluator(config).evaluate(five_users())
    log2 = math.log2
    assert result["recall@3"] == pytest.approx((1 + 0 + 1 + 0.5 + 1) / 5, abs=1e-4)
    ndcg = [(1 / log2(3)) / 1, 0, (1 + 1 / log2(4)) / (1 + 1 / log2(3)), (1 / log2(4)) / (1 + 1 / log2(3)), 1 / log2(4)]
    assert result["ndcg@3"] == pytest.approx(np.mean(ndcg), abs=1e-4)
    assert result["itemcoverage@3"] == pytest.approx(6 / 7, abs=1e-4)  # 6 distinct of 7 items
    popularity = [(10 + 6 + 3) / 3, (10 + 6 + 2) / 3, (10 + 3 + 1) / 3, (10 + 6 + 3) / 3, (6 + 10 + 1) / 3]
    assert result["averagepopularity@3"] == pytest.approx(np.mean(popularity), abs=1e-4)
    # recommended 5, 4, 3, 1, 1, 1 times; Gini over all 7 items sorted ascending, one never recommended
    counts, n = [0, 1, 1, 1, 3, 4, 5], 7
    gini = sum((2 * j - n - 1) * c for j, c in enumerate(counts, start=1)) / (n * 15)
    assert result["giniindex@3"] == pytest.approx(gini, abs=1e-4)
    shares = np.array([5, 4, 3, 1, 1, 1]) / 15
    assert result["shannonentropy@3"] == pytest.approx(-(shares * np.log(shares)).sum() / 6, abs=1e-4)
    # tail_ratio 0.8 (overall.yaml): the 4 least popular of 6 trained items, 5 and 6 (1), 4 (2), 3 (3)
    assert config["tail_ratio"] == 0.8
    assert result["tailpercentage@3"] == pytest.approx((1 + 1 + 2 + 1 + 1) / 15, abs=1e-4)

    rankings = Rankings(np.arange(5), five_users(), None, None)
    per_user = per_user_metrics(config, rankings)
    np.testing.assert_allclose(per_user["recall@3"], [1, 0, 1, 0.5, 1])
    np.testing.assert_allclose(per_user["ndcg@3"], ndcg, rtol=1e-6)


def activity_dataset(root):
    """User u<k> has 1 + k % 6 training items, one validation and one test item."""
    rng = np.random.default_rng(4)
    splits = {"train": [], "valid": [], "test": []}
    for u in range(12):
        items = rng.choice(30, size=3 + u % 6, replace=False)
        splits["train"] += [(f"u{u}", f"i{i}") for i in items[:1 + u % 6]]
        splits["valid"].append((f"u{u}", f"i{items[-2]}"))
        splits["test"].append((f"u{u}", f"i{items[-1]}"))
    write_dataset(root / "data", "activity", splits)
    return splits


def test_groups_and_items_of_a_saved_model(tmp_path, in_tmp):
    splits = activity_dataset(tmp_path)
    config = base_config(tmp_path, "activity", epochs=1, train_batch_size=16, embedding_size=8, topk=[10, 20])
    run_recbole_mmssl(model="BPR", config_dict=config)
    (checkpoint,) = (tmp_path / "saved").glob("*.pth")
    groups, items, lists = analyze([checkpoint], tmp_path / "out", boundaries=[0, 2, 4])
    assert groups["interactions"].tolist() == ["[0, 2)", "[2, 4)", "[4, +)"]
    assert groups["users"].tolist() == [2, 4, 6]  # 1 training item: u0, u6; 2-3: u1, u2, u7, u8; the rest

    # the same recall by a second route: the saved model's scores, ranked by hand
    cfg, model, dataset, _, _, test = load_data_and_model(checkpoint)
    token = {t: i for i, t in enumerate(dataset.field2id_token["item_id"])}
    user_of = {t: i for i, t in enumerate(dataset.field2id_token["user_id"])}
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"user_id": torch.arange(len(user_of))})).view(len(user_of), -1)
    hits = {}
    for u in range(12):
        row = scores[user_of[f"u{u}"]].clone()
        row[0] = -np.inf
        for _, item in (p for p in splits["train"] if p[0] == f"u{u}"):
            row[token[item]] = -np.inf
        top = set(torch.topk(row, 20).indices.tolist())
        hits[u] = float(token[splits["test"][u][1]] in top)
    by_group = [[hits[u] for u in range(12) if 1 + u % 6 < 2], [hits[u] for u in range(12) if 2 <= 1 + u % 6 < 4],
                [hits[u] for u in range(12) if 1 + u % 6 >= 4]]
    assert groups["recall@20"].tolist() == pytest.approx([np.mean(g) for g in by_group])

    assert items.set_index("items").loc["all", "pairs"] == 12
    assert items.set_index("items").loc["head", "pairs"] + items.set_index("items").loc["tail", "pairs"] == 12
    assert items.set_index("items").loc["all", "hit@20"] == pytest.approx(np.mean(list(hits.values())))
    assert {f"{m.lower()}@20" for m in LIST_METRICS} <= set(lists.columns)
    saved = pd.read_csv(tmp_path / "out" / "groups.csv")
    assert saved["users"].tolist() == [2, 4, 6]
    assert is_picture(tmp_path / "out" / "groups.png")
    labelled, _, _ = analyze([f"bpr={checkpoint}", str(checkpoint)], tmp_path / "labelled", boundaries=[0, 2, 4])
    assert labelled["run"].unique().tolist() == ["bpr", f"BPR ({checkpoint.stem})"]  # one file, two rows
    assert labelled["recall@20"].tolist() == groups["recall@20"].tolist() * 2

    # one tail_ratio for every checkpoint: the least popular half of the items by training count
    _, halves, _ = analyze([checkpoint], tmp_path / "halves", boundaries=[0, 2, 4], tail_ratio=0.5)
    trained = {}
    for _, item in splits["train"]:
        trained[token[item]] = trained.get(token[item], 0) + 1
    ranked = sorted(((trained.get(i, 0), i) for i in range(1, len(token))))
    tail_items = {i for _, i in ranked[:int((len(token) - 1) * 0.5)]}
    n_tail = sum(token[item] in tail_items for _, item in splits["test"])
    assert halves.set_index("items").loc["tail", "pairs"] == n_tail
    assert halves.set_index("items").loc["head", "pairs"] == 12 - n_tail
