"""The shipped RBAC (manifests/base) is what the components run with here; the real server enforces it.

`KNOWN_RBAC_GAPS` (qosgate_stack.py) lists permissions the code uses that the manifests do not grant; the
stack adds them so the rest of the suite can run, and the first test below fails (xfail, strict) until the
manifests grant them — then the entry must go.
"""

from __future__ import annotations

import pytest

from tests.realcluster.controlplane import ControlPlane
from tests.realcluster.qosgate_stack import KNOWN_RBAC_GAPS, SYSTEM_NAMESPACE, QosgateStack, forbidden_lines


def shipped_bindings_for(qosgate: QosgateStack, account: str) -> list[dict]:
    return [o for o in qosgate.objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
            and any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                    and s.get("namespace") == SYSTEM_NAMESPACE for s in o.get("subjects") or [])]


@pytest.mark.xfail(bool(KNOWN_RBAC_GAPS), strict=True,
                   reason=f"manifests/base RBAC lacks what the code uses: {KNOWN_RBAC_GAPS}")
def test_shipped_rbac_grants_every_permission_the_components_use(control_plane: ControlPlane,
                                                                  qosgate: QosgateStack) -> None:
    missing = []
    for account, (namespace, rules) in KNOWN_RBAC_GAPS.items():
        # A twin ServiceAccount bound to exactly the shipped roles of `account` (not to the gap roles).
        twin = f"rbac-twin-{account}"
        control_plane.api.post(f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts",
                               json={"metadata": {"name": twin}})
        for binding in shipped_bindings_for(qosgate, account):
            copy = {"apiVersion": binding["apiVersion"], "kind": binding["kind"],
                    "metadata": {"name": f"{binding['metadata']['name']}-twin"}, "roleRef": binding["roleRef"],
                    "subjects": [{"kind": "ServiceAccount", "name": twin, "namespace": SYSTEM_NAMESPACE}]}
            if binding["kind"] == "RoleBinding":
                copy["metadata"]["namespace"] = binding["metadata"]["namespace"]
            qosgate.apply([copy])
        for rule in rules:
            for verb in rule["verbs"]:
                for resource in rule["resources"]:
                    review = control_plane.api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json={
                        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                        "spec": {"user": f"system:serviceaccount:{SYSTEM_NAMESPACE}:{twin}",
                                 "groups": ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM_NAMESPACE}"],
                                 "resourceAttributes": {"namespace": namespace, "verb": verb,
                                                        "group": rule["apiGroups"][0], "resource": resource}}})
                    if not review.raise_for_status().json()["status"].get("allowed"):
                        missing.append(f"{account}: {verb} {resource} in {namespace}")
    assert missing == []


def test_no_component_was_refused_by_the_api_server(qosgate: QosgateStack) -> None:
    refused = {r.process.name: forbidden_lines(r.process.log)[:3] for r in qosgate.webhooks + qosgate.extenders}
    assert {name: lines for name, lines in refused.items() if lines} == {}
