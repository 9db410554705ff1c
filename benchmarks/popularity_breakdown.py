"""Where saved models win: hits split by the popularity of the target item (run by hand).

    python benchmarks/popularity_breakdown.py saved/LightGCN-*.pth saved/MMSSL-*.pth --phase test

For each checkpoint (any model this package runs): the share of held-out (user, item) pairs
whose item is in the user's top-k, separately for targets above and at or below the median
training popularity of the targets; the mean training popularity of the recommended items;
how many of them come from the k most popular items; and how many distinct items are
recommended. Rankings use the same masks as the evaluation (``test_masked_items``).
"""

import argparse
import os
import sys

import numpy as np
import torch

from recbole_mmssl.quick_start import load_data_and_model


def ranked(model_file, phase, k):
    """(name, training degree per item, top-k lists, (target item, hit) per held-out pair)."""
    config, model, dataset, train, valid, test = load_data_and_model(model_file)
    model.eval()
    degree = np.bincount(train._dataset.inter_feat[dataset.iid_field].numpy(), minlength=dataset.item_num)
    lists, pairs = [], []
    with torch.no_grad():
        for interaction, history, pos_u, pos_i in (valid if phase == "valid" else test):
            scores = model.full_sort_predict(interaction.to(model.device)).view(len(interaction), -1).cpu()
            scores[:, 0] = -np.inf
            scores[history] = -np.inf
            top = scores.topk(k, dim=1).indices
            lists.append(top.numpy())
            pairs.append(np.stack([pos_i.numpy(), (top[pos_u] == pos_i[:, None]).any(1).numpy()], 1))
    return config["model"], degree, np.concatenate(lists), np.concatenate(pairs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--phase", choices=["valid", "test"], default="test")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value flags
    k = args.k
    print(f"{'model':12s} {'hit@k head':>11s} {'hit@k tail':>11s} {'hit@k all':>10s} "
          f"{'rec. degree':>11s} {'from top-k pop':>14s} {'distinct':>8s}  checkpoint")
    for path in args.checkpoints:
        name, degree, lists, pairs = ranked(path, args.phase, k)
        target_degree = degree[pairs[:, 0]]
        median = np.median(target_degree)
        head, tail = target_degree > median, target_degree <= median
        most_popular = set(np.argsort(-degree)[:k].tolist())
        from_popular = np.mean([len(most_popular.intersection(row.tolist())) / k for row in lists])
        print(f"{name:12s} {pairs[head, 1].mean():11.4f} {pairs[tail, 1].mean():11.4f} {pairs[:, 1].mean():10.4f} "
              f"{degree[lists].mean():11.1f} {from_popular:14.2f} {len(np.unique(lists)):8d}  {os.path.basename(path)}")
    print(f"head/tail: target items above / at most the median training degree of the targets ({args.phase})")


if __name__ == "__main__":
    main()
