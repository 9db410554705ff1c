"""Evaluation as MMSSL's reference reports it (docs/design.md, 'Evaluation'), as RecBole extensions.

* ``NDCG_ref``: the reference's NDCG, whose ideal DCG counts the hits found in the whole
  top-``max(topk)`` list instead of the user's number of ground-truth items. It is reported
  beside RecBole's standard ``NDCG``; both agree for users with one ground-truth item.
* ``test_masked_items``: which of a user's items are removed from the test ranking. The
  paper and MMRec remove only training items; RecBole removes training and validation items.
"""

import copy

import numpy as np
from recbole.evaluator import register
from recbole.evaluator.base_metric import TopkMetric


TEST_MASKS = ("train", "train_valid")


class ReferenceNDCG(TopkMetric):
    """NDCG@K with IDCG@K = sum_{j <= min(K, h)} 1 / log2(j + 1), h = hits in the top-max(topk).

    Registered as ``NDCG_ref``; with ``topk: [10, 20, 50]`` it matches the reference code.
    """

    name = "ndcg_ref"

    def calculate_metric(self, dataobject):
        pos_index, _ = self.used_info(dataobject)
        return self.topk_result(self.name, self.metric_info(pos_index))

    def metric_info(self, pos_index, pos_len=None):
        discount = 1.0 / np.log2(np.arange(2, pos_index.shape[1] + 2))
        dcg = np.cumsum(np.where(pos_index, discount, 0.0), axis=1)
        hits = pos_index.sum(axis=1)
        ideal_len = np.minimum(np.arange(1, pos_index.shape[1] + 1)[None, :], hits[:, None])
        ideal_cum = np.concatenate([[0.0], np.cumsum(discount)])
        idcg = ideal_cum[ideal_len]
        return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def register_metrics():
    """Make ``NDCG_ref`` known to RecBole's Config and Evaluator (idempotent)."""
    name = ReferenceNDCG.name
    register.metrics_dict[name] = ReferenceNDCG
    register.metric_information[name] = ReferenceNDCG.metric_need
    register.metric_types[name] = ReferenceNDCG.metric_type


def test_history_sampler(config, train_dataset, test_sampler):
    """The sampler whose used items form the test-time history mask.

    A full-ranking loader masks ``sampler.used_ids[u]`` minus the user's test items. RecBole's
    test-phase sampler has used the training and validation items; for the paper's protocol
    a copy is returned whose used items are the training items alone.
    """
    if config["test_masked_items"] == "train_valid":
        return test_sampler
    uid_field, iid_field = train_dataset.uid_field, train_dataset.iid_field
    used = np.array([set() for _ in range(train_dataset.user_num)])
    users = train_dataset.inter_feat[uid_field].numpy()
    items = train_dataset.inter_feat[iid_field].numpy()
    for user, item in zip(users, items):
        used[user].add(item)
    sampler = copy.copy(test_sampler)
    sampler.used_ids = used
    return sampler
