"""The one exception the service turns into a JSON error response."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses: an HTTP status and a message that never quotes the body.

    Parameters
    ----------
    status : int
        4xx for what the client can fix, 503 while no model is loaded.
    message : str
        What is wrong and how to fix it, naming positions and features, not payload values.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
