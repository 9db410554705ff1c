"""BM3: Bootstrap Latent Representations for Multi-modal Recommendation.

Zhou, Zhou, Zhang, Liu, Zhang, Wang, Miao. WWW 2023. Public code followed: enoche/BM3 (the same
model as MMRec's src/models/bm3.py).

Where the public code departs from the paper (docs/design.md, 'The baselines'), this module follows the
code: the graph layers are LightGCN's (no self-loops, weights or nonlinearity); the loss is
L_rec + reg_weight L_reg + cl_weight (L_align + L_mask) with cl_weight 2; the regulariser is the
unsquared Frobenius norm of all users' and items' readouts over the number of items; the raw
feature tables are trainable (``freeze_features`` keeps them fixed). The dropout targets, the
predictor and the modality projections are computed for the batch rows only (the code does all
rows; the masks are independent per row, so the loss has the same distribution).
"""

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mmssl.model.graphs import lightgcn, node_adjacency, norm_loss, training_edges
from recbole_mmssl.model.abstract_recommender import MultiModalRecommender


def cosine_distance(online, target):
    """Mean over rows of 1 - cos(online, target); the target carries no gradient."""
    return (1 - F.cosine_similarity(online, target.detach(), dim=-1)).mean()


class BM3(MultiModalRecommender):
    """LightGCN embeddings and projected item features, trained without negatives: a shared
    predictor maps each online view onto dropout-perturbed, stop-gradient targets of the
    other side (user <-> item), of the item embedding (inter-modality alignment) and of the
    modality itself (masked reconstruction)."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset, trainable_features=not config["freeze_features"])
        self.embedding_size = config["embedding_size"]  # d
        self.n_layers = config["n_layers"]  # LightGCN layers L
        self.dropout = config["dropout"]  # p: drop probability of the targets' masks
        self.reg_weight = config["reg_weight"]  # lambda_reg
        self.cl_weight = config["cl_weight"]  # lambda_cl, weight of L_align + L_mask

        users, items = training_edges(dataset, self.device)
        self.adjacency = node_adjacency(users, items, self.n_users, self.n_items, "symmetric")
        d = self.embedding_size
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.projections = nn.ModuleDict()
        for m in self.modalities:
            self.projections[m] = nn.Linear(self.features(m).shape[1], d)
            nn.init.xavier_normal_(self.projections[m].weight)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)

    def forward(self):
        """(H_u, H_i): LightGCN mean readouts; items also get their ID embedding back (residual)."""
        users, items = lightgcn(self.adjacency, self.user_embedding, self.item_embedding, self.n_layers)
        return users, items + self.item_embedding

    def modality(self, m, items):
        """Z^m for ``items``: the projected features."""
        return self.projections[m](self.features(m)[items])

    def target(self, x):
        """A stop-gradient target: ``x`` under a fresh dropout mask."""
        with torch.no_grad():
            return F.dropout(x.detach(), self.dropout, training=True)

    def calculate_loss(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        h_users, h_items = self.forward()
        h_u, h_i = h_users[users], h_items[items]
        target_u, target_i = self.target(h_u), self.target(h_i)
        online_u, online_i = self.predictor(h_u), self.predictor(h_i)
        rec = cosine_distance(online_u, target_i) + cosine_distance(online_i, target_u)
        align, mask = 0.0, 0.0
        for m in self.modalities:
            z = self.modality(m, items)
            online_z = self.predictor(z)
            align = align + cosine_distance(online_z, target_i)
            mask = mask + cosine_distance(online_z, self.target(z))
        reg = norm_loss(h_users, h_items)
        return rec + self.reg_weight * reg + self.cl_weight * (align + mask)

    def final_embeddings(self):
        """P(H_u), P(H_i): scores are the predictor's outputs' dot products."""
        users, items = self.forward()
        return self.predictor(users), self.predictor(items)
