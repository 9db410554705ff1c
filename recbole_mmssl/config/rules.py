"""Values derived from the training data: a preset may set a key to ``auto`` and let a rule compute it
from the dataset's statistics, so that one preset fits datasets of any size and density.

Each rule is one monotone formula with at most one constant, stated with its reason in its
docstring; docs/design.md lists the value each derives for the bundled datasets. The values are
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
    train_batch_size: int

    @property
    def user_degree(self):
        return self.interactions / max(self.users, 1)

    @property
    def item_degree(self):
        return self.interactions / max(self.items, 1)

    @property
    def steps_per_epoch(self):
        return self.interactions // self.train_batch_size + 1


def statistics(train_dataset, config):
    """:class:`Statistics` of a RecBole training dataset."""
    users = int(train_dataset.inter_feat[train_dataset.uid_field].unique().numel())
    return Statistics(users, train_dataset.item_num - 1, len(train_dataset.inter_feat), config["train_batch_size"])


REACH_SHARE = 0.1
MAX_LAYERS = 4  # the paper's range of GNN layers (1 to 4)


def gnn_layers(stats):
    """GNN layers: one more than the fewest layers whose reach holds a tenth of the catalogue.

    One layer takes an item to the items of its users: about d_i * d_u items, with d_i and d_u
    the mean item and user degrees, so L layers mix about (d_i d_u)^L items into an item's
    representation. On dense data one layer already spans the catalogue and more layers only
    smooth every item towards the same vector; on sparse data a single layer sees a few dozen
    items. The released code softmaxes the last layer over its dimensions, which bounds it, so
    the layers before it carry the propagation: L = 1 + ceil(ln(share * I) / ln(d_i d_u)), at
    least 1 + 1, with share = 0.1, and at most the paper's 4.
    """
    branching = stats.item_degree * stats.user_degree
    if branching <= 1:  # the reach never grows: as deep as the paper goes
        return MAX_LAYERS
    reaching = max(1, math.ceil(math.log(REACH_SHARE * stats.items) / math.log(branching)))
    return min(MAX_LAYERS, 1 + reaching)


RULES = {"n_layers": gnn_layers}


def resolve(config, train_dataset):
    """Replace every ``auto`` value of a ruled key in ``config`` by its rule's value; returns them."""
    wanted = [key for key in RULES if key in config.final_config_dict and config[key] == AUTO]
    if not wanted:
        return {}
    stats = statistics(train_dataset, config)
    values = {key: RULES[key](stats) for key in wanted}
    for key, value in values.items():
        config[key] = value
        config.origins[key] = f"the rule of {key} (config/rules.py) on {config['dataset']}'s training split"
    getLogger().info("Rules on %s (%d users, %d items, %d training interactions): %s", config["dataset"],
                     stats.users, stats.items, stats.interactions, ", ".join(f"{k} = {v}" for k, v in values.items()))
    return values
