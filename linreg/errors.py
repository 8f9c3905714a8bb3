"""Errors the pipeline reports to its users: each names what is wrong and where."""


class DataError(ValueError):
    """The input data is unusable: a missing file or column, a bad value, an empty source."""


class StateError(RuntimeError):
    """The saved training state cannot be used for this run (another schema, a lost race)."""


class ModelFileError(RuntimeError):
    """A published model is unreadable or does not match its metadata."""
