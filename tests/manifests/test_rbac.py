"""RBAC: each service account gets exactly the API access the code uses, and nothing more."""

from __future__ import annotations

from qosgate.cli.main import build_parser
from tests.manifests.helpers import EXTENDER, NAMESPACE, WEBHOOK, Obj, kinds, one

CLUSTER = "*cluster*"
ALL = None  # no resourceNames: every object of the resource
LEASE = "qosgate-extender"
AGENT = "qosgate-agent"
AGENT_NAMESPACE = "qosgate-node"  # the node agent's own (privileged) namespace
ACCOUNT_NAMESPACES = {WEBHOOK: NAMESPACE, EXTENDER: NAMESPACE, AGENT: AGENT_NAMESPACE}

# (service account, where the grant applies, API group, resource, verb, resourceName)
EXPECTED = {
    # webhook: quota usage (pods) and quota ConfigMaps + catalog, cluster-wide, read-only
    (WEBHOOK, CLUSTER, "", "pods", "list", ALL),
    (WEBHOOK, CLUSTER, "", "pods", "watch", ALL),
    (WEBHOOK, CLUSTER, "", "configmaps", "list", ALL),
    (WEBHOOK, CLUSTER, "", "configmaps", "watch", ALL),
    # webhook: its quota ledgers qosgate-quota-<namespace>, in qosgate-system only (names depend on the
    # tenant namespaces, so no resourceNames; create can never take them)
    (WEBHOOK, NAMESPACE, "", "configmaps", "get", ALL),
    (WEBHOOK, NAMESPACE, "", "configmaps", "create", ALL),
    (WEBHOOK, NAMESPACE, "", "configmaps", "update", ALL),
    # extender: pods and nodes, cluster-wide, read-only; it binds
    (EXTENDER, CLUSTER, "", "pods", "get", ALL),
    (EXTENDER, CLUSTER, "", "pods", "list", ALL),
    (EXTENDER, CLUSTER, "", "pods", "watch", ALL),
    (EXTENDER, CLUSTER, "", "nodes", "list", ALL),
    (EXTENDER, CLUSTER, "", "nodes", "watch", ALL),
    (EXTENDER, CLUSTER, "", "pods/binding", "create", ALL),
    # extender: its leader-election Lease, in qosgate-system only
    (EXTENDER, NAMESPACE, "coordination.k8s.io", "leases", "create", ALL),
    (EXTENDER, NAMESPACE, "coordination.k8s.io", "leases", "get", LEASE),
    (EXTENDER, NAMESPACE, "coordination.k8s.io", "leases", "update", LEASE),
    # extender: the node agents' report Leases (label-selected, one per node: no resourceNames), read-only
    (EXTENDER, NAMESPACE, "coordination.k8s.io", "leases", "list", ALL),
    (EXTENDER, NAMESPACE, "coordination.k8s.io", "leases", "watch", ALL),
    # extender: the catalog (protectablePercent, accounting mode, classes), followed live: a watch narrowed
    # to the one object by a metadata.name field selector, which resourceNames can restrict
    (EXTENDER, NAMESPACE, "", "configmaps", "list", "qosgate-classes"),
    (EXTENDER, NAMESPACE, "", "configmaps", "watch", "qosgate-classes"),
    # node agent (manifests/base/agent-rbac.yaml explains each): its node's pods (a field selector RBAC
    # cannot express), its own Node, its report Lease in qosgate-system (the name is pinned by the
    # ValidatingAdmissionPolicy, not RBAC), a watch of the catalog and the NRI plugin's config by name, events on
    # Nodes.
    (AGENT, CLUSTER, "", "pods", "list", ALL),
    (AGENT, CLUSTER, "", "pods", "watch", ALL),
    (AGENT, CLUSTER, "", "nodes", "get", ALL),
    (AGENT, NAMESPACE, "coordination.k8s.io", "leases", "create", ALL),
    (AGENT, NAMESPACE, "coordination.k8s.io", "leases", "get", ALL),
    (AGENT, NAMESPACE, "coordination.k8s.io", "leases", "update", ALL),
    (AGENT, NAMESPACE, "", "configmaps", "list", "qosgate-classes"),
    (AGENT, NAMESPACE, "", "configmaps", "watch", "qosgate-classes"),
    (AGENT, "kube-system", "", "configmaps", "get", "nri-memory-qos-config.default"),
    (AGENT, "default", "", "events", "create", ALL),
}
# Writes outside qosgate-system, each on purpose: binding pods is the extender's job; Node events are
# recorded in `default` (where kubelet's own Node events go).
WRITES_ELSEWHERE = {(EXTENDER, CLUSTER, "pods/binding"), (AGENT, "default", "events")}


def grants(objects: list[Obj]) -> set[tuple[str, str, str, str, str, str | None]]:
    """Expand every (Cluster)RoleBinding of a service account into single grants."""
    found = set()
    for binding in kinds(objects, "ClusterRoleBinding") + kinds(objects, "RoleBinding"):
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        namespace = binding["metadata"].get("namespace")
        scope = namespace if binding["kind"] == "RoleBinding" else CLUSTER
        role = one(objects, ref["kind"], ref["name"], namespace if ref["kind"] == "Role" else None)
        assert not role.get("aggregationRule"), "aggregated roles would grant whatever else matches"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", subject
            assert subject["namespace"] == ACCOUNT_NAMESPACES[subject["name"]], subject
            for rule in role["rules"]:
                assert not rule.get("nonResourceURLs"), rule
                names = rule.get("resourceNames") or [ALL]
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            for name in names:
                                found.add((subject["name"], scope, group, resource, verb, name))
    return found


def test_grants_are_exactly_the_table(installs: dict[str, list[Obj]]) -> None:
    for install, objects in installs.items():
        found = grants(objects)
        assert found == EXPECTED, f"{install}: extra {found - EXPECTED}, missing {EXPECTED - found}"


def test_no_wildcards_and_no_unbound_roles(base: list[Obj]) -> None:
    roles = kinds(base, "ClusterRole") + kinds(base, "Role")
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], role["metadata"]["name"]
    bindings = kinds(base, "ClusterRoleBinding") + kinds(base, "RoleBinding")
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
    assert {(r["kind"], r["metadata"]["name"]) for r in roles} == bound


def test_namespaced_writes_are_role_scoped(base: list[Obj]) -> None:
    """Every write is confined to qosgate-system — except the listed few."""
    for account, scope, _, resource, verb, _ in EXPECTED:
        if verb not in {"get", "list", "watch"} and (account, scope, resource) not in WRITES_ELSEWHERE:
            assert scope == NAMESPACE, (account, resource, verb)
    scopes = {scope for _, scope, *_ in EXPECTED} - {CLUSTER}
    for role in kinds(base, "Role"):
        assert role["metadata"]["namespace"] in scopes


def test_lease_names_match_the_extender_defaults(base: list[Obj]) -> None:
    deployment = one(base, "Deployment", EXTENDER, NAMESPACE)
    args = build_parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.leader_elect and (args.lease_namespace, args.lease_name) == (NAMESPACE, LEASE)
