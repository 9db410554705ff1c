"""MMSSL: Multi-Modal Self-Supervised Learning for Recommendation.

Wei, Huang, Xia, Zhang. WWW 2023. Reference code: https://github.com/HKUDS/MMSSL (MMSSL/).
Equations are the paper's; docs/design.md describes where the released code departs from it.
"""

from logging import getLogger
from typing import NamedTuple

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mmssl.common import distributed
from recbole_mmssl.data.dataloader import UserBatchDataLoader
from recbole_mmssl.errors import InputError
from recbole_mmssl.model.graphs import (ADJACENCY_NORMS, OperatorCache, one_sided_graphs, rownorm, training_edges,
                                       with_mean_row_sum)
from recbole_mmssl.model.mmssl.discriminator import Discriminator, discriminator_loss, generator_loss
from recbole_mmssl.model.mmssl.layers import CrossModalAttention, propagate
from recbole_mmssl.model.mmssl.modality_graph import ModalityGraph
from recbole_mmssl.model.mmssl.relation_rows import real_rows, relation_rows
from recbole_mmssl.model.mmssl.sampled_critic import (SetCritic, blockwise_topk, column_sets, critic_inputs,
                                                      set_critic_loss)
from recbole_mmssl.model.abstract_recommender import MultiModalRecommender

# The four paper-vs-code switches that default to ~ and follow ``variant`` (docs/design.md); the
# presets' other keys are in properties/model/MMSSL.yaml (``presets``).
VARIANTS = {
    "reference": {"attention": "reference", "d_negative_slope": 1.0, "graph_update": "batch",
                  "graph_pairing": "reference"},
    "paper": {"attention": "paper", "d_negative_slope": 0.01, "graph_update": "full", "graph_pairing": "aligned"},
}
VARIANTS["improved"] = VARIANTS["reference"]  # its changes are in the yaml presets
PRECISIONS = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_variant(config):
    """The four paper-vs-code switches: each one's own key if set, else the ``variant`` preset."""
    variant = config["variant"]
    if variant not in VARIANTS:
        raise InputError(f"Config key 'variant' is {variant!r}; use one of {sorted(VARIANTS)}.")
    return {key: default if config[key] is None else config[key] for key, default in VARIANTS[variant].items()}


class MMSSLOutput(NamedTuple):
    """One forward pass over all users and items: what the losses and the evaluation read."""

    user: torch.Tensor  # E*_U, final user embeddings [n_users, d]
    item: torch.Tensor  # E*_I, final item embeddings [n_items, d]
    feat_user: dict  # modality -> F_U^m [n_users, d]
    feat_item: dict  # modality -> F_I^m [n_items, d]
    view_user: dict  # modality -> Y_U^m, modality-aware ID views [n_users, d]


