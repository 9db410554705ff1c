"""Synthetic catalogs for scale tests: power-law item popularity, random features, labelled synthetic.

``synthetic_catalog`` writes a dataset folder like ``prepare`` does (benchmark files split by
MMRec's per-user rule, one ``.npy`` per modality, the token list) whose name and ``SYNTHETIC``
file say that nothing in it is real. Item popularity follows a Zipf law (the item of rank r is
drawn with weight r^-alpha), user activity a milder one, and every user has at least three
interactions, so that each has a training, a validation and a test item.
"""

import os

import numpy as np

from recbole_mmssl.data.folder import random_user_split, write_benchmark, write_features, write_token_list
from recbole_mmssl.errors import InputError

# --n_items of the benchmark: (users, interactions), as the scale issue sets them
SCALES = {10_000: (20_000, 200_000), 100_000: (50_000, 1_000_000), 1_000_000: (100_000, 2_000_000)}
MIN_ITEMS_PER_USER = 3


def zipf_weights(n, alpha):
    weights = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    return weights / weights.sum()


def interactions(n_users, n_items, n_interactions, seed=0, item_alpha=0.7, user_alpha=0.5):
    """``n_interactions`` distinct (user, item) index pairs; every item at least once, every user
    at least three times, the rest drawn by Zipf popularity (items, in a random id order) and a
    milder Zipf activity (users)."""
    if n_items < 2 * MIN_ITEMS_PER_USER or n_interactions < n_items + MIN_ITEMS_PER_USER * n_users:
        raise InputError(f"A synthetic catalog of {n_items} items and {n_users} users needs at least "
                         f"{n_items + MIN_ITEMS_PER_USER * n_users} interactions, not {n_interactions}.")
    rng = np.random.default_rng(seed)
    item_rank, user_rank = rng.permutation(n_items), rng.permutation(n_users)
    item_p, user_p = zipf_weights(n_items, item_alpha), zipf_weights(n_users, user_alpha)

    def draw_items(size):
        return item_rank[rng.choice(n_items, size=size, p=item_p)]

    def draw_users(size):
        return user_rank[rng.choice(n_users, size=size, p=user_p)]

    users = np.concatenate([draw_users(n_items), np.repeat(np.arange(n_users), MIN_ITEMS_PER_USER)])
    items = np.concatenate([np.arange(n_items), draw_items(MIN_ITEMS_PER_USER * n_users)])
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    while True:
        user_counts = np.bincount(pairs[:, 0], minlength=n_users)
        short = np.repeat(np.nonzero(user_counts < MIN_ITEMS_PER_USER)[0], MIN_ITEMS_PER_USER)
        if len(pairs) >= n_interactions and not len(short):
            break
        extra = max(n_interactions - len(pairs), 0) * 11 // 10 + 1
        users = np.concatenate([short, draw_users(extra)])
        pairs = np.unique(np.concatenate([pairs, np.stack([users, draw_items(len(users))], 1)]), axis=0)
    return pairs[_trimmed(pairs, len(pairs) - n_interactions, rng)]


def _rank_within(groups, order):
    """For each element, its position among the elements of its group, in ``order``."""
    sorted_idx = np.lexsort((order, groups))
    starts = np.r_[0, np.flatnonzero(np.diff(groups[sorted_idx])) + 1]
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[sorted_idx] = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return ranks


def _trimmed(pairs, surplus, rng):
    """Mask that drops ``surplus`` random pairs, never a user's first three or an item's first
    pair in a random order, so every user keeps three and every item one."""
    order = rng.permutation(len(pairs))
    protected = (_rank_within(pairs[:, 0], order) < MIN_ITEMS_PER_USER) | (_rank_within(pairs[:, 1], order) < 1)
    keep = np.ones(len(pairs), dtype=bool)
    keep[rng.permutation(np.flatnonzero(~protected))[:surplus]] = False
    return keep


def synthetic_catalog(out, n_items, n_users=None, n_interactions=None, dims=None, seed=0):
    """Write ``<out>/synthetic-<n_items>/``; returns (folder, dataset name).

    ``n_users`` and ``n_interactions`` default to the benchmark's :data:`SCALES`; ``dims``
    (modality -> width) to two 128-d modalities.
    """
    if n_users is None or n_interactions is None:
        if n_items not in SCALES:
            raise InputError(f"No default scale for {n_items} items ({sorted(SCALES)}); give users and interactions.")
        n_users, n_interactions = SCALES[n_items]
    dims = dims or {"image": 128, "text": 128}
    name = f"synthetic-{n_items}"
    folder = os.path.join(out, name)
    pairs = interactions(n_users, n_items, n_interactions, seed)
    splits = random_user_split([(str(u), str(i)) for u, i in pairs.tolist()], seed)
    write_benchmark(folder, name, splits)
    write_token_list(folder, name, range(n_items))
    rng = np.random.default_rng(seed + 1)
    for modality, dim in dims.items():
        write_features(folder, name, modality, rng.random((n_items, dim), dtype=np.float32))
    with open(os.path.join(folder, "SYNTHETIC"), "w", encoding="utf-8") as f:
        f.write(f"Synthetic: {n_users} users, {n_items} items, {len(pairs)} interactions (Zipf popularity), "
                f"random features {dims}, seed {seed}. Nothing here is real data.\n")
    return folder, name


def dataset_config(name, dims=None):
    """Config keys that load a synthetic catalog (it has no properties file)."""
    dims = dims or {"image": 128, "text": 128}
    return {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "load_col": {"inter": ["user_id", "item_id"]},
            "benchmark_filename": ["train", "valid", "test"], "modalities": list(dims),
            "feature_dims": {m: [d] for m, d in dims.items()}}
