"""LATTICE: Mining Latent Structures for Multimedia Recommendation.

Zhang, Zhu, Liu, Wu, Wang, Wang. ACM MM 2021. Public code: https://github.com/CRIPAC-DIG/LATTICE
(``codes/Models.py``) and MMRec's port, https://github.com/enoche/MMRec ``src/models/lattice.py``.
The names (S̃, K, A, λ, α) are the LATTICE paper's.

The defaults follow MMRec's code, which produced the published MMRec numbers; where it departs
from the paper the paper's reading is an option where it changes the computation:

* graph mixing: the code normalises the mixed learned graph, (1-λ) N(Σ α_m K^m) + λ Σ α_m S̃^m;
  the paper mixes per modality, Σ α_m (λ S̃^m + (1-λ) N(K^m)) (``lattice_mix``; equal for one modality);
* learning the graph: the code rebuilds it with gradient at the first batch of each epoch and
  reuses it detached for the rest of the epoch; the paper learns it at every step (``graph_rebuild``);
* raw features are trainable tables in the code, fixed inputs in the paper (``freeze_features``);
* the code normalises the user-item graph as (D+I)^-1 (A+I), the kNN graphs by row sums on both
  sides, regularises the final batch vectors (½ Σ squared norms / batch size) and keeps PyTorch's
  default projection initialisation; the paper describes LightGCN's D^-1/2 A D^-1/2, D^-1/2 K D^-1/2,
  λ‖Θ‖² and Xavier. The code's forms are used, without options.

MMRec ran on torch 1.11, whose zero-filled gradients let Adam keep moving the graph's parameters
on the batches that reuse the graph; ``torch111_zero_grad`` emulates that.

The item graphs are kept as sparse (rows, cols, values) triples with I·k entries per modality:
the dense items x items matrices of the code are never formed.
"""

import torch
from recbole.utils import InputType
from torch import nn

from recbole_mmssl.model.graphs import (
    bpr_loss, coalesce_edges, cosine_values, knn_neighbours, lightgcn, node_adjacency, row_sum_normalise, rownorm,
    spmm_edges, training_edges)
from recbole_mmssl.model.abstract_recommender import MultiModalRecommender



def weighted_knn_graph(features, k):
    """LATTICE's N(K): the k most cosine-similar items of each item, itself included,
    weighted by the cosine and normalised by the row sums on both sides; (rows, cols, values)."""
    rows, cols, cosines = knn_neighbours(features, k)
    return rows, cols, row_sum_normalise(rows, cols, cosines, features.shape[0])


def concat_edges(graphs, weights):
    """Σ_t w_t G_t as one (rows, cols, values) list: the triples side by side, duplicates not summed."""
    rows = torch.cat([g[0] for g in graphs])
    cols = torch.cat([g[1] for g in graphs])
    values = torch.cat([w * g[2] for g, w in zip(graphs, weights)])
    return rows, cols, values


