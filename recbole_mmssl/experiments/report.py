"""The pieces of a report that the tools share: markdown tables, paired tests over users, and the
labels of checkpoint files named on a command line."""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from recbole_mmssl.errors import InputError

PAIRED_METRICS = ("recall@20", "ndcg@20")


def pooled_user_scores(per_user):
    """label -> DataFrame (index: user token) of each paired metric averaged over the seeds."""
    pooled = {}
    for label, runs in per_user.items():
        frames = [pd.DataFrame({m: run[m] for m in PAIRED_METRICS}, index=run["users"]) for run in runs]
        pooled[label] = pd.concat(frames).groupby(level=0).mean()
    return pooled


def paired_tests(pooled, baseline):
    """For each label against ``baseline``: paired t-test and Wilcoxon p-values per paired metric."""
    rows = []
    base = pooled[baseline]
    for label, scores in pooled.items():
        if label == baseline:
            continue
        common = base.index.intersection(scores.index)
        row = {"label": label, "users": len(common)}
        for metric in PAIRED_METRICS:
            a, b = scores.loc[common, metric].to_numpy(), base.loc[common, metric].to_numpy()
            row[f"{metric} mean diff"] = float(np.mean(a - b))
            row[f"{metric} t-test p"] = float(stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
            row[f"{metric} Wilcoxon p"] = float(stats.wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
        rows.append(row)
    return pd.DataFrame(rows)


def checkpoint_labels(items):
    """(label or None, file) of each ``[LABEL=]FILE`` argument.

    An argument that is an existing file is a file, even with ``=`` in its path (Ray's trial
    folders have them). Unlabelled files that share a name (every compare run's and search
    trial's checkpoint is ``model.pth``) get the shortest path ending that tells them apart.
    """
    pairs = []
    for item in map(str, items):
        label, sep, file = item.partition("=")
        if Path(item).is_file() or not sep or "/" in label:
            label, file = "", item
        pairs.append((label, file))
    unlabelled = [file for label, file in pairs if not label]
    depth = 1
    while depth < 64 and len({Path(*Path(f).parts[-depth:]) for f in unlabelled}) < len(unlabelled):
        depth += 1
    labels = []
    for label, file in pairs:
        if not label and unlabelled.count(file) == 1 and \
                sum(Path(f).name == Path(file).name for f in unlabelled) > 1:
            label = str(Path(*Path(file).with_suffix("").parts[-depth:]))
        labels.append(label or None)
    named = [label for label in labels if label]
    if len(set(named)) < len(named):
        raise InputError(f"Checkpoint labels repeat: {named}; give each file its own LABEL=FILE.")
    return [(label, file) for label, (_, file) in zip(labels, pairs)]


def markdown_table(frame):
    """A pandas DataFrame as a markdown table (floats to four decimals, small ones in three significant digits)."""
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule] + body)


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)
