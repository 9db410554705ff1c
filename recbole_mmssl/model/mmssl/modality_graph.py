"""MMSSL's modality graphs (paper Eq. 8): per modality, a user-item graph of each user's
semantic neighbours, learnt from the relation rows' top-k entries and normalised like the
training graph. They feed the modality-aware ID views and the contrastive loss.
"""

import torch

from recbole_mmssl.errors import InputError
from recbole_mmssl.model.graphs import one_sided_graphs


def topk_pairs(users, top, pairing):
    """(user, item) pairs from ``top``, each row's top-k columns (b x k); item ids are column + 1
    (0 = padding).

    "aligned": each user with its own row's top-k. "reference": the code's pairing, where pair j
    is (users[j mod b], item j of the row-major flattened b x k block), mixing users' rows for k > 1.
    """
    k = top.shape[1]
    items = top.reshape(-1) + 1
    paired = users.repeat(k) if pairing == "reference" else users.repeat_interleave(k)
    return paired, items


class ModalityGraph:
    """Per-modality user-item graphs G^m and their normalised P^m, Q^m (paper Eq. 8; docs/design.md, 'Modality graphs').

    Before the first rebuild every modality uses the training graph. After each batch the
    graph either accumulates that batch's top-k pairs or, every ``period`` batches (never at
    batch 0 of an epoch), is rebuilt: from the accumulated pairs ("batch", the reference), or
    from every user's own top-k relation row ("full", the paper's reading; k >= 1). With
    ``period`` "epoch" it is rebuilt once, after each epoch's last batch, instead.
    The accumulated pairs survive epoch boundaries, as in the reference.
    """

    def __init__(self, modalities, n_users, n_items, train_graph, k, period, pairing, update):
        self.modalities, self.n_users, self.n_items = list(modalities), n_users, n_items
        self.k, self.period, self.pairing, self.update = k, period, pairing, update
        self.train_graph = train_graph
        self.graphs = {m: train_graph for m in self.modalities}
        self.pending = {m: [] for m in self.modalities}
        self.batch_in_epoch = 0

    def start_epoch(self):
        self.batch_in_epoch = 0

    def _rebuilds_now(self):
        idx = self.batch_in_epoch
        return self.period != "epoch" and idx % self.period == 0 and idx != 0

    def needs_batch_rows(self):
        """Whether the next :meth:`after_batch` reads the batch's rows (to accumulate top-k pairs)."""
        return self.update == "batch" and self.k > 0 and not self._rebuilds_now()

    def after_batch(self, users, tops, all_user_tops=None):
        """Bookkeeping at the end of a recommender step.

        ``tops``: modality -> the top-k columns of the batch users' relation rows (may be None
        where :meth:`needs_batch_rows` is False); ``all_user_tops``: (modality, k) -> iterable of
        (users, top-k columns) blocks over all users (needed for "full").
        """
        rebuild, accumulate = self._rebuilds_now(), self.needs_batch_rows()
        self.batch_in_epoch += 1
        if rebuild:
            self._rebuild(all_user_tops)
        elif accumulate:
            for m in self.modalities:
                self.pending[m].append(topk_pairs(users, tops[m], self.pairing))

    def end_epoch(self, all_user_tops):
        """With ``period`` "epoch": rebuild after the epoch's last batch."""
        if self.period == "epoch":
            self._rebuild(all_user_tops)

    def _rebuild(self, all_user_tops):
        for m in self.modalities:
            if self.update == "full":
                pairs = [topk_pairs(u, top, "aligned") for u, top in all_user_tops(m, max(self.k, 1))]
            else:
                pairs = self.pending[m]
            self.graphs[m] = self._normalised(pairs)
            self.pending[m] = []

    def _normalised(self, pairs):
        device = self.graphs[self.modalities[0]][0].device
        if pairs:
            users = torch.cat([u for u, _ in pairs])
            items = torch.cat([i for _, i in pairs])
        else:
            users = items = torch.empty(0, dtype=torch.long, device=device)
        values = torch.ones(len(users), device=device)
        return one_sided_graphs(users, items, values, self.n_users, self.n_items)

    def nnz(self, modality):
        return self.graphs[modality][0]._nnz()

    def state_dict(self):
        """Tensors and plain values only (checkpoints open with ``weights_only=True``): each modality's
        graph pair (None while it is still the training graph), its pending pairs and the batch index."""
        train_graph = getattr(self, "train_graph", None)  # absent from objects pickled by earlier versions
        return {
            "graphs": {m: None if pair is train_graph else [_sparse_state(g) for g in pair]
                       for m, pair in self.graphs.items()},
            "pending": {m: [list(pair) for pair in pairs] for m, pairs in self.pending.items()},
            "batch_in_epoch": self.batch_in_epoch,
        }

    def load_state_dict(self, state):
        device = self.train_graph[0].device
        if sorted(state["graphs"]) != sorted(self.modalities):
            raise InputError(f"The checkpoint's modality graphs are for {sorted(state['graphs'])}, "
                             f"this model's modalities are {sorted(self.modalities)}.")
        self.graphs = {m: self.train_graph if pair is None else tuple(_sparse_tensor(g, device) for g in pair)
                       for m, pair in state["graphs"].items()}
        self.pending = {m: [tuple(t.to(device) for t in pair) for pair in pairs]
                        for m, pairs in state["pending"].items()}
        self.batch_in_epoch = int(state["batch_in_epoch"])


def _sparse_state(graph):
    graph = graph.coalesce()
    return {"indices": graph.indices(), "values": graph.values(), "size": list(graph.shape)}


def _sparse_tensor(state, device):
    return torch.sparse_coo_tensor(state["indices"], state["values"], state["size"], device=device).coalesce()
