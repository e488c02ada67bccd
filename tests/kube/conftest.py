"""Fixtures for the kube-layer tests: a fake API server on loopback and qosgate's KubeClient for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qosgate.kube.config import load_api_client
from qosgate.kube.transport import KubeClient
from tests.fakeapi import FakeAPIServer


@pytest.fixture
def api() -> Iterator[FakeAPIServer]:
    with FakeAPIServer() as server:
        yield server


@pytest.fixture
def client(api: FakeAPIServer, tmp_path: Path) -> Iterator[KubeClient]:
    kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="admin")
    api_client = load_api_client(kubeconfig)
    yield api_client
    api_client.close()
