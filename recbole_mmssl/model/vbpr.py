"""VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback.

He, McAuley. AAAI 2016. Public code followed: MMRec (enoche/MMRec, src/models/vbpr.py).

Where the public code departs from the paper (docs/design.md, 'The baselines'), this module follows the
code: the content is every modality concatenated in the order of ``modalities`` (the paper:
one visual vector); the projection has a bias, which is ranking-neutral; latent and content
factors are both ``embedding_size`` wide; no global, user or item biases (``use_bias: True``
adds the paper's item bias and visual bias); the regulariser is the unsquared Frobenius norm of
the batch vectors over the batch size; Adam on every positive once per epoch. Only the batch's
items are projected in training (the code projects every item each batch; same loss and
gradients).
"""

import torch
from recbole.utils import InputType
from torch import nn

from recbole_mmssl.model.graphs import bpr_loss, norm_loss
from recbole_mmssl.model.abstract_recommender import MultiModalRecommender


class VBPR(MultiModalRecommender):
    """Matrix factorisation whose item vectors are [ID embedding ; E x_i + c], x_i the item's
    content; users carry latent and content factors, p_u = [gamma_u ; theta_u]."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset, trainable_features=False)
        self.embedding_size = config["embedding_size"]  # d: latent and content factors each
        self.reg_weight = config["reg_weight"]  # lambda of the norm regulariser
        self.use_bias = config["use_bias"]  # the paper's item bias beta_i and visual bias beta' x_i

        d = self.embedding_size
        content_dim = sum(self.features(m).shape[1] for m in self.modalities)
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, 2 * d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.projection = nn.Linear(content_dim, d)
        nn.init.xavier_normal_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)
        if self.use_bias:
            self.item_bias = nn.Parameter(torch.zeros(self.n_items))
            self.visual_bias = nn.Parameter(torch.zeros(content_dim))

    def content(self, items=None):
        """x_i: the modalities' features side by side, for ``items`` (all items if None)."""
        tables = [self.features(m) if items is None else self.features(m)[items] for m in self.modalities]
        return torch.cat(tables, dim=1)

    def item_vectors(self, items=None):
        """q_i = [gamma_i ; E x_i + c] for ``items`` (all items if None)."""
        ids = self.item_embedding if items is None else self.item_embedding[items]
        return torch.cat([ids, self.projection(self.content(items))], dim=1)

    def item_biases(self, items=None):
        """beta_i + beta' x_i (use_bias), else None."""
        if not self.use_bias:
            return None
        bias = self.item_bias if items is None else self.item_bias[items]
        return bias + self.content(items) @ self.visual_bias

    def forward(self, users, items):
        """y_ui for the pairs (users[k], items[k])."""
        scores = (self.user_embedding[users] * self.item_vectors(items)).sum(-1)
        return scores if not self.use_bias else scores + self.item_biases(items)

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        p, q_pos, q_neg = self.user_embedding[users], self.item_vectors(pos), self.item_vectors(neg)
        pos_scores, neg_scores = (p * q_pos).sum(-1), (p * q_neg).sum(-1)
        if self.use_bias:
            pos_scores, neg_scores = pos_scores + self.item_biases(pos), neg_scores + self.item_biases(neg)
        return bpr_loss(pos_scores, neg_scores) + self.reg_weight * norm_loss(p, q_pos, q_neg)

    def final_embeddings(self):
        """(P, Q~), with the item biases as one more column (users get a column of ones)."""
        users, items = self.user_embedding, self.item_vectors()
        if self.use_bias:
            users = torch.cat([users, torch.ones_like(users[:, :1])], dim=1)
            items = torch.cat([items, self.item_biases().unsqueeze(1)], dim=1)
        return users, items
