"""The ValidatingAdmissionPolicy that lets each node agent write only its own node's report Lease, evaluated
with cel-python the way kube-apiserver evaluates it (variables, then every validation; matchConditions first).
The real apiserver enforces the same policy in test_realcluster_policy.py."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from qosgate.core.nodereport import NodeReport, lease_name, lease_object
from tests.manifests.helpers import BASE, one
from tests.support.kustomize import render

celpy = pytest.importorskip("celpy", reason="cel-python (test extra) evaluates the policy's CEL")

AGENT = "system:serviceaccount:qosgate-node:qosgate-agent"
NODE_KEY = "authentication.kubernetes.io/node-name"


@functools.cache
def policy() -> dict[str, Any]:
    return one(render(BASE), "ValidatingAdmissionPolicy", "qosgate-agent-own-node-report")


@functools.cache
def program(expression: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression), functions=_functions())


def _functions() -> dict[str, Any]:
    # Kubernetes' CEL has the strings extension (substring); cel-python's standard library does not.
    def substring(text: Any, start: Any, end: Any = None) -> Any:
        return celpy.celtypes.StringType(str(text)[int(start):None if end is None else int(end)])

    return {"substring": substring}


def report(node: str) -> NodeReport:
    return NodeReport(node=node, observed_at="2026-10-01T12:00:00Z", cgroup_v2=True, memory_controller=True,
                      recursive_prot=True, kubelet_policy="none", protectable_bytes=1, kubepods_min_bytes=0,
                      demanded_bytes=0, kernel_protected_bytes=0, kernel_protected_now_bytes=0,
                      outside_kubepods_min_bytes=0, accounted_bytes=0, drift_bytes=0, overcommit_bytes=0,
                      nri_honoured=None, nri_mismatches=0, offered_classes=None)


def decide(user: str, extra: dict[str, list[str]] | None, obj: dict, old: dict | None = None) -> list[str]:
    """The denial messages (empty = allowed), or ["not matched"] when the policy does not apply."""
    user_info: dict[str, Any] = {"username": user, "groups": ["system:serviceaccounts"]}
    if extra is not None:
        user_info["extra"] = extra
    activation: dict[str, Any] = {
        "request": celpy.json_to_cel({"userInfo": user_info, "operation": "UPDATE" if old else "CREATE"}),
        "object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old),
    }
    spec = policy()["spec"]
    for condition in spec["matchConditions"]:
        if not program(condition["expression"]).evaluate(activation):
            return ["not matched"]
    variables: dict[str, Any] = {}
    for variable in spec["variables"]:
        variables[variable["name"]] = program(variable["expression"]).evaluate(
            {**activation, "variables": celpy.celtypes.MapType(
                {celpy.celtypes.StringType(k): v for k, v in variables.items()})})
    activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
    denied = []
    for validation in spec["validations"]:
        result = program(validation["expression"]).evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), result  # an error would fail the request
        if not result:
            denied.append(validation.get("message") or str(program(validation["messageExpression"]).evaluate(
                activation)))
    return denied


def lease(node: str, holder: str | None = None, name: str | None = None) -> dict:
    obj = lease_object(report(node), "2026-10-01T12:00:00.000000Z", 90)
    if holder is not None:
        obj["spec"]["holderIdentity"] = holder
    if name is not None:
        obj["metadata"]["name"] = name
    return obj


def test_an_agent_writes_its_own_nodes_lease() -> None:
    assert decide(AGENT, {NODE_KEY: ["n1"]}, lease("n1")) == []
    assert decide(AGENT, {NODE_KEY: ["n1"]}, lease("n1"), old=lease("n1")) == []


def test_an_agent_cannot_write_another_nodes_lease() -> None:
    denied = decide(AGENT, {NODE_KEY: ["n1"]}, lease("n2"))
    assert any("may only write the Lease qosgate-node-n1, not qosgate-node-n2" in d for d in denied)
    assert decide(AGENT, {NODE_KEY: ["n1"]}, lease("n1", holder="n2"))  # right name, wrong holder
    assert decide(AGENT, {NODE_KEY: ["n1"]}, lease("n1"), old=lease("n1", holder="n2"))
    assert decide(AGENT, {NODE_KEY: ["n1"]}, lease("n1", name="qosgate-extender"))


def test_a_token_without_the_node_claim_writes_nothing() -> None:
    assert any("bound to its pod" in d for d in decide(AGENT, None, lease("n1")))
    assert decide(AGENT, {}, lease("n1"))
    assert decide(AGENT, {NODE_KEY: []}, lease("n1"))
    assert decide(AGENT, {NODE_KEY: ["n1", "n2"]}, lease("n1"))


def test_other_users_are_not_matched() -> None:
    assert decide("system:serviceaccount:qosgate-system:qosgate-extender", None, lease("n2")) == ["not matched"]


def test_long_node_names_use_the_hashed_lease_name() -> None:
    node = "n" * 245
    name = lease_name(node)
    assert len(name) == 70
    assert decide(AGENT, {NODE_KEY: [node]}, lease(node)) == []
    other = "n" * 40 + "x" * 205  # same first 40 characters, another node
    assert decide(AGENT, {NODE_KEY: [node]}, lease(other, name=lease_name(other)))  # its holder gives it away
