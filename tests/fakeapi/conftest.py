"""Fixtures for the fake apiserver's own tests: official-client handles and a raw HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from .server import FakeAPIServer


@pytest.fixture
def api_client(fake_api: FakeAPIServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    """Built exactly like production code builds it: from a kubeconfig file."""
    path = fake_api.write_kubeconfig(tmp_path / "kubeconfig", token="admin")
    c = config.new_client_from_config(config_file=path)
    yield c
    c.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def raw(fake_api: FakeAPIServer) -> Iterator[httpx.Client]:
    """Plain HTTP with the admin token, to check wire details the official client hides."""
    with httpx.Client(
        base_url=fake_api.url, headers={"Authorization": "Bearer admin"}, trust_env=False, timeout=30
    ) as c:
        yield c
