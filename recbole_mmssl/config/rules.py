"""Values derived from the training data: a preset may set a key to ``auto`` and let a rule compute it
from the dataset's statistics, so that one preset fits datasets of any size and density.

Each rule is one continuous, monotone formula with at most one constant, stated with its reason
in its docstring; docs/design.md lists the value each derives for the bundled datasets. The values are
resolved once the training split is known (:func:`resolve`, called by ``quick_start.prepare_data``)
and written into the configuration, so that logs and checkpoints hold the numbers, not ``auto``.
"""

import math
from logging import getLogger
from typing import NamedTuple

AUTO = "auto"


class Statistics(NamedTuple):
    """What the rules read, from the training split."""

    users: int  # users with training interactions
    items: int  # items of the catalogue (padding excluded)
    interactions: int  # training interactions

    @property
    def user_degree(self):
        return self.interactions / max(self.users, 1)

    @property
    def item_degree(self):
        return self.interactions / max(self.items, 1)


def statistics(train_dataset):
    """:class:`Statistics` of a RecBole training dataset."""
    users = int(train_dataset.inter_feat[train_dataset.uid_field].unique().numel())
    return Statistics(users, train_dataset.item_num - 1, len(train_dataset.inter_feat))


REACH_SHARE = 0.1


def reach(stats):
    """The share of the catalogue that one GNN layer mixes into an item.

    One layer takes an item to the items of its users: about d_i * d_u of them, with d_i and d_u
    the mean item and user degrees of the training split.
    """
    return stats.item_degree * stats.user_degree / max(stats.items, 1)


def softmax_share(stats):
    """The last GNN layer's softmax share s: 1 + ln(reach / 0.1), clipped to [0, 1].

    With the one-sided normalisation a row sums to sqrt(deg), so every layer multiplies an item by
    about the product of the mean square-root degrees: 4 on TikTok, 48 on MovieLens-100k. Where one
    layer already spans a tenth of the catalogue, a second unbounded layer adds nothing but that
    factor, and training diverges; the code's softmax bounds it (s = 1). Where one layer reaches
    far less, the second layer reaches further, and softmaxing it leaves the raw embeddings
    dominant and the model overfits (s = 0). In between, the share falls with the log of the
    reach, from 1 at a tenth to 0 at a tenth over e (3.7%), so that a small change in the data
    moves the model a little, never from one form to the other.
    """
    return min(1.0, max(0.0, 1.0 + math.log(max(reach(stats), 1e-12) / REACH_SHARE)))


RULES = {"softmax_share": softmax_share}


def resolve(config, train_dataset):
    """Replace every ``auto`` value of a ruled key in ``config`` by its rule's value; returns them."""
    wanted = [key for key in RULES if key in config.final_config_dict and config[key] == AUTO]
    if not wanted:
        return {}
    stats = statistics(train_dataset)
    values = {key: RULES[key](stats) for key in wanted}
    for key, value in values.items():
        config[key] = value
        config.origins[key] = f"the rule of {key} (config/rules.py) on {config['dataset']}'s training split"
    getLogger().info("Rules on %s (%d users, %d items, %d training interactions): %s", config["dataset"],
                     stats.users, stats.items, stats.interactions, ", ".join(f"{k} = {v:.4g}" for k, v in values.items()))
    return values
