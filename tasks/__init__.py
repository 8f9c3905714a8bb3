"""Thin Prefect tasks over the domain package ``linreg``: where retries, I/O and Dask live."""

from tasks.fit import partial_fit
from tasks.preprocess import PreparedRound, preprocess
from tasks.publish import publish
from tasks.state import LoadedState, TrainingStateBlock, load_state, save_state
from tasks.validate import validate

__all__ = [
    "LoadedState",
    "PreparedRound",
    "TrainingStateBlock",
    "load_state",
    "partial_fit",
    "preprocess",
    "publish",
    "save_state",
    "validate",
]
