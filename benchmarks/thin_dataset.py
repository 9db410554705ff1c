"""Thinned copies of a prepared dataset, to test a density rule across densities (run by hand, not by CI).

    python benchmarks/thin_dataset.py dataset/ml-100k --fractions 0.1 0.15 0.25 0.4 0.6 --out thinned

Each copy ``<out>/<name>-thin<percent>/`` keeps a seeded random share of the rows of every split
file (every user keeps at least one training row), the same items and the same feature files,
and prints its statistics and the value ``softmax_share: auto`` derives from them. Keeping a
share f of the rows scales both mean degrees by f, so the reach of one GNN layer
(``recbole_mmssl.config.rules.reach``) falls with f squared while the items, their content
and the users stay the same. docs/results.md, 'The softmax rule across densities', used these.
Run a thinned copy with a config file that sets ``data_path: <out>`` and the dataset's own keys
(``benchmark_filename``, ``modalities``, ``feature_dims``, ...).
"""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recbole_mmssl.config.rules import Statistics, reach, softmax_share  # noqa: E402

SPLITS = ("train", "valid", "test")


def thin(source, fraction, out, seed):
    """Write the thinned copy of ``source`` keeping ``fraction`` of its rows; returns its folder and statistics."""
    name = source.name
    target = out / f"{name}-thin{round(fraction * 100):02d}"
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in SPLITS:
        rows = pd.read_csv(source / f"{name}.{split}.inter", sep="\t", dtype=str)
        keep = rng.random(len(rows)) < fraction
        if split == "train":
            user = rows.columns[0]
            kept_any = pd.Series(keep).groupby(rows[user].values).transform("any").values
            keep |= ~rows.duplicated(user).values & ~kept_any
        rows[keep].to_csv(target / f"{target.name}.{split}.inter", sep="\t", index=False)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".inter") and path.name.startswith(name + "."):
            shutil.copy(path, target / (target.name + path.name[len(name):]))
    train = pd.read_csv(target / f"{target.name}.train.inter", sep="\t", dtype=str)
    items_file = source / f"{name}.feature_items"
    items = (sum(1 for _ in open(items_file)) if items_file.exists()
             else pd.concat(pd.read_csv(source / f"{name}.{s}.inter", sep="\t", dtype=str).iloc[:, 1]
                            for s in SPLITS).nunique())
    return target, Statistics(train.iloc[:, 0].nunique(), items, len(train))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a prepared dataset folder <dir>/<name>/ with <name>.train.inter, ...")
    parser.add_argument("--fractions", type=float, nargs="+", required=True, help="shares of rows to keep, in (0, 1]")
    parser.add_argument("--out", type=Path, default=Path("thinned"), help="folder for the copies")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    missing = [f"{args.source.name}.{s}.inter" for s in SPLITS if not (args.source / f"{args.source.name}.{s}.inter").exists()]
    if missing:
        parser.exit(2, f"error: {args.source} lacks {', '.join(missing)}: pass a prepared dataset folder.\n")
    bad = [f for f in args.fractions if not 0 < f <= 1]
    if bad:
        parser.exit(2, f"error: --fractions must lie in (0, 1], got {bad}.\n")
    print("| dataset | users | items | training interactions | d_u | d_i | reach | softmax_share |")
    print("|---|---|---|---|---|---|---|---|")
    for fraction in args.fractions:
        target, stats = thin(args.source, fraction, args.out, args.seed)
        print(f"| {target.name} | {stats.users} | {stats.items} | {stats.interactions} | {stats.user_degree:.1f} "
              f"| {stats.item_degree:.1f} | {reach(stats):.3g} | {softmax_share(stats):.2f} |")


if __name__ == "__main__":
    main()
