"""Where trained models win: users grouped by activity, items split by popularity.

    python -m recbole_mmssl.analyze saved/MMSSL-a.pth saved/LightGCN-b.pth
    python -m recbole_mmssl.analyze improved=runs/a/model.pth lightgcn=runs/b/model.pth
    python -m recbole_mmssl.analyze saved/MMSSL-a.pth --user_groups 0,4,6,9,13   # the paper's Table 4 groups

For each checkpoint, on the test split (``--phase valid`` for validation), with the masks of
the evaluation (``test_masked_items``):

* users grouped by their number of training interactions (the quartiles, or the boundaries
  given): group size, Recall@K and NDCG@K;
* held-out items split by training popularity into head and tail as RecBole's
  ``TailPercentage`` splits them (``tail_ratio``, one value for every checkpoint; items never
  trained on count as the least popular): how many pairs, and the hit rate@K of each;
* RecBole's own metrics of the recommendation lists: ItemCoverage, AveragePopularity,
  GiniIndex, ShannonEntropy and TailPercentage, beside Recall and NDCG.

Writes ``analysis.md``, ``groups.csv``, ``items.csv``, ``lists.csv`` and ``groups.png`` to
``--output`` (default ``analysis/``).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recbole.evaluator.metrics import TailPercentage

from recbole_mmssl.common.files import save_csv, write_text
from recbole_mmssl.common.plots import bar_chart
from recbole_mmssl.config import plugin_default
from recbole_mmssl.errors import InputError, add_debug_flag, reported_input_errors
from recbole_mmssl.experiments.rankings import collect_rankings, per_user_metrics
from recbole_mmssl.experiments.report import checkpoint_labels, markdown_table
from recbole_mmssl.quick_start import load_trainer

LIST_METRICS = ["ItemCoverage", "AveragePopularity", "GiniIndex", "ShannonEntropy", "TailPercentage"]


def user_groups(counts, boundaries=None):
    """Group index per user and the groups' names: half-open ranges [b_j, b_j+1) of training
    interaction counts, the last one open; by default the quartiles of ``counts``."""
    if boundaries is None:
        boundaries = np.unique(np.quantile(counts, [0, 0.25, 0.5, 0.75]).astype(int))
    boundaries = sorted(int(b) for b in boundaries)
    if len(counts) and min(counts) < boundaries[0]:
        raise InputError(f"User group boundaries {boundaries} leave out users with {min(counts)} training "
                         f"interactions; start them at {min(counts)} or lower (e.g. --user_groups 0,...).")
    edges = list(boundaries) + [np.inf]
    names = [f"[{lo}, {hi})" if np.isfinite(hi) else f"[{lo}, +)" for lo, hi in zip(edges[:-1], edges[1:])]
    index = np.searchsorted(np.array(boundaries), counts, side="right") - 1
    return index, names


def group_boundaries(text):
    """``--user_groups 0,4,6,9,13``: increasing non-negative integers."""
    try:
        boundaries = [int(b) for b in text.split(",")]
    except ValueError:
        boundaries = None
    if not boundaries or any(b < 0 for b in boundaries) or sorted(set(boundaries)) != boundaries:
        raise InputError(f"--user_groups {text!r}: write increasing non-negative integers separated by commas, "
                         "such as 0,4,6,9,13.")
    return boundaries


def analyze_checkpoint(path, phase="test", k=20, boundaries=None, label=None, tail_ratio=None):
    """(label, group table, item table, list-metric row) of one saved model.

    ``tail_ratio`` replaces the checkpoint's own, so that every model is split alike (default:
    the plugin's current ``tail_ratio``).
    """
    def list_metrics(config):
        if k not in config["topk"]:
            raise InputError(f"--k {k} is not one of the checkpoint's cut-offs topk {config['topk']}.")
        return {"metrics": list(dict.fromkeys(list(config["metrics"]) + LIST_METRICS)),
                "tail_ratio": tail_ratio if tail_ratio is not None else plugin_default("tail_ratio")}

    trainer, (train, valid, test) = load_trainer(path, list_metrics)
    config = trainer.config
    rankings = collect_rankings(trainer, valid if phase == "valid" else test)
    label = label or f"{config['model']} ({Path(path).stem})"

    lists = {"run": label, **{key: float(v) for key, v in trainer.evaluator.evaluate(rankings.struct).items()
                             if key.endswith(f"@{k}")}}
    per_user = per_user_metrics(config, rankings)
    counter = train._dataset.user_counter
    counts = np.array([counter.get(u, 0) for u in rankings.users])
    index, names = user_groups(counts, boundaries)
    groups = pd.DataFrame({"group": index, "recall": per_user[f"recall@{k}"], "ndcg": per_user[f"ndcg@{k}"]})
    groups = groups.groupby("group").agg(users=("recall", "size"), recall=("recall", "mean"), ndcg=("ndcg", "mean"))
    groups = groups.reindex(range(len(names)), fill_value=0).reset_index(drop=True)
    groups.insert(0, "interactions", names)
    groups.insert(0, "run", label)
    groups = groups.rename(columns={"recall": f"recall@{k}", "ndcg": f"ndcg@{k}"})

    counter = train._dataset.item_counter  # items never trained on count 0: the least popular
    count_items = {item: counter.get(item, 0) for item in range(1, train._dataset.item_num)}
    targets = rankings.pairs[:, 1]
    tail = TailPercentage(config).get_tail(targets[:, None], count_items)[:, 0].astype(bool)
    hits = (rankings.top_items[rankings.pairs[:, 0], :k] == targets[:, None]).any(1)
    items = pd.DataFrame([{"run": label, "items": name, "pairs": int(mask.sum()),
                           f"hit@{k}": float(hits[mask].mean()) if mask.any() else float("nan")}
                          for name, mask in (("head", ~tail), ("tail", tail), ("all", np.ones_like(tail)))])
    return label, groups, items, lists


def analyze(paths, output="analysis", phase="test", k=20, boundaries=None, tail_ratio=None):
    """Analyse every checkpoint and write the tables and the group chart; returns the three tables."""
    parts = [analyze_checkpoint(file, phase, k, boundaries, label, tail_ratio)
             for label, file in checkpoint_labels(paths)]
    groups = pd.concat([p[1] for p in parts], ignore_index=True)
    items = pd.concat([p[2] for p in parts], ignore_index=True)
    lists = pd.DataFrame([p[3] for p in parts])
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_csv(output / "groups.csv", groups)
    save_csv(output / "items.csv", items)
    save_csv(output / "lists.csv", lists)
    text = [f"# Analysis ({phase}, K = {k})", "", "Users by training interactions:", "", markdown_table(groups), "",
            "Held-out pairs by item popularity (RecBole's tail_ratio split):", "", markdown_table(items), "",
            "Recommendation lists (RecBole's metrics):", "", markdown_table(lists)]
    write_text(output / "analysis.md", "\n".join(text) + "\n")
    bar_chart(groups, "interactions", "run", f"recall@{k}", output / "groups.png",
              f"Recall@{k} by users' training interactions ({phase})")
    return groups, items, lists


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="[LABEL=]FILE")
    parser.add_argument("--phase", choices=["valid", "test"], default="test")
    parser.add_argument("--k", type=int, default=20, help="cut-off (one of the checkpoint's topk)")
    parser.add_argument("--user_groups", default=None, help="group boundaries, e.g. 0,4,6,9,13 (default: quartiles)")
    parser.add_argument("--tail_ratio", type=float, default=None,
                        help="head/tail split for every checkpoint (default: tail_ratio of properties/overall.yaml)")
    parser.add_argument("--output", default="analysis")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value flags

    with reported_input_errors(args.debug):
        boundaries = group_boundaries(args.user_groups) if args.user_groups else None
        analyze(args.checkpoints, args.output, args.phase, args.k, boundaries, args.tail_ratio)
    print((Path(args.output) / "analysis.md").read_text(encoding="utf-8"))
    print(f"Written: {args.output}/analysis.md, groups.csv, items.csv, lists.csv, groups.png")

