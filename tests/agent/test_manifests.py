"""The agent's manifests: the DaemonSet runs the CLI as documented with the least privilege that can write
cgroup files, and the admission policy names the agent's real service account."""

from __future__ import annotations

import argparse

from qosgate.cli.agent import add_agent_parser
from qosgate.core.nodereport import LEASE_NAMESPACE
from tests.manifests.helpers import BASE, one
from tests.support.kustomize import render


def objects() -> list[dict]:
    return render(BASE)


def test_daemonset_runs_everywhere_with_least_privilege() -> None:
    rendered = objects()
    ds = one(rendered, "DaemonSet", "qosgate-agent", "qosgate-node")
    pod = ds["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0  # cgroupfs files are root-owned 0644: owner write, no capability
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name"}
    parser = argparse.ArgumentParser()
    add_agent_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    assert volumes["cgroup"] == "/sys/fs/cgroup" and mounts["cgroup"] == args.cgroup_root
    assert args.state_file.startswith(mounts["state"] + "/") and volumes["state"] == "/var/lib/qosgate-agent"
    assert args.lease_namespace == LEASE_NAMESPACE and args.health_port == 9442
    assert {p["containerPort"] for p in container["ports"]} == {9442}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    assert container["resources"]["limits"]["memory"]


def test_policy_matches_the_agents_service_account_and_the_report_namespace() -> None:
    rendered = objects()
    sa = one(rendered, "ServiceAccount", "qosgate-agent", "qosgate-node")
    ds = one(rendered, "DaemonSet", "qosgate-agent", "qosgate-node")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    policy = one(rendered, "ValidatingAdmissionPolicy", "qosgate-agent-own-node-report")
    (condition,) = policy["spec"]["matchConditions"]
    assert '"system:serviceaccount:qosgate-node:qosgate-agent"' in condition["expression"]
    binding = one(rendered, "ValidatingAdmissionPolicyBinding", "qosgate-agent-own-node-report")
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": LEASE_NAMESPACE}
    role = one(rendered, "Role", "qosgate-agent-report", LEASE_NAMESPACE)
    lease_rule = next(r for r in role["rules"] if r["resources"] == ["leases"])
    assert sorted(lease_rule["verbs"]) == ["create", "get", "update"]  # no delete, no patch
    namespace = one(rendered, "Namespace", "qosgate-node")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
