"""A trained model's full rankings kept user by user, through RecBole's own evaluation machinery.

``Trainer.evaluate`` averages its metrics over users at once; paired tests and user groups
need the per-user values. :func:`collect_rankings` runs the same full-sort pass with the
trainer's collector and keeps which user each row belongs to and the held-out pairs;
:func:`per_user_metrics` applies RecBole's metric classes to it without averaging.
"""

from typing import NamedTuple

import numpy as np
import torch
from recbole.evaluator.register import metrics_dict


class Rankings(NamedTuple):
    """One pass over an evaluation split."""

    users: np.ndarray  # internal user id of each row
    struct: object  # RecBole's DataStruct, as the collector fills it for the configured metrics
    pairs: np.ndarray  # [n_pairs, 2]: (row, item id) of every held-out (user, item) pair
    top_items: np.ndarray  # [n_users, max(topk)] item ids ranked by score


@torch.no_grad()
def collect_rankings(trainer, eval_data):
    """Score every user of ``eval_data`` against all items, as ``Trainer.evaluate`` does."""
    trainer.model.eval()
    trainer.tot_item_num = eval_data._dataset.item_num
    if trainer.item_tensor is None:
        trainer.item_tensor = eval_data._dataset.get_item_feature().to(trainer.device)
    uid_field = eval_data._dataset.uid_field
    k = max(trainer.config["topk"])
    users, pairs, tops, offset = [], [], [], 0
    for batch in eval_data:
        interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
        trainer.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
        users.append(interaction[uid_field].cpu())
        pairs.append(torch.stack([positive_u.cpu() + offset, positive_i.cpu()], 1))
        tops.append(torch.topk(scores, k, dim=-1).indices.cpu())
        offset += len(interaction)
    trainer.eval_collector.model_collect(trainer.model)
    struct = trainer.eval_collector.get_data_struct()
    return Rankings(torch.cat(users).numpy(), struct, torch.cat(pairs).numpy(), torch.cat(tops).numpy())


PER_USER_METRICS = ("recall", "ndcg")


def per_user_metrics(config, rankings):
    """``{"recall@20": values per row, ...}`` for every cut-off in ``config['topk']``, by RecBole's
    metric classes (their ``metric_info``, before the mean over users)."""
    out = {}
    for name in PER_USER_METRICS:
        metric = metrics_dict[name.lower()](config)
        pos_index, pos_len = metric.used_info(rankings.struct)
        values = metric.metric_info(pos_index, pos_len)
        for k in config["topk"]:
            out[f"{name.lower()}@{k}"] = values[:, k - 1]
    return out
