"""MMSSL's adversarial part at catalog scale (``discriminator: sampled``): a set critic that reads
a user's relation row at a few sampled columns, so that nothing grows faster than the items.

The exact critic (paper Eq. 4) reads the whole b x I relation and real rows through an I x I/4 layer. Here
every batch user gets one column set C_u shared by its real and fake rows: its training items
(up to ``critic_train_items``), the top ``critic_top_items`` columns of its final-embedding row
and of each modality row (the entries the rows are most about), and ``critic_random_items``
uniform items (the background). The critic embeds each (value, item, kind of column) and pools
over the set (DeepSets); its parameters depend on the embedding size, not on I. The rows'
values at C_u are exact: each row's L2 norm over all I items comes from the Gram matrix
(||X_u Y^T||^2 = X_u (Y^T Y) X_u^T, minus the masked training entries); the Gumbel softmax's
normaliser over the columns outside C_u uses the Gumbel expectation E[exp(t G)] = Gamma(1 - t)
instead of I fresh samples (the released code scales the noise by 1e-5). WGAN-GP is kept, its penalty
on the gradient with respect to the values the critic reads. Top-k columns are found block by
block, so neither the relation rows, the Gumbel rows nor the modality-graph top-k ever exist
as b x I blocks.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_mmssl.model.mmssl.discriminator import GP_SCALE

TRAINING_ITEM, TOP_ENTRY, RANDOM_ITEM = 0, 1, 2  # the kinds of column the critic is told
KINDS = 3


def blockwise_topk(user_rows, items, entries, k, block_size=8192):
    """Column indices of the top ``k`` of (user_rows @ items.T with the training ``entries`` set
    to 0), per row, computed over column blocks: the top-k of :func:`relation_rows` without the
    b x I block (row normalisation does not change the order)."""
    rows, cols = entries
    best_values = user_rows.new_empty(len(user_rows), 0)
    best_index = torch.empty(len(user_rows), 0, dtype=torch.long, device=user_rows.device)
    for start in range(0, len(items), block_size):
        scores = user_rows @ items[start:start + block_size].T
        inside = (cols >= start) & (cols < start + scores.shape[1])
        scores[rows[inside], cols[inside] - start] = 0
        values, index = scores.topk(min(k, scores.shape[1]), 1)  # the block's own top-k, then merged
        values, picked = torch.cat([best_values, values], 1).topk(min(k, best_values.shape[1] + values.shape[1]), 1)
        best_index = torch.cat([best_index, index + start], 1).gather(1, picked)
        best_values = values
    return best_index


def masked_row_norms(user_rows, items, entries, item_gram=None):
    """L2 norms of the rows of (user_rows @ items.T) with the training ``entries`` set to 0, from
    the d x d Gram matrix of the items (differentiable)."""
    gram = items.T @ items if item_gram is None else item_gram
    squares = ((user_rows @ gram) * user_rows).sum(1)
    rows, cols = entries
    observed = (user_rows[rows] * items[cols]).sum(1) ** 2
    squares = squares - torch.zeros_like(squares).index_add(0, rows, observed)
    return squares.clamp_min(0).sqrt().clamp_min(1e-12)


def relation_values(user_rows, items, columns, observed, norms):
    """The relation rows (paper Eq. 3) at ``columns`` (b x K item columns): score / row norm, 0 where
    ``observed`` (the column is one of the user's training items)."""
    scores = torch.einsum("bd,bkd->bk", user_rows, items[columns])
    return scores.masked_fill(observed, 0) / norms.unsqueeze(1)


def _gumbel(shape, like):
    noise = torch.rand(shape, device=like.device, dtype=like.dtype)
    return -torch.log(-torch.log(noise + 1e-8) + 1e-8)


def real_values(ui_values, ui_sum, ui_nonzero, observed, n_observed, n_items, tau, noise_scale, form,
                aux_weight, use_gumbel=True):
    """The real rows (paper Eq. 5) at the sampled columns, without the b x I block.

    ``ui_values``: the final-embedding relation row at the columns; ``ui_sum``: that row's sum
    over all I items; ``ui_nonzero``: whether the row is not all zero (then its norm is 1);
    ``observed``: whether each column is a training item; ``n_observed``: the user's training
    items. The soft rows are exact at the columns; their normaliser and norm over all I items use
    the Gumbel moments E[exp(t G)] = Gamma(1 - t) (exact when ``noise_scale`` is 0).
    """
    dtype = ui_values.dtype
    n_obs = n_observed.to(dtype)
    n_unobs = n_items - n_obs
    if use_gumbel:
        t = noise_scale / tau
        # an unobserved item's log-weight, the observed items' shifted to 0 (all 0 for a user without any)
        gap = 1.0 / tau if form == "orig" else 1.0
        base = torch.where(n_obs > 0, -gap, 0.0).to(dtype)
        moment1 = math.exp(math.lgamma(1 - t))
        moment2 = math.exp(math.lgamma(1 - 2 * t))
        logits = torch.where(observed, torch.zeros_like(ui_values), base.unsqueeze(1).expand_as(ui_values))
        normaliser = (n_obs + n_unobs * base.exp()) * moment1
        soft = (logits + t * _gumbel(ui_values.shape, ui_values)).exp() / normaliser.unsqueeze(1)
        soft_sq = (n_obs + n_unobs * (2 * base).exp()) * moment2 / normaliser ** 2
        cross = base.exp() * moment1 / normaliser * ui_sum  # <soft, ui>: ui is 0 on observed items
    else:
        soft, soft_sq, cross = observed.to(dtype), n_obs, torch.zeros_like(n_obs)
    norm = (soft_sq + aux_weight ** 2 * ui_nonzero.to(dtype) + 2 * aux_weight * cross).clamp_min(1e-24).sqrt()
    return (soft + aux_weight * ui_values) / norm.unsqueeze(1)


class SetCritic(nn.Module):
    """D(values at C_u) = scale * sigmoid(rho(mean over C_u of phi(value * sqrt(I), item, kind))),
    with phi = LeakyReLU(a * value + W item + kind embedding): DeepSets with a one-layer phi.

    Each column is seen as its value (times sqrt(I), so that a unit-norm row's entries are O(1)
    at any catalog size), its item's vector (the recommender's final embedding, detached) and
    its kind (training item, top entry, random item). The item part W item is the same for the
    real, fake and interpolated rows of a step: :meth:`embed` computes it once. The parameters
    grow with the embedding size and ``hidden``, not with the number of items.
    """

    def __init__(self, n_items, embedding_size, hidden=64, output_scale=100.0):
        super().__init__()
        self.value_scale = math.sqrt(n_items)
        self.value = nn.Linear(1, hidden)
        self.item = nn.Linear(embedding_size, hidden, bias=False)
        self.kind = nn.Embedding(KINDS, hidden)
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
        self.output_scale = output_scale

    def embed(self, item_vectors, columns, kinds):
        """The value-free part of each column, W item + kind embedding (b x K x hidden), from the
        vectors of all items (I x d; projected once, then gathered) and the columns' item indices."""
        return self.item(item_vectors)[columns] + self.kind(kinds)

    def forward(self, values, columns):
        """``values``: b x K values at the columns; ``columns``: their :meth:`embed` (b x K x hidden)."""
        h = F.leaky_relu(self.value(values.unsqueeze(-1) * self.value_scale) + columns, 0.2)
        return self.output_scale * torch.sigmoid(self.rho(h.mean(1))).squeeze(-1)


def set_gradient_penalty(critic, real, fake, columns):
    """GP_SCALE * mean over rows of (||d D(x_hat) / d x_hat|| - 1)^2 on the values at C_u."""
    alpha = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    mixed = torch.lerp(fake, real, alpha).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed, columns).sum(), mixed, create_graph=True)
    return GP_SCALE * ((grad.norm(2, dim=1) - 1) ** 2).mean()


