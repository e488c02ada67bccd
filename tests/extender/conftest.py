"""Fixtures for the extender suites: a serving certificate for the extender's own Service name."""

from __future__ import annotations

from pathlib import Path

import pytest

from qosgate.certs.generate import generate_certificates

EXTENDER_SERVICE = "qosgate-extender"
EXTENDER_NAMESPACE = "qosgate-system"
EXTENDER_HOSTNAME = f"{EXTENDER_SERVICE}.{EXTENDER_NAMESPACE}.svc"


@pytest.fixture(scope="session")
def extender_cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_certificates(tmp_path_factory.mktemp("extender-certs"), EXTENDER_SERVICE,
                                 EXTENDER_NAMESPACE).directory
