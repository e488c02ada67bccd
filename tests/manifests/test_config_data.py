"""The shipped configuration data: catalog, default quota and the NRI plugin's config agree with each other
and with the code that reads them."""

from __future__ import annotations

import yaml

from qosgate.core import annotations
from qosgate.core.catalog import CATALOG_DATA_KEY, catalog_from_configmap
from qosgate.core.quota import QUOTA_DATA_KEY, QUOTA_LABEL_VALUE, quota_from_configmap
from tests.manifests.helpers import NAMESPACE, Obj, one

NRI_CONFIGMAP = "nri-memory-qos-config.default"  # the name the plugin's DaemonSet mounts


def nri_config(nri: list[Obj]) -> dict:
    configmap = one(nri, "ConfigMap", NRI_CONFIGMAP, "kube-system")
    assert set(configmap["data"]) == {"config.yaml"}
    return yaml.safe_load(configmap["data"]["config.yaml"])


def test_catalog_parses_with_the_webhooks_own_loader(base: list[Obj]) -> None:
    configmap = one(base, "ConfigMap", annotations.CATALOG_CONFIGMAP, NAMESPACE)
    assert set(configmap["data"]) == {CATALOG_DATA_KEY}
    catalog = catalog_from_configmap(configmap)
    assert set(catalog.resources["memory-qos"].classes) == {"gold", "silver", "bronze"}
    assert catalog.backends == ("nri-memory-qos",)


def test_default_quota_parses_and_names_only_catalog_classes(base: list[Obj]) -> None:
    configmap = one(base, "ConfigMap", "qosgate-default-quota", NAMESPACE)
    assert configmap["metadata"]["labels"][annotations.QUOTA_LABEL] == QUOTA_LABEL_VALUE
    assert set(configmap["data"]) == {QUOTA_DATA_KEY}
    quota = quota_from_configmap(configmap)
    assert quota.enforcement == "deny"
    catalog = catalog_from_configmap(one(base, "ConfigMap", annotations.CATALOG_CONFIGMAP, NAMESPACE))
    known = {(r.name, c) for r in catalog.resources.values() for c in r.classes}
    assert set(quota.class_names()) <= known
    assert quota.pod and quota.container


def test_nri_plugin_config(nri: list[Obj]) -> None:
    config = nri_config(nri)
    assert set(config) == {"unifiedannotations", "classes"}
    # The plugin fails container creation for any <file>.memory-qos.nri.io key not listed here; qosgate
    # writes exactly these two.
    assert config["unifiedannotations"] == ["memory.min", "memory.high"]
    for prefix in (annotations.NRI_MEMORY_MIN_PREFIX, annotations.NRI_MEMORY_HIGH_PREFIX):
        assert prefix.removesuffix(annotations.NRI_SUFFIX + "/") in config["unifiedannotations"]
    classes = {c["name"]: c for c in config["classes"]}
    assert set(classes) == {"gold", "silver", "bronze"}
    for klass in classes.values():
        assert set(klass) == {"name", "swaplimitratio"}
        assert 0 <= klass["swaplimitratio"] < 1  # memory.high = limit × (1 − ratio) must stay above 0


def test_every_nri_class_of_the_catalog_is_known_to_the_plugin(base: list[Obj], nri: list[Obj]) -> None:
    catalog = catalog_from_configmap(one(base, "ConfigMap", annotations.CATALOG_CONFIGMAP, NAMESPACE))
    plugin_classes = {c["name"] for c in nri_config(nri)["classes"]}
    wanted = {c.nri_class for r in catalog.resources.values() for c in r.classes.values() if c.nri_class}
    assert wanted and wanted <= plugin_classes  # an unknown class fails container creation on the node
