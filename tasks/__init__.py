"""Thin Prefect tasks over the domain package ``linreg``: where retries, I/O and Dask live.

Each adapter (``TaskStateStore``, ``TaskExecutor``, ``ArtifactPublisher``) is what
:func:`linreg.training.run_round` is given when a flow runs it: the same calls, each a task.
"""

from tasks.fit import TaskExecutor, partial_fit
from tasks.publish import ArtifactPublisher, publish
from tasks.runtime import RuntimeConfig
from tasks.state import TaskStateStore, TrainingStateBlock, load_state, save_state
from tasks.validate import validate

__all__ = [
    "ArtifactPublisher",
    "RuntimeConfig",
    "TaskExecutor",
    "TaskStateStore",
    "TrainingStateBlock",
    "load_state",
    "partial_fit",
    "publish",
    "save_state",
    "validate",
]
