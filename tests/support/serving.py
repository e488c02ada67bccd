"""Serving helpers for tests: one router on a free loopback port, HTTPS (with a cert dir) or plain."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from qosgate.serving.background import RunningServer, serve_in_thread
from qosgate.serving.http import Route, Router
from qosgate.serving.server import Limits, Listener
from qosgate.serving.tls import TLS_CERT_FILE, TLS_KEY_FILE, CertReloader

__all__ = ["RunningServer", "reloader", "serve_in_thread", "serve_routes"]


def reloader(cert_dir: str | os.PathLike[str], **kwargs: Any) -> CertReloader:
    directory = Path(cert_dir)
    return CertReloader(directory / TLS_CERT_FILE, directory / TLS_KEY_FILE, **kwargs)


@contextlib.contextmanager
def serve_routes(routes: Sequence[Route] | Router, cert_dir: str | os.PathLike[str] | None,
                 limits: Limits | None = None, **tls: Any) -> Iterator[int]:
    """One listener on a free loopback port (HTTPS with `cert_dir`, plain HTTP without); yields the port."""
    router = routes if isinstance(routes, Router) else Router(routes)
    source = reloader(cert_dir, **tls) if cert_dir is not None else None
    with serve_in_thread([Listener("test", router, 0, "127.0.0.1", source)], limits) as served:
        yield served.ports["test"]
