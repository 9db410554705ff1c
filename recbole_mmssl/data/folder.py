"""The dataset-folder layout, in one place.

A prepared dataset ``<parent>/<name>/`` holds

* ``<name>.{train,valid,test}.inter``: RecBole benchmark files (``benchmark_filename``), one
  ``user_id:token``, ``item_id:token`` pair a line, the split kept as published;
* ``<name>.<modality>.npy``: one float matrix per modality, row r for the item on line r of
* ``<name>.feature_items``: the item-token list that every modality's rows follow;
* optionally ``<name>.item_map.tsv``: item token -> ids of other releases (tab-separated).

Every file is written atomically (beside it, then moved over it). The per-user split rule of
MMRec (:func:`split_sizes`) also lives here, for datasets built from one interaction list.
"""

import os

import numpy as np

from recbole_mmssl.common.files import atomic_path, save_npy

PHASES = ("train", "valid", "test")


def inter_path(folder, name, phase):
    return os.path.join(folder, f"{name}.{phase}.inter")


def feature_path(folder, name, modality):
    return os.path.join(folder, f"{name}.{modality}.npy")


def token_list_path(folder, name):
    return os.path.join(folder, f"{name}.feature_items")


def item_map_path(folder, name):
    return os.path.join(folder, f"{name}.item_map.tsv")


def write_benchmark(folder, name, splits, user_field="user_id", item_field="item_id"):
    """Write ``splits`` (phase -> list of (user, item) tokens) as RecBole benchmark files."""
    os.makedirs(folder, exist_ok=True)
    for phase in PHASES:
        with atomic_path(inter_path(folder, name, phase)) as partial, \
                open(partial, "w", encoding="utf-8", newline="\n") as f:
            f.write(f"{user_field}:token\t{item_field}:token\n")
            f.writelines(f"{u}\t{i}\n" for u, i in splits[phase])


def write_token_list(folder, name, tokens):
    """Write the item-token list that the feature rows follow; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = token_list_path(folder, name)
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{t}\n" for t in tokens)
    return path


def write_features(folder, name, modality, matrix):
    """Write one modality's matrix (float32, rows in token-list order); returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = feature_path(folder, name, modality)
    save_npy(path, np.asarray(matrix, dtype=np.float32))
    return path


def split_sizes(n_items):
    """(train, valid, test) counts of a user with ``n_items`` items, MMRec's rule: vt = floor(0.2 n)
    held out, floor(vt / 2) for validation and the rest for test; fewer than 10 items: one of each
    (a user with fewer than 3 keeps every item in training)."""
    if n_items < 3:
        return n_items, 0, 0
    if n_items < 10:
        return n_items - 2, 1, 1
    held_out = n_items * 2 // 10
    return n_items - held_out, held_out // 2, held_out - held_out // 2


def random_user_split(pairs, seed):
    """phase -> (user, item) pairs: each user's items shuffled with ``seed``, cut by :func:`split_sizes`."""
    by_user = {}
    for user, item in pairs:
        by_user.setdefault(user, []).append(item)
    rng = np.random.default_rng(seed)
    splits = {phase: [] for phase in PHASES}
    for user in sorted(by_user, key=lambda u: (len(u), u)):
        items = sorted(set(by_user[user]), key=lambda i: (len(i), i))
        order = rng.permutation(len(items))
        n_train, n_valid, _ = split_sizes(len(items))
        shuffled = [items[k] for k in order]
        splits["train"].extend((user, i) for i in shuffled[:n_train])
        splits["valid"].extend((user, i) for i in shuffled[n_train:n_train + n_valid])
        splits["test"].extend((user, i) for i in shuffled[n_train + n_valid:])
    return splits
