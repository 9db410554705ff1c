"""MultiModalRecommender: what every multimodal model of the plugin shares.

It takes the dataset's modalities (any number, in the order of ``modalities``), normalises each
feature table as ``feature_norm`` says, and keeps it as a fixed buffer or as a trainable table
initialised from the file. Subclasses give ``final_embeddings()``; in eval mode one call serves
a whole evaluation pass (cached until the next training step or state load), and ``predict``
and ``full_sort_predict`` score with dot products, a block of users x items at a time.
"""

from logging import getLogger

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from torch import nn

from recbole_mmssl.errors import InputError
from recbole_mmssl.model.feature_norm import normalise_features


class MultiModalRecommender(GeneralRecommender):
    """A general recommender over interactions plus item feature tables (``multimodal``)."""

    multimodal = True

    def __init__(self, config, dataset, trainable_features=False):
        super().__init__(config, dataset)
        self.modalities = list(getattr(dataset, "modality_features", {}))
        if not self.modalities:
            raise InputError(f"{type(self).__name__} needs at least one item feature modality; "
                             f"set 'modalities' for dataset {config['dataset']}.")
        self.trainable_features = trainable_features
        self.feature_tables = nn.ParameterDict() if trainable_features else None
        for m, table in dataset.modality_features.items():
            table, stats = normalise_features(table, config["feature_norm"])
            if stats:
                getLogger().info(f"feature_norm {config['feature_norm']}, modality {m}: "
                                 + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
            if trainable_features:
                self.feature_tables[m] = nn.Parameter(table.clone().to(self.device))
            else:
                self.register_buffer(f"feat_{m}", table.to(self.device), persistent=False)
        self._eval_cache = None

    def features(self, modality):
        """The [n_items, F_m] feature table of ``modality`` (row 0, the padding item, is zero)."""
        return self.feature_tables[modality] if self.trainable_features else getattr(self, f"feat_{modality}")

    def final_embeddings(self):
        """(users [n_users, d], items [n_items, d]) whose dot products are the scores."""
        raise NotImplementedError

    def train(self, mode=True):
        self._eval_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict=True):
        self._eval_cache = None
        return super().load_state_dict(state_dict, strict)

    def load_other_parameter(self, para):
        self._eval_cache = None
        super().load_other_parameter(para)

    def scoring_embeddings(self):
        """``final_embeddings()``; in eval mode computed once per evaluation pass, without gradient."""
        if self.training:
            return self.final_embeddings()
        if self._eval_cache is None:
            with torch.no_grad():
                self._eval_cache = tuple(t.detach() for t in self.final_embeddings())
        return self._eval_cache

    def predict(self, interaction):
        users, items = self.scoring_embeddings()
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(-1)

    def full_sort_predict(self, interaction):
        users, items = self.scoring_embeddings()
        return (users[interaction[self.USER_ID]] @ items.T).reshape(-1)