def set_critic_loss(critic, real, fake, item_vectors, columns, kinds, gp_weight):
    """WGAN-GP critic loss on the sampled values (inputs detached)."""
    real, fake = real.detach(), fake.detach()
    columns = critic.embed(item_vectors, columns, kinds)
    return (-critic(real, columns).mean() + critic(fake, columns).mean()
            + gp_weight * set_gradient_penalty(critic, real, fake, columns))


def critic_columns(entries, n_rows, n_items, train_items, tops, random_items):
    """Each batch row's column set C_u: (columns, kinds, observed), each n_rows x K.

    ``train_items`` of the row's training items, drawn at random (slots of users with fewer
    become random items); the top-entry columns ``tops`` (n_rows x t blocks); ``random_items``
    uniform items. ``observed`` marks the columns that are the user's training items.
    """
    rows, cols = entries
    device = cols.device
    train = torch.randint(n_items, (n_rows, train_items), device=device)
    train_kind = torch.full((n_rows, train_items), RANDOM_ITEM, device=device)
    if len(rows) and train_items:
        order = torch.argsort(rows.double() + torch.rand(len(rows), device=device, dtype=torch.double))
        counts = torch.bincount(rows, minlength=n_rows)
        starts = torch.cumsum(counts, 0) - counts
        sorted_rows = rows[order]
        rank = torch.arange(len(rows), device=device) - starts[sorted_rows]
        keep = rank < train_items
        train[sorted_rows[keep], rank[keep]] = cols[order][keep]
        train_kind[sorted_rows[keep], rank[keep]] = TRAINING_ITEM
    top = torch.cat(tops, 1)
    random = torch.randint(n_items, (n_rows, random_items), device=device)
    columns = torch.cat([train, top, random], 1)
    kinds = torch.cat([train_kind, torch.full_like(top, TOP_ENTRY), torch.full_like(random, RANDOM_ITEM)], 1)
    keys = torch.arange(n_rows, device=device).unsqueeze(1) * n_items + columns
    observed = torch.isin(keys, rows * n_items + cols)
    return columns, kinds, observed


