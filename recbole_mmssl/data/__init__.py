"""Multimodal datasets, their feature files, and converters from published formats."""

from recbole_mmssl.data.dataset import InteractionDataset, MultiModalDataset
from recbole_mmssl.data.features import FeatureFileError

__all__ = ["InteractionDataset", "MultiModalDataset", "FeatureFileError"]