class MMSSL(MultiModalRecommender):
    """MMSSL: modality-aware GNN recommender trained with adversarial and contrastive
    self-supervision. Train it with :class:`recbole_mmssl.trainer.MMSSLTrainer`, which
    alternates the discriminator step and the recommender step on user-based batches.
    """

    input_type = InputType.PAIRWISE
    train_dataloader = UserBatchDataLoader
    supports_distributed = True  # trains in several processes (recbole_mmssl.common.distributed)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        switches = resolve_variant(config)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.feat_dropout = config["feat_dropout"]
        self.id_weight = config["id_weight"]
        self.mm_weight = config["mm_weight"]
        self.own_content_weight = config["own_content_weight"]
        self.emb_reg_weight = config["emb_reg_weight"]
        self.feat_reg_weight = config["feat_reg_weight"]
        self.cl_weight = config["cl_weight"]
        self.cl_temperature = config["cl_temperature"]
        self.g_weight = config["g_weight"]
        # the real rows (paper Eq. 5): Gumbel temperature and noise scale, formula, final-embedding weight, on/off
        self.real_row_settings = (config["gumbel_tau"], config["gumbel_noise_scale"], config["gumbel_form"],
                                  config["aux_weight"], config["use_gumbel"])
        self.gp_weight = config["gp_weight"]
        self.use_adversarial = config["use_adversarial"]
        self.use_contrastive = config["use_contrastive"]
        self.graph_update = switches["graph_update"]
        self.last_layer_norm = config["last_layer_norm"]
        self.softmax_share = config["softmax_share"]
        self.alternating = config["propagation"] == "alternating"
        self.readout = config["readout"]
        self.shared_forward = config["shared_forward"]
        self._shared = None  # the discriminator step's batch, forward output and critic columns (shared_forward)

        self.n_real_items = self.n_items - 1  # internal item 0 is RecBole's padding
        self._init_graphs(dataset, config["adjacency_norm"], config["propagation_gain"])

        d = self.embedding_size
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.encoders = nn.ModuleDict()
        for m, table in dataset.modality_features.items():
            self.encoders[m] = nn.Linear(table.shape[1], d)
            nn.init.xavier_uniform_(self.encoders[m].weight)
        self.attention = CrossModalAttention(d, config["n_heads"], switches["attention"])
        self.sampled = config["discriminator"] == "sampled"
        if self.sampled:
            self.discriminator = SetCritic(self.n_real_items, d, config["critic_hidden"], config["d_output_scale"])
            self.critic_items = (config["critic_train_items"], config["critic_top_items"],
                                 config["critic_random_items"])
        else:
            self.discriminator = Discriminator(
                self.n_real_items,
                dropout=tuple(config["d_dropout"]),
                negative_slope=switches["d_negative_slope"],
                output_scale=config["d_output_scale"],
                dtype=PRECISIONS.get(config["mixed_precision"]),
            )

        k = int(self.n_real_items * config["graph_topk_rate"])
        self.modality_graph = ModalityGraph(
            self.modalities, self.n_users, self.n_items, (self.train_p, self.train_q), k,
            config["graph_period"], switches["graph_pairing"], self.graph_update)
        self.other_parameter_name = ["modality_graph"]
        self._warn_degenerate_graph(k, config["graph_period"])
        self._warn_slow_precision(config["mixed_precision"])

    def _warn_degenerate_graph(self, k, period):
        logger = getLogger()
        if self.graph_update == "batch" and k == 0:
            logger.warning(
                f"graph_topk_rate gives k = floor({self.n_real_items} * rate) = 0 semantic neighbours: the "
                "modality graphs are empty after the first rebuild, so the modality views are zero and the "
                "contrastive loss is a constant (the contrastive branch is off, as in the reference's "
                "Amazon-Baby setting). Raise graph_topk_rate or set graph_update: full to use it.")
        elif self.graph_update == "batch" and period == 1 and k > 0:
            logger.warning(
                "graph_period = 1: each rebuild uses the pairs of one batch and every other rebuild finds none, "
                "so the modality graphs are empty for most batches and at evaluation (reference behaviour, "
                "docs/design.md, 'Modality graphs'). Set graph_update: full for graphs over all users.")

    def _warn_slow_precision(self, precision):
        if self.device.type != "cpu":
            return
        if precision == "fp16":
            getLogger().warning("mixed_precision: fp16 on a CPU is emulated and slow; use bf16 on CPUs.")
        native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)()
        if precision == "bf16" and not native_bf16:
            getLogger().warning("This CPU has no native bfloat16 support: mixed_precision: bf16 may be slower.")

    def _init_graphs(self, dataset, adjacency_norm, gain=None):
        """Training graph P, Q (one-sided normalisation, docs/design.md), the GNN's graph (P, Q or LightGCN's symmetric
        normalisation) and the CSR arrays that give each batch its entries of R."""
        self.operators = OperatorCache()  # CSR copies of the graphs for the forward pass's products
        users, items = training_edges(dataset, self.device)
        ones = torch.ones(len(users), device=self.device)
        self.train_p, self.train_q = one_sided_graphs(users, items, ones, self.n_users, self.n_items)
        self.gnn_p, self.gnn_q = (self.train_p, self.train_q) if adjacency_norm == "one_sided" else \
            ADJACENCY_NORMS[adjacency_norm](users, items, ones, self.n_users, self.n_items)
        if gain is not None:
            self.gnn_p, self.gnn_q = with_mean_row_sum(self.gnn_p, gain), with_mean_row_sum(self.gnn_q, gain)
        indptr = torch.zeros(self.n_users + 1, dtype=torch.long, device=self.device)
        indptr[1:] = torch.cumsum(torch.bincount(users, minlength=self.n_users), 0)
        self.register_buffer("train_indptr", indptr, persistent=False)
        self.register_buffer("train_indices", items, persistent=False)

    def train_entries(self, users):
        """(row, column) indices of the training interactions of ``users`` in a [b, n_real_items]
        block (column = item id - 1): the sparse form of R_B."""
        users = users.to(self.train_indptr.device)
        starts, ends = self.train_indptr[users], self.train_indptr[users + 1]
        counts = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        first = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
        cols = self.train_indices[first + torch.arange(len(rows), device=users.device)] - 1
        return rows, cols

    def forward(self):
        """All users' and items' representations (paper Eqs. 2, 8-10, 12), in the module's train/eval mode.

        An item's modality representation is its users' mean content (Q P f): its own features f weigh
        about 1/(d_u d_i) in it. ``own_content_weight`` adds rownorm(f) itself to the final items."""
        graphs = self.operators
        graphs.refresh([self.train_p, self.train_q, self.gnn_p, self.gnn_q,
                        *(g for pair in self.modality_graph.graphs.values() for g in pair)])
        own, feat_user, feat_item, view_user, view_item = {}, {}, {}, {}, {}
        for m in self.modalities:
            own[m] = features = F.dropout(self.encoders[m](self.features(m)), self.feat_dropout, self.training)
            feat_user[m] = graphs[self.train_p] @ features
            feat_item[m] = graphs[self.train_q] @ feat_user[m]
            graph_p, graph_q = self.modality_graph.graphs[m]
            view_user[m] = graphs[graph_p] @ self.item_embedding.weight
            view_item[m] = graphs[graph_q] @ self.user_embedding.weight
        fused_user = self.attention([view_user[m] for m in self.modalities])
        fused_item = self.attention([view_item[m] for m in self.modalities])
        users0 = self.user_embedding.weight + self.id_weight * rownorm(fused_user)
        items0 = self.item_embedding.weight + self.id_weight * rownorm(fused_item)
        users, items = propagate(graphs[self.gnn_p], graphs[self.gnn_q], users0, items0, self.n_layers,
                                 self.last_layer_norm, self.alternating, self.readout, self.softmax_share)
        users = users + self.mm_weight * sum(rownorm(feat_user[m]) for m in self.modalities)
        items = items + self.mm_weight * sum(rownorm(feat_item[m]) for m in self.modalities)
        if self.own_content_weight:
            items = items + self.own_content_weight * sum(rownorm(own[m]) for m in self.modalities)
        return MMSSLOutput(users, items, feat_user, feat_item, view_user)

    def modality_rows(self, out, users, entries):
        """Generator rows S^m_B for each modality (paper Eq. 3), with autograd."""
        return {m: relation_rows(out.feat_user[m][users], out.feat_item[m][1:], entries) for m in self.modalities}

    def discriminator_loss(self, interaction, grad_scale=1.0):
        """WGAN-GP loss of the discriminator step (paper Eqs. 6-7); inputs carry no gradient.

        fake = [S^m_B for each modality] stacked, real = the real rows stacked as many times.
        ``grad_scale``: the float16 loss scale for the gradient penalty's inner gradient.
        """
        users = interaction[self.USER_ID]
        b, n_modalities = len(users), len(self.modalities)
        entries = self.train_entries(users)
        out = self._discriminator_forward(interaction)
        if self.sampled:
            graph_k = self._batch_graph_k() if self.shared_forward else None  # for the recommender step
            with torch.no_grad():
                picked = self._critic_columns(out, users, entries, graph_k)
                critic_in = critic_inputs(out, users, entries, picked, self.modalities, self.real_row_settings)
            if self.shared_forward:
                self._shared["picked"] = picked
            return set_critic_loss(self.discriminator, critic_in["real"].repeat(n_modalities, 1), critic_in["fake"],
                                   critic_in["items"], critic_in["columns"], critic_in["kinds"], self.gp_weight)
        with torch.no_grad():
            fake = out.user.new_empty(n_modalities * b, self.n_real_items)
            for j, m in enumerate(self.modalities):
                relation_rows(out.feat_user[m][users], out.feat_item[m][1:], entries, out=fake[j * b:(j + 1) * b])
            ui_rows = relation_rows(out.user[users], out.item[1:], entries)
            rows = real_rows(entries, ui_rows, *self.real_row_settings)
            real = rows.repeat(n_modalities, 1)
        return discriminator_loss(self.discriminator, real, fake, self.gp_weight, grad_scale)

    def calculate_loss(self, interaction):
        """Recommender-step losses (paper Eqs. 13-14), weighted: (bpr, emb_reg, feat_reg, contrastive, generator).

        Also does the modality-graph bookkeeping (paper Eq. 8) for this batch.
        """
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        out, picked = self._recommender_forward(interaction)
        u, p, n = out.user[users], out.item[pos], out.item[neg]
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        emb_reg = self.emb_reg_weight * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(users)
        zero = bpr.new_zeros(())
        feat_reg = zero
        if self.feat_reg_weight:
            feat_reg = self.feat_reg_weight * 0.5 * sum(
                out.feat_item[m].pow(2).sum() + out.feat_user[m].pow(2).sum() for m in self.modalities
            ) / self.n_real_items
        contrastive = zero
        if self.use_contrastive:
            contrastive = sum(self.contrastive_loss(out.view_user[m][users], u, self.modality_graph.nnz(m) == 0)
                              for m in self.modalities)
        generator, tops = zero, None
        graph_k = self._batch_graph_k()
        if self.use_adversarial and self.sampled:
            entries = self.train_entries(users)
            if picked is None:
                with torch.no_grad():
                    picked = self._critic_columns(out, users, entries, graph_k)
            critic_in = critic_inputs(out, users, entries, picked, self.modalities)
            columns = self.discriminator.embed(critic_in["items"], critic_in["columns"], critic_in["kinds"])
            generator = -self.discriminator(critic_in["fake"], columns).mean()
            tops = picked["graph_tops"]
        elif self.use_adversarial:
            rows = self.modality_rows(out, users, self.train_entries(users))
            generator = generator_loss(self.discriminator, torch.cat(list(rows.values())))
            tops = None if graph_k is None else {m: r.detach().topk(graph_k, dim=1).indices for m, r in rows.items()}
        elif graph_k is not None:
            tops = self._batch_tops(out, users, graph_k)
        if tops is not None:
            users, tops = self._gathered_tops(users, tops)
        self.modality_graph.after_batch(users, tops, lambda m, k: self._all_user_tops(out, m, k))
        return bpr, emb_reg, feat_reg, self.cl_weight * contrastive, self.g_weight * generator

    def _batch_graph_k(self):
        """k where this batch's top-k columns feed the modality graphs, else None."""
        return self.modality_graph.k if self.modality_graph.needs_batch_rows() else None

    def _discriminator_forward(self, interaction):
        """The forward output that the discriminator step reads, without gradients. With
        ``shared_forward`` the forward keeps its autograd graph for this batch's recommender step."""
        if not self.shared_forward:
            with torch.no_grad():
                return self.forward()
        out = self.forward()
        self._shared = {"batch": interaction, "out": out, "picked": None}
        return MMSSLOutput(*(t.detach() if torch.is_tensor(t) else {m: v.detach() for m, v in t.items()}
                             for t in out))

    def _recommender_forward(self, interaction):
        """The recommender step's forward output and sampled critic columns: those of this batch's
        discriminator step with ``shared_forward`` (the recommender's parameters have not changed
        since), else a new forward and no columns."""
        shared, self._shared = self._shared, None
        if shared is not None and shared["batch"] is interaction:
            return shared["out"], shared["picked"]
        return self.forward(), None

    def contrastive_loss(self, anchors, positives, empty_graph=False):
        """InfoNCE (paper Eq. 11): anchor b against its final embedding, negatives from both views
        (in distributed training, from every rank's share of the batch).

        ``empty_graph``: the modality graph has no edge, so every anchor is zero, every similarity
        exp(0) = 1 and the loss the constant -ln(1 / (2b - 1) + 1e-8), with no gradient: it is
        computed as such, without the b x b products (one process; several ranks all compute).
        """
        if empty_graph and not distributed.active():
            ratio = anchors.new_ones(len(anchors)) / anchors.new_full((len(anchors),), 2 * len(anchors) - 1)
            return -torch.log(ratio + 1e-8).mean()
        z1, z2 = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
        all1, all2 = distributed.gather(z1), distributed.gather(z2)
        own = distributed.shard(len(all1))
        intra = torch.exp(z1 @ all1.T / self.cl_temperature)
        inter = torch.exp(z1 @ all2.T / self.cl_temperature)
        intra_self, inter_self = intra[:, own].diagonal(), inter[:, own].diagonal()
        denominator = intra.sum(1) - intra_self + inter.sum(1)
        return -torch.log(inter_self / denominator + 1e-8).mean()

    def start_epoch(self):
        """Epoch-start bookkeeping: batch indices of the modality-graph schedule restart at 0."""
        self.modality_graph.start_epoch()

    def end_epoch(self):
        """Epoch-end bookkeeping: the modality graphs' rebuild when graph_period is "epoch"."""
        if self.modality_graph.period == "epoch":
            with torch.no_grad():
                out = self.forward()
            self.modality_graph.end_epoch(lambda m, k: self._all_user_tops(out, m, k))

    def _top_columns(self, user_rows, items, entries, k):
        """The top-k columns of the relation rows (no autograd): from the b x I rows, or, with the
        sampled discriminator, block by block without them."""
        with torch.no_grad():
            if self.sampled:
                return blockwise_topk(user_rows, items, entries, k)
            return relation_rows(user_rows, items, entries).topk(k, dim=1).indices

    def _batch_tops(self, out, users, k):
        entries = self.train_entries(users)
        return {m: self._top_columns(out.feat_user[m][users], out.feat_item[m][1:], entries, k)
                for m in self.modalities}

    @staticmethod
    def _gathered_tops(users, tops):
        """The batch users and their top-k columns per modality, from every rank in distributed training."""
        if not distributed.active():
            return users, tops
        gathered = {m: distributed.gather_pairs(users, top) for m, top in tops.items()}
        return next(iter(gathered.values()))[0], {m: top for m, (_, top) in gathered.items()}

    def _all_user_tops(self, out, modality, k, block_size=1024):
        """(users, top-k columns of their relation rows) blocks over every user with training items;
        in distributed training each rank computes its share and every rank receives all of them."""
        users = torch.nonzero(self.train_indptr[1:] > self.train_indptr[:-1]).squeeze(1)
        users = users[distributed.shard(len(users))]
        blocks = ((chunk, self._top_columns(out.feat_user[modality][chunk], out.feat_item[modality][1:],
                                            self.train_entries(chunk), k)) for chunk in users.split(block_size))
        if distributed.active():
            chunks, tops = zip(*blocks)
            blocks = [distributed.gather_pairs(torch.cat(chunks), torch.cat(tops))]
        yield from blocks

    def _critic_columns(self, out, users, entries, graph_k=None):
        return column_sets(out, users, entries, self.modalities, self.n_real_items, self.critic_items, graph_k)

    def recommender_parameters(self):
        """Every parameter except the discriminator's (the recommender optimizer's share)."""
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]

    def final_embeddings(self):
        out = self.forward()
        return out.user, out.item
