"""MMSSL (Wei et al., WWW 2023), one module per part of the paper:

* ``recommender``: the MMSSL model: its forward pass (paper Sec. 3, Eqs. 2, 8-10, 12), its losses
  (Eqs. 11, 13-14) and the dispatch between the two critics;
* ``layers``: the GNN propagation (Eq. 10) and the cross-modal attention (Eq. 9);
* ``relation_rows``: the modality-specific relation rows (Eqs. 1, 3) and the real rows (Eq. 5);
* ``modality_graph``: the semantic-neighbour graphs learnt from the relation rows (Eq. 8);
* ``discriminator``: the exact critic over whole rows (Eq. 4) and the WGAN-GP losses (Eqs. 6-7);
* ``sampled_critic``: the critic over sampled columns, for large catalogs (``discriminator: sampled``).
"""

from recbole_mmssl.model.mmssl.recommender import MMSSL, VARIANTS, MMSSLOutput, resolve_variant

__all__ = ["MMSSL", "MMSSLOutput", "VARIANTS", "resolve_variant"]
