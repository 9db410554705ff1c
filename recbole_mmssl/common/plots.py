"""Pictures of runs and comparisons, drawn with matplotlib where it is installed.

Every caller writes its CSV first; a picture is an extra. Where matplotlib is missing, each
function logs why no picture was drawn and returns None.
"""

from logging import getLogger

import pandas as pd

from recbole_mmssl.common.files import atomic_path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        getLogger().warning("matplotlib is not installed: the CSV files are written, but no picture is drawn "
                            "(pip install matplotlib).")
        return None
    return plt


def learning_curves(csv_file, png_file, title):
    """One panel per loss part, one for the validation metrics at cut-off 20 (or all), against epochs."""
    plt = _pyplot()
    if plt is None:
        return None
    table = pd.read_csv(csv_file)
    losses = [c for c in table.columns if c.startswith("loss/")]
    metrics = [c for c in table.columns if c.startswith("valid/") and c.endswith("@20")] or \
        [c for c in table.columns if c.startswith("valid/")]
    panels = losses + (["valid"] if metrics else [])
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for column in (metrics if panel == "valid" else [panel]):
            ax.plot(table["epoch"], table[column], marker=".", label=column.split("/", 1)[1])
        ax.set_title(panel.split("/", 1)[-1], fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if panel == "valid":
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(png_file) as partial:
        fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)
    return png_file


def bar_chart(table, group, bars, value, png_file, title, error=None):
    """Grouped bars: one group per value of ``group``, one bar per value of ``bars``, height ``value``
    (with ``error`` bars where given)."""
    plt = _pyplot()
    if plt is None:
        return None
    groups = list(dict.fromkeys(table[group]))
    labels = list(dict.fromkeys(table[bars]))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) * max(1, len(labels) / 2)), 3.2))
    for j, label in enumerate(labels):
        rows = table[table[bars] == label].set_index(group).reindex(groups)
        ax.bar([g + j * width - 0.4 + width / 2 for g in range(len(groups))], rows[value], width,
               yerr=None if error is None else rows[error], capsize=3, label=str(label))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([str(g) for g in groups], fontsize=8)
    ax.set_ylabel(value, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png_file) as partial:
        fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)
    return png_file
