"""MMSSL's building blocks: graph normalisation (spec §1.3; LightGCN's symmetric one as an
option), cross-modal attention (§3.4), GNN propagation (§3.6) and row normalisation.
Graphs are sparse COO tensors throughout.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def rownorm(x):
    """Each row divided by max(its L2 norm, 1e-12); zero rows stay zero."""
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


def _coalesced(users, items, values, n_users, n_items):
    """(rows, cols, values, user degrees, item degrees) of the edge list; duplicate edges add up."""
    device, dtype = values.device, values.dtype
    graph = torch.sparse_coo_tensor(torch.stack([users, items]), values, (n_users, n_items)).coalesce()
    (rows, cols), vals = graph.indices(), graph.values()
    user_deg = torch.zeros(n_users, device=device, dtype=dtype).index_add_(0, rows, vals)
    item_deg = torch.zeros(n_items, device=device, dtype=dtype).index_add_(0, cols, vals)
    return rows, cols, vals, user_deg, item_deg


def one_sided_graphs(users, items, values, n_users, n_items):
    """P = diag(rowdeg+1e-8)^-1/2 G (users x items) and Q = diag(coldeg+1e-8)^-1/2 G^T.

    ``G`` is the (user, item, value) edge list; duplicate edges add up. Empty rows stay zero.
    """
    rows, cols, vals, user_deg, item_deg = _coalesced(users, items, values, n_users, n_items)
    p_vals = vals * (user_deg[rows] + 1e-8).pow(-0.5)
    q_vals = vals * (item_deg[cols] + 1e-8).pow(-0.5)
    p = torch.sparse_coo_tensor(torch.stack([rows, cols]), p_vals, (n_users, n_items)).coalesce()
    q = torch.sparse_coo_tensor(torch.stack([cols, rows]), q_vals, (n_items, n_users)).coalesce()
    return p, q


def symmetric_graphs(users, items, values, n_users, n_items):
    """LightGCN's normalisation: P = D_u^-1/2 G D_i^-1/2 (users x items) and Q = P^T."""
    rows, cols, vals, user_deg, item_deg = _coalesced(users, items, values, n_users, n_items)
    norm_vals = vals * (user_deg[rows] * item_deg[cols]).pow(-0.5)
    p = torch.sparse_coo_tensor(torch.stack([rows, cols]), norm_vals, (n_users, n_items)).coalesce()
    q = torch.sparse_coo_tensor(torch.stack([cols, rows]), norm_vals, (n_items, n_users)).coalesce()
    return p, q


ADJACENCY_NORMS = {"one_sided": one_sided_graphs, "symmetric": symmetric_graphs}


def propagate(p, q, users, items, n_layers, last_softmax=True, alternating=True):
    """GNN propagation over the training graph; readout = mean of the L+1 layers (spec §3.6).

    ``alternating`` (the reference): H_U^l = P H_I^(l-1), then H_I^l = Q H_U^l, so a layer's
    items see that layer's users. Otherwise both sides update from layer l-1, as LightGCN does.
    ``last_softmax`` (the reference): the last layer is softmaxed over the embedding dimension
    (H_U before it is used for H_I when alternating).
    """
    user_layers, item_layers = [users], [items]
    for layer in range(1, n_layers + 1):
        soft = last_softmax and layer == n_layers
        new_users = torch.sparse.mm(p, items)
        if soft:
            new_users = torch.softmax(new_users, dim=-1)
        items = torch.sparse.mm(q, new_users if alternating else users)
        if soft:
            items = torch.softmax(items, dim=-1)
        users = new_users
        user_layers.append(users)
        item_layers.append(items)
    return torch.stack(user_layers).mean(0), torch.stack(item_layers).mean(0)


class CrossModalAttention(nn.Module):
    """Fuses M modality views [N, d] into one [N, d] (spec §3.4).

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
            raise ValueError(f"attention must be 'reference' or 'paper', not {mode!r}")
        if mode == "paper" and dim % n_heads:
            raise ValueError(f"embedding_size {dim} must be divisible by n_heads {n_heads} for paper attention")
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
