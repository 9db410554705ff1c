"""MMSSL's relation rows (paper Eqs. 1 and 3) and the "real" rows the discriminator compares them
with (Gumbel-softened interactions plus the final embeddings' signal, paper Eq. 5). Only
batch-users x items blocks are dense; see docs/design.md for where the released code departs
from the paper.
"""

import torch

from recbole_mmssl.model.graphs import rownorm


def relation_rows(user_rows, items, entries, out=None):
    """rownorm((X_B Y^T) with the training entries zeroed): batch users' scores over all items.

    ``entries`` = (row, column) indices of the batch's training interactions. Without autograd
    the rows are computed in place (into ``out`` when given).
    """
    if torch.is_grad_enabled() and (user_rows.requires_grad or items.requires_grad):
        scores = (user_rows @ items.T).index_put(entries, user_rows.new_zeros(()))
        return rownorm(scores)
    scores = torch.mm(user_rows, items.T, out=out)
    scores.index_put_(entries, scores.new_zeros(()))
    return scores.div_(scores.norm(dim=-1, keepdim=True).clamp_min_(1e-12))


def real_rows(entries, ui_rows, tau, noise_scale, form, aux_weight, use_gumbel=True):
    """The rows the discriminator learns to call real (computed in place, without autograd):
    Gumbel-softened interactions plus ``aux_weight * ui_rows`` from the final embeddings,
    row-normalised.

    ``form`` "orig": softmax((R + s g) / tau) (reference code of Feb 2023, the paper's form);
    "head": softmax(R + (s / tau) g) (the later refactor's operator-precedence slip).
    Without the Gumbel transform (ablation w/o-GT) the raw interaction rows R are used.
    """
    ones = ui_rows.new_ones(())
    if use_gumbel:
        noise = torch.rand_like(ui_rows)
        noise.add_(1e-8).log_().neg_().add_(1e-8).log_().neg_()  # standard Gumbel samples g
        if form == "orig":
            soft = noise.mul_(noise_scale).index_put_(entries, ones, accumulate=True).div_(tau)
        else:
            soft = noise.mul_(noise_scale / tau).index_put_(entries, ones, accumulate=True)
        soft = torch.softmax(soft, dim=-1)
    else:
        soft = torch.zeros_like(ui_rows).index_put_(entries, ones)
    rows = soft.add_(ui_rows, alpha=aux_weight)
    return rows.div_(rows.norm(dim=-1, keepdim=True).clamp_min_(1e-12))
