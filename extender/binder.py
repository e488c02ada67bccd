"""POST the pods/binding subresource and classify the answer for the state.

The extender is the binder (architecture §7.1): kube-scheduler hands us ExtenderBindingArgs and expects the pod
bound when we answer. The Binding carries the pod's UID in metadata, which kube-apiserver turns into a
precondition, so a pod deleted and re-created under the same name is never bound by a stale decision.

A 409 is ambiguous on its own (already bound — to this node after a retried request, or elsewhere — or a
UID mismatch), so it is settled by reading the pod back.
"""

from __future__ import annotations

import logging
from typing import Any

from qosgate.extender.state import BindOutcome, BindResult
from qosgate.kube.rest import ApiError, KubeError, request_json
from qosgate.kube.transport import KubeClient

log = logging.getLogger(__name__)

# Statuses after which the binding certainly did not happen (the others may have landed server-side).
_DEFINITE = frozenset({400, 401, 403, 404, 405, 410, 415, 422})


def binding_body(namespace: str, name: str, uid: str, node: str) -> dict[str, Any]:
    """The v1 Binding for pods/{name}/binding: target Node, and the UID precondition when known."""
    metadata: dict[str, str] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return {"apiVersion": "v1", "kind": "Binding", "metadata": metadata,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}


def _api_message(exc: ApiError) -> str:
    return exc.message or exc.reason or str(exc.status)


class KubeBinder:
    """Binder over a KubeClient (thread-safe: urllib3's pool is)."""

    def __init__(self, api_client: KubeClient, timeout: float = 10.0) -> None:
        self._api = api_client
        # Shorter than kube-scheduler's 5 s extender httpTimeout would make every slow API answer look like
        # a failure to us while the scheduler still waits; longer keeps reservations in flight for longer.
        self._timeout = timeout

    def bind(self, namespace: str, name: str, uid: str, node: str) -> BindResult:
        try:
            request_json(self._api, "POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding",
                         body=binding_body(namespace, name, uid, node), timeout=self._timeout)
            return BindResult(BindOutcome.BOUND)
        except ApiError as exc:
            message = _api_message(exc)
            if exc.status == 409:
                return self._settle_conflict(namespace, name, uid, node, message)
            if exc.status in _DEFINITE:
                return BindResult(BindOutcome.REJECTED, f"binding {namespace}/{name} to {node}: {message}")
            return BindResult(BindOutcome.UNKNOWN, f"binding {namespace}/{name} to {node}: {message}")
        except KubeError as exc:
            return BindResult(BindOutcome.UNKNOWN, f"binding {namespace}/{name} to {node}: {exc}")

    def _settle_conflict(self, namespace: str, name: str, uid: str, node: str, message: str) -> BindResult:
        try:
            pod = request_json(self._api, "GET", f"/api/v1/namespaces/{namespace}/pods/{name}",
                               timeout=self._timeout)
        except ApiError as exc:
            if exc.status == 404:
                return BindResult(BindOutcome.REJECTED, f"pod {namespace}/{name} no longer exists")
            return BindResult(BindOutcome.UNKNOWN, f"binding {namespace}/{name}: {message}; "
                                                   f"reading it back failed: {_api_message(exc)}")
        except KubeError as exc:
            return BindResult(BindOutcome.UNKNOWN, f"binding {namespace}/{name}: {message}; "
                                                   f"reading it back failed: {exc}")
        metadata = pod.get("metadata") or {}
        bound_to = (pod.get("spec") or {}).get("nodeName") or ""
        if uid and metadata.get("uid") != uid:
            return BindResult(BindOutcome.REJECTED, f"pod {namespace}/{name} was replaced (UID {uid} is gone)")
        if bound_to == node:
            return BindResult(BindOutcome.ALREADY_BOUND_HERE)
        if bound_to:
            return BindResult(BindOutcome.BOUND_ELSEWHERE,
                              f"pod {namespace}/{name} is already bound to node {bound_to}")
        return BindResult(BindOutcome.REJECTED, f"binding {namespace}/{name} to {node}: {message}")
