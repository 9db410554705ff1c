"""FREEDOM: A Tale of Two Graphs, Freezing and Denoising Graph Structures for Multimodal
Recommendation.

Zhou, Shen. MM 2023. Public code followed: enoche/FREEDOM (the same model as MMRec's
src/models/freedom.py).

Where the public code departs from the paper (docs/design.md, 'The baselines'), this module follows the
code: each modality's binary kNN graph is normalised by its row sums on both sides, so every
entry is 1/k; the raw feature tables are trainable through the modality BPR term
(``freeze_features`` keeps them fixed); the loss has no L2 term. The item graph is built once,
in blocks, never as a dense items x items matrix; the edge pruning draws its edges by
exponential keys, the same distribution as the code's multinomial sampling without
replacement, and works beyond ``torch.multinomial``'s 2^24 categories. Only the batch's items
are projected (the code projects every item each batch; same loss and gradients).
"""

from logging import getLogger

import torch
from recbole.utils import InputType
from torch import nn

from recbole_mmssl.errors import InputError
from recbole_mmssl.model.graphs import (
    bpr_loss,
    knn_neighbours,
    lightgcn,
    node_adjacency,
    row_sum_normalise,
    training_edges,
)
from recbole_mmssl.model.abstract_recommender import MultiModalRecommender

IMAGE_TEXT_WEIGHTS = {"image": 0.1, "text": 0.9}  # the code's mm_image_weight for (image, text)


def modality_weights(modalities, weights=None):
    """alpha_m per modality: ``weights`` if given; the code's (0.1, 0.9) for image and text;
    otherwise 1/M each (no public value exists; logged)."""
    if weights is not None:
        if len(weights) != len(modalities) or abs(sum(weights) - 1) > 1e-6:
            raise InputError(f"Config key 'mm_weights' is {weights}; give one weight per modality "
                             f"{modalities}, summing to 1.")
        return dict(zip(modalities, weights))
    if sorted(modalities) == sorted(IMAGE_TEXT_WEIGHTS):
        return dict(IMAGE_TEXT_WEIGHTS)
    getLogger().info(f"FREEDOM: no published mm_weights for modalities {modalities}; using 1/M each.")
    return {m: 1 / len(modalities) for m in modalities}


def frozen_item_graph(tables, weights, k, n_items):
    """S = sum_m alpha_m N(B^m): B^m the binary kNN graph of modality m's features (self
    included, padding excluded), N the row-sum normalisation with the code's 1e-7; shared edges
    add up. A sparse [n_items, n_items] tensor."""
    rows, cols, values = [], [], []
    for m, table in tables.items():
        r, c, _ = knn_neighbours(table, k)
        rows.append(r)
        cols.append(c)
        values.append(weights[m] * row_sum_normalise(r, c, torch.ones(len(r), device=table.device), n_items, 1e-7))
    indices = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(indices, torch.cat(values), (n_items, n_items)).coalesce()


def degree_sensitive_sample(users, items, keep_ratio, generator=None):
    """Indices of floor(N * keep_ratio) edges drawn without replacement, each draw with
    probability proportional to 1/sqrt(d_u d_i) among the edges left (degrees of the full graph).

    Exponential keys E_e / w_e (E_e ~ Exp(1)); the smallest n_keep keys are such a draw
    (Efraimidis-Spirakis).
    """
    n_keep = int(len(users) * keep_ratio)
    user_deg = torch.bincount(users).float() + 1e-7
    item_deg = torch.bincount(items).float() + 1e-7
    weights = (user_deg[users] * item_deg[items]).rsqrt()
    keys = torch.empty(len(users), device=users.device).exponential_(generator=generator) / weights
    return torch.topk(keys, n_keep, largest=False).indices


class FREEDOM(MultiModalRecommender):
    """LightGCN on a degree-sensitively pruned user-item graph, plus a frozen item-item kNN
    graph from the features, added to the item embeddings; each modality's projected features
    also score the batch pairs in a BPR term."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset, trainable_features=not config["freeze_features"])
        self.embedding_size = config["embedding_size"]  # d, also the projections' width
        self.knn_k = config["knn_k"]  # neighbours per item in the frozen graphs
        self.n_mm_layers = config["n_mm_layers"]  # L_ii: propagation steps on the item graph
        self.n_ui_layers = config["n_ui_layers"]  # L_ui: LightGCN layers
        self.dropout = config["dropout"]  # rho: share of the training edges removed each epoch
        self.reg_weight = config["reg_weight"]  # lambda of the modality BPR terms
        weights = modality_weights(self.modalities, config["mm_weights"])

        self.edge_users, self.edge_items = training_edges(dataset, self.device)
        self.adjacency = node_adjacency(self.edge_users, self.edge_items, self.n_users, self.n_items)
        self.train_adjacency = self.adjacency
        self.item_graph = frozen_item_graph({m: self.features(m).detach() for m in self.modalities}, weights,
                                            self.knn_k, self.n_items)
        d = self.embedding_size
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.projections = nn.ModuleDict({m: nn.Linear(self.features(m).shape[1], d) for m in self.modalities})

    def pre_epoch_processing(self):
        """The epoch's pruned graph: the kept edges renormalised on their own degrees."""
        if self.dropout <= 0:
            self.train_adjacency = self.adjacency
            return
        kept = degree_sensitive_sample(self.edge_users, self.edge_items, 1 - self.dropout)
        self.train_adjacency = node_adjacency(self.edge_users[kept], self.edge_items[kept],
                                              self.n_users, self.n_items)

    def forward(self, adjacency):
        """(users, items): LightGCN readouts on ``adjacency``; items plus S^L_ii E_i, not normalised."""
        item_graph_part = self.item_embedding
        for _ in range(self.n_mm_layers):
            item_graph_part = torch.sparse.mm(self.item_graph, item_graph_part)
        users, items = lightgcn(adjacency, self.user_embedding, self.item_embedding, self.n_ui_layers)
        return users, items + item_graph_part

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        all_users, all_items = self.forward(self.train_adjacency)
        u = all_users[users]
        loss = bpr_loss((u * all_items[pos]).sum(-1), (u * all_items[neg]).sum(-1))
        if self.reg_weight:
            for m in self.modalities:
                z_pos = self.projections[m](self.features(m)[pos])
                z_neg = self.projections[m](self.features(m)[neg])
                loss = loss + self.reg_weight * bpr_loss((u * z_pos).sum(-1), (u * z_neg).sum(-1))
        return loss

    def final_embeddings(self):
        """Scores use the full training graph, never a pruned one."""
        return self.forward(self.adjacency)
