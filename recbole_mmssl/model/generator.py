"""MMSSL's generator side: relation rows (spec §4), Gumbel "real" rows (§5) and the
modality graphs learnt from the relation rows (§8). Only batch-users x items blocks are dense.
"""

import torch

from recbole_mmssl.model.layers import one_sided_graphs, rownorm


def relation_rows(user_rows, items, train_block):
    """rownorm((X_B Y^T) * (1 - R_B)): scores of batch users over all items, training items zeroed."""
    return rownorm((user_rows @ items.T) * (1.0 - train_block))


def real_rows(train_block, ui_rows, tau, noise_scale, form, aux_weight, use_gumbel=True):
    """The rows the discriminator learns to call real: Gumbel-softened interactions plus the
    auxiliary signal ``aux_weight * ui_rows`` from the final embeddings, row-normalised.

    ``form`` "orig": softmax((R + s g) / tau) (reference code of Feb 2023, the paper's form);
    "head": softmax(R + (s / tau) g) (the later refactor's operator-precedence slip).
    Without the Gumbel transform (ablation w/o-GT) the raw interaction rows are used.
    """
    soft = train_block
    if use_gumbel:
        uniform = torch.rand_like(train_block)
        gumbel = -torch.log(-torch.log(uniform + 1e-8) + 1e-8)
        if form == "orig":
            soft = torch.softmax((train_block + noise_scale * gumbel) / tau, dim=-1)
        else:
            soft = torch.softmax(train_block + (noise_scale / tau) * gumbel, dim=-1)
    return rownorm(soft + aux_weight * ui_rows)


def topk_pairs(users, rows, k, pairing):
    """(user, item) pairs from the top-k items of each row; item ids are column + 1 (0 = padding).

    "aligned": each user with its own row's top-k. "reference": the code's pairing, where pair j
    is (users[j mod b], item j of the row-major flattened b x k block), mixing users' rows for k > 1.
    """
    if k == 0:
        empty = users.new_empty(0)
        return empty, empty
    items = rows.topk(k, dim=1).indices.reshape(-1) + 1
    paired = users.repeat(k) if pairing == "reference" else users.repeat_interleave(k)
    return paired, items


class ModalityGraph:
    """Per-modality user-item graphs G^m and their normalised P^m, Q^m (spec §8).

    Before the first rebuild every modality uses the training graph. After each batch the
    graph either accumulates that batch's top-k pairs or, every ``period`` batches (never at
    batch 0 of an epoch), is rebuilt: from the accumulated pairs ("batch", the reference), or
    from every user's own top-k relation row ("full", the paper's reading; k >= 1).
    The accumulated pairs survive epoch boundaries, as in the reference.
    """

    def __init__(self, modalities, n_users, n_items, train_graph, k, period, pairing, update):
        self.modalities, self.n_users, self.n_items = list(modalities), n_users, n_items
        self.k, self.period, self.pairing, self.update = k, period, pairing, update
        self.graphs = {m: train_graph for m in self.modalities}
        self.pending = {m: [] for m in self.modalities}
        self.batch_in_epoch = 0

    def start_epoch(self):
        self.batch_in_epoch = 0

    def after_batch(self, users, rows, all_user_rows=None):
        """Bookkeeping at the end of a recommender step.

        ``rows``: modality -> detached relation rows of the batch users; ``all_user_rows``:
        modality -> iterable of (users, rows) blocks over all users (needed for "full").
        """
        idx = self.batch_in_epoch
        self.batch_in_epoch += 1
        if idx % self.period == 0 and idx != 0:
            for m in self.modalities:
                if self.update == "full":
                    pairs = [topk_pairs(u, r, max(self.k, 1), "aligned") for u, r in all_user_rows(m)]
                else:
                    pairs = self.pending[m]
                self.graphs[m] = self._normalised(pairs)
                self.pending[m] = []
        elif self.update == "batch":
            for m in self.modalities:
                self.pending[m].append(topk_pairs(users, rows[m], self.k, self.pairing))

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
