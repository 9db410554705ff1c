"""Training: MMSSL's alternating trainer and the mixins every model's trainer gets (per-epoch
hooks, learning curves, resumable checkpoints in a format that opens without running code)."""

from recbole_mmssl.trainer.trainer import LOSS_NAMES, EpochHookMixin, MMSSLTrainer

__all__ = ["MMSSLTrainer", "EpochHookMixin", "LOSS_NAMES"]
