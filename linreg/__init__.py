"""Incremental linear regression on data larger than memory: the domain code.

Nothing in this package imports Prefect, Flask or a Dask client: sources, validation,
preprocessing, the incremental estimators, evaluation, model files and training state are
plain functions and classes that the orchestration layer (``tasks/``, ``flows/``) wraps.
"""

__version__ = "0.1.0"
