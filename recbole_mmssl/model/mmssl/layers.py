"""MMSSL's own layers: GNN propagation (paper Eq. 10) and cross-modal attention (paper Eq. 9).
The graph normalisations they use are shared with the baselines in :mod:`recbole_mmssl.model.graphs`.
"""

import math

import torch
from torch import nn

from recbole_mmssl.errors import InputError
from recbole_mmssl.model.graphs import rownorm


LAST_LAYER_NORMS = {"softmax": lambda x: torch.softmax(x, dim=-1), "l2": rownorm, "none": None}


def last_layer_map(last_norm, softmax_share=1.0):
    """The map applied to the last layer's rows, or None. With ``softmax``, ``softmax_share`` s
    blends it with the identity: s softmax(x) + (1 - s) x; s = 1 is the softmax itself and s = 0
    no map at all, both exactly."""
    if last_norm != "softmax" or softmax_share == 1:
        return LAST_LAYER_NORMS[last_norm]
    if softmax_share == 0:
        return None
    return lambda x: softmax_share * torch.softmax(x, dim=-1) + (1 - softmax_share) * x


def propagate(p, q, users, items, n_layers, last_norm="softmax", alternating=True, readout="mean",
              softmax_share=1.0):
    """GNN propagation over the training graph; readout = mean of the L+1 layers (paper Eq. 10), or
    the last layer alone (``readout`` "last").

    ``p`` and ``q``: sparse tensors or :class:`recbole_mmssl.model.graphs.SparseOperator`.

    ``alternating`` (the reference): H_U^l = P H_I^(l-1), then H_I^l = Q H_U^l, so a layer's
    items see that layer's users. Otherwise both sides update from layer l-1, as LightGCN does.
    ``last_norm`` maps each row of the last layer (H_U before it is used for H_I when
    alternating): ``softmax`` over the embedding dimension (the reference), ``l2`` to unit
    length, or ``none``; ``softmax_share`` blends the softmax with the identity
    (:func:`last_layer_map`).
    """
    norm = last_layer_map(last_norm, softmax_share)
    user_layers, item_layers = [users], [items]
    for layer in range(1, n_layers + 1):
        last = norm is not None and layer == n_layers
        new_users = p @ items
        if last:
            new_users = norm(new_users)
        items = q @ (new_users if alternating else users)
        if last:
            items = norm(items)
        users = new_users
        user_layers.append(users)
        item_layers.append(items)
    if readout == "last":
        return users, items
    return torch.stack(user_layers).mean(0), torch.stack(item_layers).mean(0)


class CrossModalAttention(nn.Module):
    """Fuses M modality views [N, d] into one [N, d] (paper Eq. 9).

    ``reference``: what MMSSL's code computes. Its attention weights cancel, so each view goes
    through one shared linear map, concat(H copies) @ W_c, and the results are averaged. W_c
    stays an (H*d) x d parameter so that Adam trains it as the reference does.
    ``paper``: real multi-head attention across modalities: per head, softmax over modalities
    of scaled query-key products, values = the views; heads concatenated, projected by W_c,
    averaged over modalities.
    """

    def __init__(self, dim, n_heads, mode):
        super().__init__()
        if mode not in ("reference", "paper"):
            raise InputError(f"attention must be 'reference' or 'paper', not {mode!r}")
        if mode == "paper" and dim % n_heads:
            raise InputError(f"embedding_size {dim} must be divisible by n_heads {n_heads} for paper attention")
        self.dim, self.n_heads, self.mode = dim, n_heads, mode
        self.w_c = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_heads * dim, dim)))
        if mode == "paper":
            self.w_q = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, dim)))
            self.w_k = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, dim)))

    def forward(self, views):
        """``views``: list of M tensors [N, d]; returns [N, d]."""
        stacked = torch.stack(views)  # M x N x d
        if self.mode == "reference":
            shared = self.w_c.view(self.n_heads, self.dim, self.dim).sum(0)
            return (stacked @ shared).mean(0)
        m, n, d = stacked.shape
        weights = self.attention_weights(stacked)  # N x H x M(query) x M(key)
        heads = torch.einsum("nhmk,knd->mnhd", weights, stacked)
        return (heads.reshape(m, n, self.n_heads * d) @ self.w_c).mean(0)

    def attention_weights(self, stacked):
        """Paper mode: [N, H, M, M] weights over key modalities for stacked views [M, N, d]."""
        m, n, d = stacked.shape
        h, dh = self.n_heads, d // self.n_heads
        queries = (stacked @ self.w_q).view(m, n, h, dh)
        keys = (stacked @ self.w_k).view(m, n, h, dh)
        return torch.softmax(torch.einsum("mnhe,knhe->nhmk", queries, keys) / math.sqrt(dh), dim=-1)
