"""pytest fixtures of the fake apiserver (imported into tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FakeAPIServer


@pytest.fixture
def fake_api() -> Iterator[FakeAPIServer]:
    """A started :class:`FakeAPIServer`, stopped (all watches cut, webhooks closed) after the test."""
    with FakeAPIServer() as api:
        yield api
