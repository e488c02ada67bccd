"""tests/support/kustomize.py: the kustomize subset manifests/ relies on, and refusals for the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.kustomize import MERGE_KEYS, KustomizeError, render, strategic_merge


def write(path: Path, *docs: Any, raw: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else yaml.safe_dump_all(docs, sort_keys=False))
    return path


def kustomization(directory: Path, **fields: Any) -> None:
    write(directory / "kustomization.yaml", {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                                             "kind": "Kustomization", **fields})


def configmap(name: str, namespace: str | None = "ns", **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"replicas": 1, "template": {"spec": {
            "containers": [
                {"name": "a", "image": "a:1", "args": ["x", "y"],
                 "env": [{"name": "E1", "value": "1"}, {"name": "E2", "value": "2"}],
                 "ports": [{"name": "https", "containerPort": 8443}, {"name": "health", "containerPort": 9440}]},
                {"name": "b", "image": "b:1"},
            ],
            "volumes": [{"name": "v1", "emptyDir": {}}],
        }}},
    }


def test_resources_files_multidoc_and_nested_directories(tmp_path: Path) -> None:
    write(tmp_path / "base" / "cms.yaml", raw="---\n" + yaml.safe_dump(configmap("one")) + "---\n\n---\n"
          + yaml.safe_dump(configmap("two")))
    kustomization(tmp_path / "base", resources=["cms.yaml"])
    write(tmp_path / "overlay" / "extra.yaml", configmap("three"))
    kustomization(tmp_path / "overlay", resources=["../base", "extra.yaml"])
    assert [o["metadata"]["name"] for o in render(tmp_path / "overlay")] == ["one", "two", "three"]


def test_unsupported_kustomization_keys_are_refused(tmp_path: Path) -> None:
    kustomization(tmp_path, resources=[], images=[{"name": "a", "newTag": "2"}])
    with pytest.raises(KustomizeError, match="unsupported keys"):
        render(tmp_path)


def test_missing_kustomization_and_missing_resource(tmp_path: Path) -> None:
    with pytest.raises(KustomizeError, match="no kustomization file"):
        render(tmp_path)
    kustomization(tmp_path, resources=["absent.yaml"])
    with pytest.raises(KustomizeError, match="no such file"):
        render(tmp_path)


def test_files_outside_the_root_are_refused_but_bases_are_not(tmp_path: Path) -> None:
    write(tmp_path / "outside.yaml", configmap("x"))
    kustomization(tmp_path / "k", resources=["../outside.yaml"])
    with pytest.raises(KustomizeError, match="outside the kustomization root"):
        render(tmp_path / "k")
    kustomization(tmp_path / "base", resources=["../outside.yaml"])  # still refused inside the base
    with pytest.raises(KustomizeError, match="outside"):
        render(tmp_path / "base")


def test_remote_resources_are_refused(tmp_path: Path) -> None:
    kustomization(tmp_path, resources=["https://github.com/example/repo//manifests?ref=v1"])
    with pytest.raises(KustomizeError, match="not a local path"):
        render(tmp_path)


def test_duplicate_ids_are_an_error_but_same_name_other_kind_is_not(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", configmap("same"), {"apiVersion": "v1", "kind": "Secret",
                                                  "metadata": {"name": "same", "namespace": "ns"}})
    kustomization(tmp_path, resources=["a.yaml"])
    assert len(render(tmp_path)) == 2
    write(tmp_path / "b.yaml", configmap("same"))
    kustomization(tmp_path, resources=["a.yaml", "b.yaml"])
    with pytest.raises(KustomizeError, match="already registered"):
        render(tmp_path)


def test_namespace_sets_namespaced_objects_only(tmp_path: Path) -> None:
    cluster_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "cr"}, "rules": []}
    write(tmp_path / "a.yaml", configmap("cm", namespace=None), configmap("other", namespace="elsewhere"),
          cluster_role)
    kustomization(tmp_path, resources=["a.yaml"], namespace="target")
    cm, other, role = render(tmp_path)
    assert cm["metadata"]["namespace"] == other["metadata"]["namespace"] == "target"
    assert "namespace" not in role["metadata"]


def test_namespace_over_objects_referencing_namespaces_is_refused(tmp_path: Path) -> None:
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "rb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                      "kind": "Role", "name": "r"},
               "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]}
    write(tmp_path / "a.yaml", binding)
    kustomization(tmp_path, resources=["a.yaml"], namespace="target")
    with pytest.raises(KustomizeError, match="RoleBinding"):
        render(tmp_path)


def test_patch_merges_maps_deletes_with_null_and_replaces_plain_lists(tmp_path: Path) -> None:
    base = configmap("cm", a="1", b="2")
    base["metadata"]["labels"] = {"keep": "yes", "drop": "yes"}
    write(tmp_path / "cm.yaml", base)
    write(tmp_path / "patch.yaml", {"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "cm", "labels": {"drop": None, "new": "yes"},
                                                 "annotations": {"x": "y"}},
                                    "data": {"b": "3"}})
    kustomization(tmp_path, resources=["cm.yaml"], patches=[{"path": "patch.yaml"}])
    (cm,) = render(tmp_path)
    assert cm["metadata"]["labels"] == {"keep": "yes", "new": "yes"}
    assert cm["metadata"]["annotations"] == {"x": "y"}
    assert cm["data"] == {"a": "1", "b": "3"}


def test_containers_env_ports_volumes_merge_by_their_keys() -> None:
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"template": {"spec": {
                 "containers": [
                     {"name": "b", "image": "b:2"},
                     {"name": "a", "args": ["z"], "env": [{"name": "E2", "value": "two"}, {"name": "E3", "value": "3"}],
                      "ports": [{"containerPort": 9440, "name": "metrics"}]},
                     {"name": "c", "image": "c:1"},
                 ],
                 "volumes": [{"name": "v2", "secret": {"secretName": "s"}}],
             }}}}
    merged = strategic_merge(deployment(), patch)
    containers = merged["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a", "b", "c"]  # order kept, new element appended
    a = containers[0]
    assert a["image"] == "a:1" and a["args"] == ["z"]  # scalar lists are replaced
    assert a["env"] == [{"name": "E1", "value": "1"}, {"name": "E2", "value": "two"}, {"name": "E3", "value": "3"}]
    assert a["ports"] == [{"name": "https", "containerPort": 8443}, {"name": "metrics", "containerPort": 9440}]
    assert containers[1]["image"] == "b:2"
    assert [v["name"] for v in merged["spec"]["template"]["spec"]["volumes"]] == ["v1", "v2"]


def test_service_ports_merge_by_port() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}
    patch = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
             "spec": {"ports": [{"port": 443, "targetPort": "https"}, {"name": "m", "port": 9440}]}}
    merged = strategic_merge(service, patch)
    assert merged["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https"},
                                       {"name": "m", "port": 9440}]


def test_webhooks_merge_by_name() -> None:
    config = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
              "metadata": {"name": "w"},
              "webhooks": [{"name": "a.x.io", "clientConfig": {"service": {"name": "s"}}, "timeoutSeconds": 3},
                           {"name": "b.x.io", "clientConfig": {"service": {"name": "s"}}}]}
    patch = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
             "metadata": {"name": "w"}, "webhooks": [{"name": "b.x.io", "clientConfig": {"caBundle": "Q0E="}}]}
    merged = strategic_merge(config, patch)
    assert merged["webhooks"][0] == config["webhooks"][0]
    assert merged["webhooks"][1]["clientConfig"] == {"service": {"name": "s"}, "caBundle": "Q0E="}
    assert "caBundle" not in config["webhooks"][1]["clientConfig"]  # inputs untouched


def test_custom_resource_lists_are_replaced_not_merged() -> None:
    cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
            "spec": {"containers": [{"name": "a", "x": 1}]}}
    patch = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
             "spec": {"containers": [{"name": "b"}]}}
    assert strategic_merge(cert, patch)["spec"]["containers"] == [{"name": "b"}]


def test_patch_element_without_merge_key_and_directives_are_refused() -> None:
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}
    with pytest.raises(KustomizeError, match="no merge key"):
        strategic_merge(deployment(), patch)
    for directive in ({"$patch": "delete", "name": "a"}, {"name": "a", "$setElementOrder/env": []}):
        patch["spec"]["template"]["spec"]["containers"] = [directive]
        with pytest.raises(KustomizeError, match="directive"):
            strategic_merge(deployment(), patch)


def test_patch_must_match_exactly_one_target(tmp_path: Path) -> None:
    write(tmp_path / "cms.yaml", configmap("cm", namespace="a"), configmap("cm", namespace="b"))
    write(tmp_path / "ambiguous.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    write(tmp_path / "pinned.yaml", {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "cm", "namespace": "b"}, "data": {"k": "v"}})
    write(tmp_path / "none.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nope"}})
    kustomization(tmp_path, resources=["cms.yaml"], patches=[{"path": "ambiguous.yaml"}])
    with pytest.raises(KustomizeError, match="matched 2"):
        render(tmp_path)
    kustomization(tmp_path, resources=["cms.yaml"], patches=[{"path": "none.yaml"}])
    with pytest.raises(KustomizeError, match="matched 0"):
        render(tmp_path)
    kustomization(tmp_path, resources=["cms.yaml"], patches=[{"path": "pinned.yaml"}])
    a, b = render(tmp_path)
    assert a["data"] == {} and b["data"] == {"k": "v"}


@pytest.mark.parametrize("entry", [
    {"patch": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"},
    {"path": "p.yaml", "target": {"kind": "ConfigMap"}},
    "p.yaml",
])
def test_other_patch_forms_are_refused(tmp_path: Path, entry: Any) -> None:
    write(tmp_path / "cm.yaml", configmap("cm"))
    write(tmp_path / "p.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    kustomization(tmp_path, resources=["cm.yaml"], patches=[entry])
    with pytest.raises(KustomizeError, match="only `patches: - path: FILE`"):
        render(tmp_path)


def _schema_merge_keys() -> dict[str, set[str]]:
    """Field name -> every x-kubernetes-patch-merge-key the Kubernetes OpenAPI schema gives it."""
    newest = f"v{kubernetes_validate.latest_version()}-local-strict"
    path = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / newest / "_definitions.json"
    definitions = json.loads(path.read_text())
    definitions = definitions.get("$defs", definitions.get("definitions", {}))
    keys: dict[str, set[str]] = {}
    for definition in definitions.values():
        for field, schema in (definition.get("properties") or {}).items():
            if "x-kubernetes-patch-merge-key" in schema:  # lists of objects; scalar lists have none
                keys.setdefault(field, set()).add(schema["x-kubernetes-patch-merge-key"])
    return keys


def test_merge_key_table_agrees_with_the_kubernetes_schema() -> None:
    schema = _schema_merge_keys()
    for field, key in MERGE_KEYS.items():
        assert key in schema.get(field, set()), f"{field}: schema merge keys {schema.get(field)}, table says {key}"
    assert schema["ports"] >= {"containerPort", "port"}  # the two keys _merge_key picks by context
