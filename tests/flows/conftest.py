"""Flow tests run against one session-scoped Prefect test server."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(autouse=True)
def _server(prefect_api):
    return prefect_api


@pytest.fixture
def state_block() -> str:
    """A fresh block name per test, so tests never share training state."""
    return f"test-{uuid.uuid4().hex[:10]}"
