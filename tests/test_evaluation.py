"""The reference NDCG and the test-mask protocol switch, on hand-worked examples."""

import math

import numpy as np
import pytest
import torch
from recbole.evaluator.metrics import NDCG
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType

from conftest import base_config, write_dataset
from recbole_mmssl.config import Config
from recbole_mmssl.evaluation import ReferenceNDCG
from recbole_mmssl.utils import create_dataset, data_preparation, get_trainer


def metric(cls, topk):
    return cls({"topk": topk, "metric_decimal_place": 6})


def test_reference_ndcg_counts_hits_in_the_whole_list():
    """Hits at ranks 3 and 31, four ground-truth items (checked against the released code): 0.3066 vs RecBole's 0.1952."""
    pos = np.zeros((1, 50), dtype=bool)
    pos[0, [2, 30]] = True
    ref = metric(ReferenceNDCG, [20, 50]).metric_info(pos)
    std = metric(NDCG, [20, 50]).metric_info(pos, np.array([4]))
    dcg20 = 1 / math.log2(4)
    assert ref[0, 19] == pytest.approx(dcg20 / (1 + 1 / math.log2(3)))
    assert ref[0, 19] == pytest.approx(0.3066, abs=1e-4)
    assert std[0, 19] == pytest.approx(dcg20 / sum(1 / math.log2(j + 1) for j in range(1, 5)))
    assert std[0, 19] == pytest.approx(0.1952, abs=1e-4)
    assert ref[0, 49] == pytest.approx((dcg20 + 1 / math.log2(32)) / (1 + 1 / math.log2(3)))


def test_reference_ndcg_single_hit_at_rank_one_and_no_hits():
    pos = np.zeros((2, 50), dtype=bool)
    pos[0, 0] = True
    ref = metric(ReferenceNDCG, [10]).metric_info(pos)
    np.testing.assert_allclose(ref[0], 1.0)
    np.testing.assert_allclose(ref[1], 0.0)


class FixedScores(GeneralRecommender):
    """Scores every user's items by one fixed per-item vector (set by the test)."""

    input_type = InputType.PAIRWISE
    type = ModelType.GENERAL
    item_scores = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def calculate_loss(self, interaction):
        return self.unused.sum()

    def predict(self, interaction):
        return self.item_scores[interaction[self.ITEM_ID]]

    def full_sort_predict(self, interaction):
        return self.item_scores.repeat(len(interaction[self.USER_ID]))


def protocol_result(tmp_path, mask):
    """User x: train {a, b}, valid {c}, test {d}; fixed scores rank c > d > a > b > the rest."""
    splits = {"train": [("x", "a"), ("x", "b"), ("y", "e"), ("y", "f")],
              "valid": [("x", "c"), ("y", "g")],
              "test": [("x", "d")]}
    write_dataset(tmp_path / "data", "hand", splits)
    config = Config(model=FixedScores, config_dict=base_config(
        tmp_path, "hand", test_masked_items=mask, metrics=["Recall", "NDCG"], topk=[1, 2],
        valid_metric="Recall@1"))
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    order = {"c": 5.0, "d": 4.0, "a": 3.0, "b": 2.0}
    scores = torch.zeros(dataset.item_num)
    for token, value in order.items():
        scores[dataset.token2id("item_id", token)] = value
    FixedScores.item_scores = scores
    model = FixedScores(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "FixedScores")(config, model)
    history = test.uid2history_item[dataset.token2id("user_id", "x")]
    masked = set(dataset.id2token("item_id", history.numpy()))
    return masked, trainer.evaluate(test, load_best_model=False)


def test_paper_protocol_masks_only_training_items(tmp_path, in_tmp):
    masked, result = protocol_result(tmp_path, "train")
    assert masked == {"a", "b"}
    assert result["recall@1"] == 0 and result["recall@2"] == 1
    assert result["ndcg@2"] == pytest.approx(1 / math.log2(3), abs=1e-4)


def test_recbole_protocol_also_masks_validation_items(tmp_path, in_tmp):
    masked, result = protocol_result(tmp_path, "train_valid")
    assert masked == {"a", "b", "c"}
    assert result["recall@1"] == 1 and result["ndcg@1"] == 1


def test_unknown_protocol_is_refused(tmp_path, in_tmp):
    with pytest.raises(ValueError, match="test_masked_items.*'train'.*'train_valid'"):
        protocol_result(tmp_path, "valid")
