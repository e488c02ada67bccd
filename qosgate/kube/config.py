"""Where qosgate finds its API server: explicit kubeconfig, else in-cluster service account, else ~/.kube/config.

The files and the environment are read here; `qosgate.kube.kubeconfig` merges and validates what they say
(no I/O), and `qosgate.kube.transport.KubeClient` talks to the server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from qosgate.kube.kubeconfig import ClientConfig, KubeConfigError, client_config, merge_kubeconfigs, resolve_paths
from qosgate.kube.transport import POOL_SIZE, KubeClient

__all__ = ["POOL_SIZE", "KubeConfigError", "in_cluster_config", "kubeconfig_config", "load_api_client"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_ACCOUNT_TOKEN = SERVICE_ACCOUNT_DIR / "token"
SERVICE_ACCOUNT_CA = SERVICE_ACCOUNT_DIR / "ca.crt"


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.exists()


def _default_kubeconfig() -> str:
    # KUBECONFIG may list several files (joined with os.pathsep); they are merged like kubectl does.
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def in_cluster_config() -> ClientConfig:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token file (rotated) and CA."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError("in-cluster configuration failed: KUBERNETES_SERVICE_HOST and "
                              "KUBERNETES_SERVICE_PORT must both be set")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 service address
    if not SERVICE_ACCOUNT_CA.is_file():
        raise KubeConfigError(f"in-cluster configuration failed: {SERVICE_ACCOUNT_CA} does not exist")
    return ClientConfig(server=f"https://{host}:{port}", ca_file=str(SERVICE_ACCOUNT_CA),
                        token_file=str(SERVICE_ACCOUNT_TOKEN), source="in-cluster service account")


def _read_kubeconfig(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KubeConfigError(f"kubeconfig {path}: cannot read it: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML: {first}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise KubeConfigError(f"kubeconfig {path}: expected a mapping, got {type(doc).__name__}")
    return doc


def kubeconfig_config(paths: Sequence[str | os.PathLike[str]], context: str | None = None) -> ClientConfig:
    """The ClientConfig of `context` in the merge of the kubeconfig files that exist among `paths`."""
    docs = []
    for path in (Path(p).expanduser().absolute() for p in paths):
        if path.is_file():
            docs.append(resolve_paths(_read_kubeconfig(path), str(path.parent), f"kubeconfig {path}"))
    source = os.pathsep.join(str(p) for p in paths)
    return client_config(merge_kubeconfigs(docs, f"kubeconfig {source}"), context, source)


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
    """A KubeClient for the first configuration that applies.

    1. `kubeconfig` given: that file, which must exist (a typo must not silently fall back elsewhere).
    2. running in a pod (KUBERNETES_SERVICE_HOST + service-account token) and no `context` asked for.
    3. $KUBECONFIG (several files merged), else ~/.kube/config.
    """
    if kubeconfig is not None:
        if not Path(kubeconfig).expanduser().is_file():
            raise KubeConfigError(f"kubeconfig {kubeconfig!r} does not exist or is not a file")
        config = kubeconfig_config([kubeconfig], context)
    elif context is None and _in_cluster():
        config = in_cluster_config()
    else:
        path = _default_kubeconfig()
        paths = [p for p in path.split(os.pathsep) if p]
        if not any(Path(p).expanduser().is_file() for p in paths):
            tried = ["--kubeconfig (not given)"]
            tried.append("in-cluster service account (not running in a pod)" if context is None
                         else "in-cluster service account (skipped: a context was requested)")
            tried.append(f"{'$KUBECONFIG' if os.environ.get('KUBECONFIG') else '~/.kube/config'} = {path} "
                         "(not found)")
            raise KubeConfigError("no Kubernetes API configuration found; tried " + "; ".join(tried))
        config = kubeconfig_config(paths, context)
    return KubeClient(config, pool_size=POOL_SIZE)
