"""Where qosgate finds its API server: explicit kubeconfig, else in-cluster service account, else ~/.kube/config."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.config.config_exception import ConfigException

from qosgate.core.errors import QosgateError

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# Informers hold one long-lived watch connection each, next to leader election, ledgers and bindings;
# urllib3's default pool of 10 would keep discarding and reopening connections under load.
POOL_SIZE = 32


class KubeConfigError(QosgateError):
    """No usable API server configuration; the message says what was tried."""


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.exists()


def _default_kubeconfig() -> str:
    # KUBECONFIG may list several files (joined with os.pathsep); the kubernetes client merges them.
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """An ApiClient for the first configuration that applies.

    1. `kubeconfig` given: that file, which must exist (a typo must not silently fall back elsewhere).
    2. running in a pod (KUBERNETES_SERVICE_HOST + service-account token) and no `context` asked for.
    3. $KUBECONFIG, else ~/.kube/config.
    """
    configuration = Configuration()
    if kubeconfig is not None:
        if not Path(kubeconfig).is_file():
            raise KubeConfigError(f"kubeconfig {kubeconfig!r} does not exist or is not a file")
        _load_file(kubeconfig, context, configuration)
    elif context is None and _in_cluster():
        try:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise KubeConfigError(f"in-cluster configuration failed: {exc}") from exc
    else:
        path = _default_kubeconfig()
        if not any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p):
            tried = ["--kubeconfig (not given)"]
            tried.append("in-cluster service account (not running in a pod)" if context is None
                         else "in-cluster service account (skipped: a context was requested)")
            tried.append(f"{'$KUBECONFIG' if os.environ.get('KUBECONFIG') else '~/.kube/config'} = {path} "
                         "(not found)")
            raise KubeConfigError("no Kubernetes API configuration found; tried " + "; ".join(tried))
        _load_file(path, context, configuration)
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL_SIZE)
    return ApiClient(configuration)


def _load_file(path: str, context: str | None, configuration: Configuration) -> None:
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration, persist_config=False)
    except ConfigException as exc:
        raise KubeConfigError(f"kubeconfig {path}: {exc}") from exc
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as exc:
        # Malformed YAML or missing keys surface as plain Python errors from the loader.
        raise KubeConfigError(f"kubeconfig {path} is not usable: {type(exc).__name__}: {exc}") from exc
