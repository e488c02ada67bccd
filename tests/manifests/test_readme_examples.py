"""The kustomizations manifests/README.md tells users to write render with the real kustomize and do what
the README says: narrowing the NetworkPolicies' control-plane ipBlocks, labelling the monitoring objects."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.manifests.helpers import EXTENDER, MANIFESTS, NAMESPACE, WEBHOOK, Obj, kinds, manifests_copy, one
from tests.support.kustomize import render


def example(name: str) -> str:
    """The YAML block of the README that starts with the comment `# NAME/kustomization.yaml`."""
    blocks = re.findall(r"```yaml\n(# ([\w-]+)/kustomization\.yaml\n.*?)```", (MANIFESTS / "README.md").read_text(),
                        re.S)
    (found,) = [text for text, folder in blocks if folder == name]
    return found


def write_example(name: str, tmp: Path) -> Path:
    root = manifests_copy(tmp)  # tmp/manifests, so the example's ../manifests/... resolves
    folder = root / name
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(example(name))
    return folder


def ingress_peers(objects: list[Obj], name: str, port: int) -> list[dict]:
    policy = one(objects, "NetworkPolicy", name, NAMESPACE)
    return [peer for rule in policy["spec"]["ingress"] if port in {p["port"] for p in rule["ports"]}
            for peer in rule.get("from", [{}])]


def test_narrowing_the_control_plane_ip_blocks(tmp_path: Path, cert_manager: list[Obj]) -> None:
    narrowed = render(write_example("my-qosgate", tmp_path))
    for name, port in ((WEBHOOK, 8443), (EXTENDER, 8444)):
        before = ingress_peers(cert_manager, name, port)
        after = ingress_peers(narrowed, name, port)
        assert {"ipBlock": {"cidr": "0.0.0.0/0"}} in before and {"ipBlock": {"cidr": "::/0"}} in before
        assert [p for p in after if "ipBlock" in p] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}], name
        # Nothing else changes: the second scheduler's podSelector stays, the health ports stay open.
        assert [p for p in after if "ipBlock" not in p] == [p for p in before if "ipBlock" not in p]
    untouched = {(o["kind"], o["metadata"]["name"]) for o in cert_manager if o["kind"] != "NetworkPolicy"}
    assert {(o["kind"], o["metadata"]["name"]) for o in narrowed if o["kind"] != "NetworkPolicy"} == untouched


def test_labelling_the_monitoring_objects_for_a_prometheus_selector(tmp_path: Path, monitoring: list[Obj]) -> None:
    labelled = render(write_example("my-monitoring", tmp_path))
    for kind in ("PrometheusRule", "ServiceMonitor"):
        (obj,) = kinds(labelled, kind)
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (monitor,) = kinds(labelled, "ServiceMonitor")
    (original,) = kinds(monitoring, "ServiceMonitor")
    assert monitor["spec"] == original["spec"]  # selectors untouched: it still finds the metrics Services
    for service in kinds(labelled, "Service"):
        original_service = one(monitoring, "Service", service["metadata"]["name"])
        assert service["spec"]["selector"] == original_service["spec"]["selector"]
    assert yaml.safe_load(example("my-monitoring"))["resources"] == ["../manifests/overlays/monitoring"]
