"""MMSSL (Wei et al., WWW 2023): the recommender (``recommender``), its relation rows and
modality graphs (``generator``), the discriminator and WGAN-GP losses (``discriminator``) and
its GNN and attention layers (``layers``)."""

from recbole_mmssl.model.mmssl.recommender import CHOICES, MMSSL, VARIANTS, MMSSLOutput, resolve_variant

__all__ = ["MMSSL", "MMSSLOutput", "VARIANTS", "CHOICES", "resolve_variant"]
