"""Small API operations the kube tests perform, over the same raw transport the code under test uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qosgate.kube.rest import ApiError, request_json
from qosgate.kube.transport import KubeClient


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.01) -> bool:
    """Poll for convergence. The timeout only bounds a hung test; no test asserts on how long this took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def pods_path(namespace: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{namespace}/pods"
    return f"{base}/{name}" if name else base


def create_namespace(client: KubeClient, name: str) -> None:
    try:
        request_json(client, "POST", "/api/v1/namespaces",
                     body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except ApiError as exc:
        if not exc.conflict:
            raise


def create(client: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
    namespace = obj["metadata"]["namespace"]
    kind = obj["kind"].lower() + "s"
    return request_json(client, "POST", f"/api/v1/namespaces/{namespace}/{kind}", body=obj)


def get_pod(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    return request_json(client, "GET", pods_path(namespace, name))


def update_pod_annotations(client: KubeClient, namespace: str, name: str, changes: dict[str, str]) -> dict[str, Any]:
    pod = get_pod(client, namespace, name)
    pod["metadata"]["annotations"] = {**(pod["metadata"].get("annotations") or {}), **changes}
    return request_json(client, "PUT", pods_path(namespace, name), body=pod)


def set_phase(client: KubeClient, namespace: str, name: str, phase: str) -> dict[str, Any]:
    pod = get_pod(client, namespace, name)
    pod["status"] = {**(pod.get("status") or {}), "phase": phase}
    return request_json(client, "PUT", pods_path(namespace, name) + "/status", body=pod)


def bind(client: KubeClient, namespace: str, name: str, node: str) -> None:
    request_json(client, "POST", pods_path(namespace, name) + "/binding",
                 body={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": namespace},
                       "target": {"apiVersion": "v1", "kind": "Node", "name": node}})


def delete_pod(client: KubeClient, namespace: str, name: str) -> None:
    # gracePeriodSeconds=0: gone at once, as if the kubelet had confirmed; no kubelet runs here.
    request_json(client, "DELETE", pods_path(namespace, name), query=[("gracePeriodSeconds", "0")],
                 body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})


def list_all(client: KubeClient, path: str, label_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
    query = [("labelSelector", label_selector)] if label_selector else []
    answer = request_json(client, "GET", path, query=query)
    return answer.get("items") or [], answer["metadata"]["resourceVersion"]
