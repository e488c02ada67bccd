"""An extender served in-process over HTTPS, fed by watch caches of an API, for trying things out."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from qosgate.core.nodefit import STRATEGIES
from qosgate.simulate.client import ExtenderClient, ExtenderUnavailable
from qosgate.simulate.faults import FlakyBinder

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient


@contextlib.contextmanager
def in_process_extender(api: KubeClient, protectable_percent: int = 90, accounting: str = "annotated",
                        strategy: str = "spread", bind_failure_rate: float = 0.0, seed: int = 0,
                        sync_timeout: float = 60.0) -> Iterator[ExtenderClient]:
    """Serve an extender over HTTPS on loopback (fresh CA), fed by watch caches of `api`; yields a client."""
    from qosgate.certs.generate import generate_certificates, issue_client_certificate
    from qosgate.core.types import ACCOUNTING_MODES
    from qosgate.extender.app import extender_routes
    from qosgate.extender.binder import KubeBinder
    from qosgate.extender.state import ExtenderSettings, ExtenderState
    from qosgate.kube.informer import ClusterCache
    from qosgate.serving.background import serve_in_thread
    from qosgate.serving.http import Router
    from qosgate.serving.server import Listener
    from qosgate.serving.tls import CertReloader

    if accounting not in ACCOUNTING_MODES or strategy not in STRATEGIES:
        raise ValueError(f"unknown accounting {accounting!r} or strategy {strategy!r}")
    settings = ExtenderSettings(protectable_percent=protectable_percent, accounting=accounting,
                                strategy=strategy)
    cache = ClusterCache(api, settings.accounting)
    cache.start()
    try:
        if not cache.wait_for_sync(sync_timeout):
            raise ExtenderUnavailable(f"the watch caches did not sync within {sync_timeout:.0f}s")
        state = ExtenderState(cache.pods, cache.nodes, settings)
        binder: Any = KubeBinder(api)
        if bind_failure_rate:
            binder = FlakyBinder(binder, bind_failure_rate, seed)
        routes = extender_routes(state, binder, lambda: cache.ready, client_certificate_required=True)
        with tempfile.TemporaryDirectory(prefix="qosgate-sim-") as directory:
            paths = generate_certificates(directory, "qosgate-extender", "qosgate-system")
            client_cert, client_key = issue_client_certificate(directory)
            tls = CertReloader(paths.tls_cert, paths.tls_key, client_ca_file=paths.ca_cert)
            with serve_in_thread([Listener("extender", Router(routes), 0, "127.0.0.1", tls)]) as served:
                client = ExtenderClient(f"https://127.0.0.1:{served.ports['extender']}", str(paths.ca_cert),
                                        "qosgate-extender.qosgate-system.svc", cert_file=str(client_cert),
                                        key_file=str(client_key))
                try:
                    yield client
                finally:
                    client.close()
    finally:
        cache.stop()