class LATTICE(MultiModalRecommender):
    """LATTICE: item-item graphs learned from projected modality features, mixed with the fixed
    kNN graphs of the raw features, smooth the item ID embeddings on top of a LightGCN backbone.

    Trained with BPR on (user, positive, negative) triples; the trainer calls
    :meth:`pre_epoch_processing` before each epoch, which schedules the graph rebuild.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset, trainable_features=not config["freeze_features"])
        self.embedding_size = config["embedding_size"]
        self.feat_embed_dim = config["feat_embed_dim"]
        self.knn_k = config["knn_k"]
        self.lambda_coeff = config["lambda_coeff"]
        self.n_layers = config["n_layers"]
        self.n_ui_layers = config["n_ui_layers"]
        self.cf_model = config["cf_model"]
        self.lattice_mix = config["lattice_mix"]
        self.graph_rebuild = config["graph_rebuild"]
        self.torch111_zero_grad = config["torch111_zero_grad"]
        self.reg_weight = config["reg_weight"]
        self.batch_size = config["train_batch_size"]

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.projections = nn.ModuleDict(
            {m: nn.Linear(self.features(m).shape[1], self.feat_embed_dim) for m in self.modalities})
        if len(self.modalities) > 1:  # modality weights α = softmax(ω), 1/M each at the start
            self.modal_logits = nn.Parameter(torch.full((len(self.modalities),), 0.5))
        else:  # one modality is not weighted
            self.modal_logits = None
        for m in self.modalities:  # S̃^m, from the features as loaded; never rebuilt, though they are trained
            with torch.no_grad():
                rows, cols, values = weighted_knn_graph(self.features(m), self.knn_k)
            self.register_buffer(f"original_index_{m}", torch.stack([rows, cols]), persistent=False)
            self.register_buffer(f"original_value_{m}", values, persistent=False)
        if self.cf_model == "lightgcn":
            users, items = training_edges(dataset, self.device)
            adjacency = node_adjacency(users, items, self.n_users, self.n_items, norm="random_walk")
            self.register_buffer("adjacency", adjacency, persistent=False)
        self._epoch_graph = None

    def original_graph(self, modality):
        """(rows, cols, values) of S̃^m = N(K^m) of the raw features, built in ``__init__``."""
        (rows, cols), values = getattr(self, f"original_index_{modality}"), getattr(self, f"original_value_{modality}")
        return rows, cols, values

    def modality_weights(self):
        """α = softmax(ω), or [1] for a single modality (where the code applies no weight)."""
        if self.modal_logits is None:
            return [1.0]
        return list(torch.softmax(self.modal_logits, dim=0))

    def item_graph(self):
        """The learned item graph A from the current parameters, as coalesced (rows, cols, values).

        Learned graphs: top-k neighbours of Z^m = X^m W_m^T + b_m found without gradient, the kept
        cosines recomputed with it, so gradients reach ω, W_m, b_m and X^m through the values and
        the row-sum degrees. A row whose weighted sum is not positive (possible, as cosines can be
        negative) gets zero entries: ``row_sum_normalise`` returns 0 there where the code's
        pow(-0.5) would give NaN.
        """
        n = self.n_items
        learned = []
        for m in self.modalities:
            z = self.projections[m](self.features(m))
            rows, cols, _ = knn_neighbours(z, self.knn_k)
            learned.append((rows, cols, cosine_values(z, rows, cols)))
        original = [self.original_graph(m) for m in self.modalities]
        alpha, lam = self.modality_weights(), self.lambda_coeff
        if self.lattice_mix == "code":
            rows, cols, values = concat_edges(learned, alpha)
            mixed_learned = (rows, cols, row_sum_normalise(rows, cols, values, n))
            graph = concat_edges([mixed_learned, concat_edges(original, alpha)], [1 - lam, lam])
        else:
            parts = []
            for (rows, cols, values), s, a in zip(learned, original, alpha):
                normalised = (rows, cols, row_sum_normalise(rows, cols, values, n))
                parts.append(concat_edges([s, normalised], [a * lam, a * (1 - lam)]))
            graph = concat_edges(parts, [1.0] * len(parts))
        return coalesce_edges(*graph, n)

    def pre_epoch_processing(self):
        """Called by the trainer before each epoch: the epoch's first batch rebuilds the item graph."""
        self._epoch_graph = None

    def load_state_dict(self, state_dict, strict=True):
        """Also drops the epoch's stored item graph, which the loaded parameters make stale."""
        self._epoch_graph = None
        return super().load_state_dict(state_dict, strict)

    def training_graph(self):
        """(A, whether it was rebuilt now, with gradient) for a training batch.

        ``graph_rebuild: epoch`` (code): the first batch after :meth:`pre_epoch_processing`
        rebuilds A with gradient and keeps it detached; later batches reuse it, so the graph's
        parameters get no gradient from them. ``batch`` (paper): rebuilt with gradient every batch.
        """
        if self.graph_rebuild == "batch" or self._epoch_graph is None:
            graph = self.item_graph()
            self._epoch_graph = tuple(t.detach() for t in graph)
            return graph, True
        return self._epoch_graph, False

    def item_graph_embeddings(self, graph):
        """H = A^{n_layers} E_i: the item graph convolution."""
        h = self.item_embedding.weight
        for _ in range(self.n_layers):
            h = spmm_edges(*graph, h)
        return h

    def propagate(self, graph):
        """Final (users, items) given the item graph: the backbone's item vectors plus
        the unit-length rows of H."""
        if self.cf_model == "lightgcn":
            users, items = lightgcn(self.adjacency, self.user_embedding.weight, self.item_embedding.weight,
                                    self.n_ui_layers)
        else:
            users, items = self.user_embedding.weight, self.item_embedding.weight
        return users, items + rownorm(self.item_graph_embeddings(graph))

    def final_embeddings(self):
        """Scoring vectors with A freshly built from the current parameters."""
        return self.propagate(self.item_graph())

    def graph_parameters(self):
        """The parameters only the item-graph rebuild reaches: ω, W_m, b_m and trainable X^m."""
        params = list(self.projections.parameters())
        if self.modal_logits is not None:
            params.append(self.modal_logits)
        if self.trainable_features:
            params.extend(self.feature_tables.values())
        return params

    def calculate_loss(self, interaction):
        """BPR plus reg_weight · ½(‖u‖² + ‖i+‖² + ‖i-‖²) / train_batch_size on the final vectors (MMRec's loss).

        With ``torch111_zero_grad``, batches that reuse the graph add 0 · Σ(graph parameters), so
        those parameters get zero rather than no gradients, and Adam's momentum keeps moving them
        as under MMRec's torch 1.11, whose ``zero_grad`` zero-filled gradients.
        """
        graph, rebuilt = self.training_graph()
        users, items = self.propagate(graph)
        u = users[interaction[self.USER_ID]]
        pos, neg = items[interaction[self.ITEM_ID]], items[interaction[self.NEG_ITEM_ID]]
        loss = bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))
        squared_norms = u.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum()
        loss = loss + self.reg_weight * 0.5 * squared_norms / self.batch_size
        if self.torch111_zero_grad and not rebuilt:
            loss = loss + 0.0 * sum(p.sum() for p in self.graph_parameters())
        return loss
