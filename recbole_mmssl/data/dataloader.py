"""User-based training batches as MMSSL's released code samples them (docs/design.md, 'Training loop').

An epoch has floor(n_train / b) + 1 batches. Each batch draws b distinct users uniformly from
the users with training items (batches are independent draws), one positive uniformly from
each user's training items and one negative uniformly from the items outside them. Distinct
users matter: the contrastive loss and the discriminator work on per-user rows.
"""

import numpy as np
import torch
from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
from recbole.data.interaction import Interaction


class UserBatchDataLoader(AbstractDataLoader):
    """Yields Interactions of (user, positive item, negative item) for b distinct users.

    Randomness comes from :attr:`batch_generator`: None, torch's global generator (which the
    trainer reseeds every epoch), or in distributed training one seeded alike on every rank, so
    that the ranks draw the same batch and split it.
    """

    batch_generator = None

    def __init__(self, config, dataset, sampler, shuffle=False):
        matrix = dataset.inter_matrix(form="csr")
        matrix.sum_duplicates()
        self.indptr = torch.from_numpy(matrix.indptr.astype(np.int64))
        self.indices = torch.from_numpy(matrix.indices.astype(np.int64))
        degrees = self.indptr[1:] - self.indptr[:-1]
        self.users = torch.nonzero(degrees > 0).squeeze(1)
        self.degrees = degrees
        self.n_items = dataset.item_num
        keys = self._keys(torch.repeat_interleave(torch.arange(len(degrees)), degrees), self.indices)
        self.train_keys = torch.sort(keys).values
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.neg_field = config["NEG_PREFIX"] + self.iid_field
        self.sample_size = matrix.nnz // config["train_batch_size"] + 1
        super().__init__(config, dataset, sampler, shuffle=False)

    def _init_batch_size_and_step(self):
        self.step = 1
        self.set_batch_size(min(self.config["train_batch_size"], len(self.users)))

    def _keys(self, users, items):
        return users * self.n_items + items

    def _is_training_pair(self, users, items):
        keys = self._keys(users, items)
        pos = torch.searchsorted(self.train_keys, keys).clamp(max=len(self.train_keys) - 1)
        return self.train_keys[pos] == keys

    def collate_fn(self, index):
        b, generator = self._batch_size, self.batch_generator
        users = self.users[torch.randperm(len(self.users), generator=generator)[:b]]
        offsets = (torch.rand(b, generator=generator) * self.degrees[users]).long()
        positives = self.indices[self.indptr[users] + offsets]
        negatives = torch.randint(1, self.n_items, (b,), generator=generator)
        clash = self._is_training_pair(users, negatives)
        while clash.any():
            negatives[clash] = torch.randint(1, self.n_items, (int(clash.sum()),), generator=generator)
            clash = self._is_training_pair(users, negatives)
        return Interaction({self.uid_field: users, self.iid_field: positives, self.neg_field: negatives})
