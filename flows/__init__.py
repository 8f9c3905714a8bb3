"""The training flows (``train-all``, ``train-step``) and the lifecycle flows (``rollback``,
``promote``, ``skip-batch``)."""

from flows.lifecycle import promote, rollback, skip_batch
from flows.training import train_all, train_step

__all__ = ["promote", "rollback", "skip_batch", "train_all", "train_step"]
