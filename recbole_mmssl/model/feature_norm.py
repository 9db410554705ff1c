"""Item feature tables as a multimodal model takes them: the ``feature_norm`` choices.

Raw features can sit far from the origin (TikTok's image features have mean 2.69 per
dimension), which a linear encoder first has to cancel. The model normalises its own feature
buffers when it is built, so that a search can vary the choice. Row 0 is RecBole's padding
item: it is left out of every statistic and stays zero.
"""

import torch


FEATURE_NORMS = ("none", "standardize", "l2")


def normalise_features(table, method):
    """(normalised copy of ``table``, statistics of the real rows before and after, for the log).

    ``none``: ``table`` itself and no statistics. ``standardize``: zero mean and unit variance
    per column over the real items; columns with zero variance become 0. ``l2``: each real row
    scaled to unit L2 norm (zero rows stay zero).
    """
    if method == "none":
        return table, {}
    real = table[1:].double()
    stats = {"mean": real.mean().item(), "row_norm": real.norm(dim=1).mean().item()}
    out = table.clone()
    if method == "standardize":
        mean, std = real.mean(0), real.std(0, unbiased=False)
        constant = std == 0
        scaled = (real - mean) / torch.where(constant, torch.ones_like(std), std)
        scaled[:, constant] = 0.0
        out[1:] = scaled.to(table.dtype)
        stats["constant_columns"] = int(constant.sum())
    elif method == "l2":
        out[1:] = torch.nn.functional.normalize(real, dim=1).to(table.dtype)
    stats.update(mean_after=out[1:].double().mean().item(), row_norm_after=out[1:].double().norm(dim=1).mean().item())
    return out, stats