def column_sets(out, users, entries, modalities, n_items, sizes, graph_k=None):
    """Each batch user's column set C_u for the critic: the columns, their kinds, which are
    training items, and, with ``graph_k``, each modality's top-k columns for the modality graph
    (found in the same block-wise pass). ``out``: the recommender's forward output; ``sizes``:
    (``critic_train_items``, ``critic_top_items``, ``critic_random_items``). No autograd needed."""
    n_train, n_top, n_random = sizes
    tops = [blockwise_topk(out.user[users], out.item[1:], entries, n_top)]
    graph_tops = None if graph_k is None else {}
    for m in modalities:
        top = blockwise_topk(out.feat_user[m][users], out.feat_item[m][1:], entries, max(n_top, graph_k or 0))
        tops.append(top[:, :n_top])
        if graph_k is not None:
            graph_tops[m] = top[:, :graph_k]
    columns, kinds, observed = critic_columns(entries, len(users), n_items, n_train, tops, n_random)
    return {"columns": columns, "kinds": kinds, "observed": observed, "graph_tops": graph_tops}


def critic_inputs(out, users, entries, picked, modalities, real_rows=None):
    """What the critic reads at the ``picked`` columns (:func:`column_sets`): the fake rows' values
    (modalities stacked; differentiable where autograd is on), the real rows' values (where
    ``real_rows``, the real rows' settings (tau, noise_scale, form, aux_weight, use_gumbel), is
    given; the generator loss needs none), the item vectors, and the columns and their kinds
    repeated per modality."""
    columns, kinds, observed = picked["columns"], picked["kinds"], picked["observed"]
    ui_user, ui_item = out.user[users], out.item[1:]
    real = None
    if real_rows is not None:
        with torch.no_grad():
            real = _real_values_at(ui_user, ui_item, entries, columns, observed, real_rows)
    fake = []
    for m in modalities:
        user_rows, item_rows = out.feat_user[m][users], out.feat_item[m][1:]
        norms = masked_row_norms(user_rows, item_rows, entries)
        fake.append(relation_values(user_rows, item_rows, columns, observed, norms))
    n_modalities = len(modalities)
    return {"fake": torch.cat(fake), "real": real, "items": ui_item.detach(),
            "columns": columns.repeat(n_modalities, 1),
            "kinds": kinds.repeat(n_modalities, 1)}


def _real_values_at(ui_user, ui_item, entries, columns, observed, settings):
    """The real rows (paper Eq. 5) at the columns, from the final embeddings' relation rows."""
    rows, cols = entries
    norms = masked_row_norms(ui_user, ui_item, entries)
    values = relation_values(ui_user, ui_item, columns, observed, norms)
    observed_scores = (ui_user[rows] * ui_item[cols]).sum(1)
    row_sums = (ui_user @ ui_item.sum(0) - torch.zeros_like(norms).index_add(0, rows, observed_scores)) / norms
    return real_values(values, row_sums, norms > 1e-12, observed, torch.bincount(rows, minlength=len(ui_user)),
                       len(ui_item), *settings)
