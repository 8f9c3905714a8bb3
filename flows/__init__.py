"""The two training flows: ``train-all`` and ``train-step``."""

from flows.training import train_all, train_step

__all__ = ["train_all", "train_step"]
