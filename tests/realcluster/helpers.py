"""Small helpers shared by the real-cluster e2e tests: tenants, official clients, metrics, warnings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

from tests.realcluster.controlplane import ControlPlane, wait_until
from tests.realcluster.qosgate_stack import QosgateStack

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@dataclass
class Tenant:
    """A user holding only the built-in `edit` ClusterRole in one namespace."""

    namespace: str
    user: str
    kubeconfig: Path
    http: httpx.Client

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(config.new_client_from_config(config_file=str(self.kubeconfig)))


def make_tenant(cp: ControlPlane, prefix: str = "tenant") -> Tenant:
    namespace = cp.create_namespace(prefix)
    user = f"dev-{namespace}"
    cp.api.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", json={
        "metadata": {"name": "edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }).raise_for_status()
    kubeconfig, pair = cp.user_credentials(user, groups=["developers"])
    return Tenant(namespace, user, kubeconfig, cp.http(cert=pair))


def warnings_of(response: httpx.Response) -> list[str]:
    """The texts of `Warning: 299 - "<text>"` headers, unescaped."""
    texts = []
    for value in response.headers.get_list("warning"):
        match = re.match(r'^\d{3} \S+ "(.*)"$', value)
        texts.append(match.group(1).replace('\\"', '"') if match else value)
    return texts


# Lines for the "real control plane figures" section of the pytest summary (tests/realcluster/conftest.py).
FIGURES: list[str] = []


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text page (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{key}="{want}"' in head for key, want in labels.items()):
            total += float(value)
    return total


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("annotations") or {}


def delete_pods(cp: ControlPlane, namespace: str) -> None:
    """Delete every pod of a namespace at once (grace 0: no kubelet would ever confirm a graceful delete)."""
    cp.api.delete(f"/api/v1/namespaces/{namespace}/pods", params={"gracePeriodSeconds": "0"})


CATALOG_CONFIGMAP = "/api/v1/namespaces/qosgate-system/configmaps/qosgate-classes"


def catalog_loads(qosgate: QosgateStack) -> list[int]:
    return [r.process.log.read_text().count("catalog loaded from configmap") for r in qosgate.webhooks]


def put_catalog(control_plane: ControlPlane, qosgate: QosgateStack, configmap: dict[str, Any]) -> None:
    """Write the catalog ConfigMap (as admin) and wait until every webhook replica loaded it."""
    before = catalog_loads(qosgate)
    control_plane.api.put(CATALOG_CONFIGMAP, json=configmap).raise_for_status()
    wait_until(lambda: all(now > then for now, then in zip(catalog_loads(qosgate), before, strict=True)), 30,
               "every webhook replica to load the catalog", interval=0.2)


def admitted(cp: ControlPlane, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """The pod as admission makes it (qosgate's annotations), without creating it (server-side dry run)."""
    response = cp.api.post(f"/api/v1/namespaces/{namespace}/pods", params={"dryRun": "All"}, json=body)
    return dict(response.raise_for_status().json())


def filter_passes(qosgate: QosgateStack, pod: dict[str, Any], node: str) -> bool:
    """Whether the extender (through its Service, as kube-scheduler calls it) lets `pod` onto `node`."""
    with qosgate.extender_client() as client:
        answer = client.post("/filter", json={"Pod": pod, "NodeNames": [node]}).raise_for_status().json()
    assert not answer.get("Error"), answer
    return node in (answer.get("NodeNames") or [])
