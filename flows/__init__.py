"""The training flows (``train-all``, ``train-step``), the lifecycle flows (``rollback``,
``promote``, ``skip-batch``) and batch scoring (``score``)."""

from flows.lifecycle import promote, rollback, skip_batch
from flows.scoring import score
from flows.training import train_all, train_step

__all__ = ["promote", "rollback", "score", "skip_batch", "train_all", "train_step"]
