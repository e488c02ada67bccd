"""Kubeconfig parsing without I/O: kubectl's merge, relative paths, validation, and one-line errors."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.kube.kubeconfig import ClientConfig, KubeConfigError, client_config, merge_kubeconfigs, resolve_paths


def kubeconfig(cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
               context: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": "https://api.example:6443", **(cluster or {})}}],
            "users": [{"name": "u", "user": user or {}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", **(context or {})}}]}


def parsed(**parts: Any) -> ClientConfig:
    return client_config(kubeconfig(**parts), None, "test")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- merging --------------------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "d"])
DOCS = st.lists(st.fixed_dictionaries({
    "clusters": st.lists(st.builds(lambda n, s: {"name": n, "cluster": {"server": f"https://{s}"}}, NAMES,
                                   st.integers(0, 999))),
    "current-context": st.sampled_from(["", "a", "b", "c"]),
}), max_size=5)


@given(DOCS)
def test_merge_keeps_the_first_definition_of_each_name_and_the_first_current_context(docs: list[Any]) -> None:
    merged = merge_kubeconfigs(docs)
    first: dict[str, Any] = {}
    for doc in docs:
        for entry in doc["clusters"]:
            first.setdefault(entry["name"], entry["cluster"])
    assert {e["name"]: e["cluster"] for e in merged["clusters"]} == first
    assert [e["name"] for e in merged["clusters"]] == list(first)  # in the order the names first appeared
    assert merged["current-context"] == next((d["current-context"] for d in docs if d["current-context"]), "")


def test_merge_combines_entries_from_several_files() -> None:
    one = kubeconfig()
    two = {"clusters": [{"name": "k", "cluster": {"server": "https://ignored"}},
                        {"name": "k2", "cluster": {"server": "https://second"}}],
           "contexts": [{"name": "c2", "context": {"cluster": "k2", "user": "u"}}], "current-context": "c2"}
    merged = merge_kubeconfigs([one, two])
    assert client_config(merged, None, "x").server == "https://api.example:6443"  # current-context of file 1
    assert client_config(merged, "c2", "x").server == "https://second"  # user u from file 1, cluster from 2


# --- relative paths -------------------------------------------------------------------------------------

SEGMENT = st.text(alphabet="abcxyz._-", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
RELATIVE = st.lists(SEGMENT, min_size=1, max_size=3).map(lambda parts: os.path.join(*parts))


@given(RELATIVE, RELATIVE, st.lists(SEGMENT, min_size=1, max_size=3).map(lambda p: os.path.join(os.sep, *p)))
def test_relative_file_references_resolve_against_the_file_directory(ca: str, key: str, base: str) -> None:
    doc = kubeconfig(cluster={"certificate-authority": ca},
                     user={"client-certificate": "/abs/client.crt", "client-key": key, "tokenFile": key,
                           "exec": {"command": os.path.join(".", ca), "apiVersion": "client.authentication.k8s.io/v1"}})
    resolved = resolve_paths(doc, base)
    cluster, user = resolved["clusters"][0]["cluster"], resolved["users"][0]["user"]
    assert cluster["certificate-authority"] == os.path.join(base, ca)
    assert user["client-key"] == user["tokenFile"] == os.path.join(base, key)
    assert user["client-certificate"] == "/abs/client.crt"  # absolute paths stay
    assert user["exec"]["command"] == os.path.join(base, ".", ca)
    assert resolve_paths(resolved, "/elsewhere") == resolved  # idempotent: everything is absolute now


def test_a_bare_exec_command_is_looked_up_on_path_not_resolved() -> None:
    doc = kubeconfig(user={"exec": {"command": "kubelogin", "apiVersion": "client.authentication.k8s.io/v1"}})
    assert resolve_paths(doc, "/base")["users"][0]["user"]["exec"]["command"] == "kubelogin"


# --- what a context yields ------------------------------------------------------------------------------

def test_cluster_and_user_fields() -> None:
    config = parsed(cluster={"certificate-authority-data": b64(b"CA PEM"), "tls-server-name": "api.internal",
                             "proxy-url": "http://proxy:3128"},
                    user={"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY"), "token": "t"},
                    context={"namespace": "team"})
    assert config.server == "https://api.example:6443" and config.ca_data == b"CA PEM"
    assert config.tls_server_name == "api.internal" and config.proxy_url == "http://proxy:3128"
    assert (config.client_cert_data, config.client_key_data, config.token) == (b"CERT", b"KEY", "t")
    assert config.namespace == "team" and "context c" in config.source


def test_a_static_token_wins_over_a_token_file_like_kubectl() -> None:
    config = parsed(user={"token": "static", "tokenFile": "/t"})
    assert config.token == "static" and config.token_file is None
    assert parsed(user={"tokenFile": "/t"}).token_file == "/t"


def test_server_without_scheme_is_https_and_trailing_slash_dropped() -> None:
    assert parsed(cluster={"server": "api.example:6443/"}).server == "https://api.example:6443"
    assert parsed(cluster={"server": "https://rancher/k8s/clusters/c-1/"}).server == "https://rancher/k8s/clusters/c-1"


def test_exec_plugin_fields() -> None:
    config = parsed(cluster={"extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"a": 1}}]},
                    user={"exec": {"command": "plugin", "args": ["get-token", "--x"], "apiVersion":
                                   "client.authentication.k8s.io/v1beta1", "env": [{"name": "A", "value": "1"}],
                                   "provideClusterInfo": True, "installHint": "brew install plugin"}})
    plugin = config.exec_plugin
    assert plugin is not None and plugin.command == "plugin" and plugin.args == ("get-token", "--x")
    assert plugin.env == (("A", "1"),) and plugin.provide_cluster_info and plugin.cluster_config == {"a": 1}
    assert plugin.api_version.endswith("v1beta1") and plugin.install_hint == "brew install plugin"


def test_impersonation() -> None:
    config = parsed(user={"token": "t", "as": "jane", "as-uid": "42", "as-groups": ["g1", "g2"],
                          "as-user-extra": {"scopes": ["view"]}})
    assert (config.impersonate_user, config.impersonate_uid, config.impersonate_groups) == ("jane", "42", ("g1", "g2"))
    assert config.impersonate_extra == (("scopes", ("view",)),)


@pytest.mark.parametrize("parts, message", [
    ({"user": {"auth-provider": {"name": "gcp"}}}, "auth-provider gcp is not supported"),
    ({"user": {"token": "t", "username": "u", "password": "p"}}, "more than one authentication method"),
    ({"user": {"token": "t", "exec": {"command": "x", "apiVersion": "client.authentication.k8s.io/v1"}}},
     "more than one authentication method"),
    ({"user": {"client-certificate": "/c", "client-certificate-data": b64(b"c"), "client-key": "/k"}},
     "both client-certificate and client-certificate-data"),
    ({"user": {"client-certificate": "/c"}}, "needs both a certificate and a key"),
    ({"cluster": {"insecure-skip-tls-verify": True, "certificate-authority": "/ca"}}, "cannot be combined"),
    ({"cluster": {"insecure-skip-tls-verify": "yes"}}, "must be true or false"),
    ({"cluster": {"certificate-authority-data": "not base64!"}}, "not valid base64"),
    ({"cluster": {"server": ""}}, "no server is set"),
    ({"cluster": {"server": "ftp://x"}}, "http:// or https://"),
    ({"user": {"exec": {"command": "x", "apiVersion": "client.authentication.k8s.io/v1alpha1"}}},
     "v1alpha1' is not supported"),
    ({"user": {"exec": {"command": "x", "apiVersion": "client.authentication.k8s.io/v1",
                        "interactiveMode": "Always"}}}, "interactive terminal"),
    ({"user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1"}}}, "command is required"),
    ({"context": {"user": "nobody"}}, "user 'nobody' not found"),
    ({"context": {"cluster": "nowhere"}}, "cluster 'nowhere' not found"),
])
def test_unusable_configurations_are_named_in_one_line(parts: dict[str, Any], message: str) -> None:
    with pytest.raises(KubeConfigError, match=message) as info:
        parsed(**parts)
    assert "\n" not in str(info.value)


def test_unknown_or_missing_context() -> None:
    with pytest.raises(KubeConfigError, match=r"context 'x' not found \(contexts: c\)"):
        client_config(kubeconfig(), "x", "test")
    with pytest.raises(KubeConfigError, match="no current-context"):
        client_config({**kubeconfig(), "current-context": ""}, None, "test")


def test_a_context_without_user_is_anonymous() -> None:
    doc = kubeconfig()
    doc["contexts"][0]["context"].pop("user")
    config = client_config(doc, None, "test")
    assert config.token is None and config.exec_plugin is None and config.client_cert_data is None


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=4),
                    max_leaves=12)
KEYS = st.sampled_from(["clusters", "users", "contexts", "current-context", "cluster", "user", "context", "name",
                        "server", "token", "exec", "command", "apiVersion", "env", "args", "as-groups",
                        "certificate-authority-data", "insecure-skip-tls-verify", "auth-provider"])
SHAPED = st.recursive(st.none() | st.booleans() | st.text(max_size=5) | st.just("c") | st.just("k"),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
                      max_leaves=20)


@settings(max_examples=300)
@given(st.one_of(JSON, SHAPED), st.sampled_from([None, "c"]))
def test_any_document_gives_a_config_or_a_one_line_error(doc: Any, context: str | None) -> None:
    if not isinstance(doc, dict):
        doc = {"clusters": doc}
    try:
        docs = [resolve_paths(doc, "/base")]
        client_config(merge_kubeconfigs(docs), context, "fuzz")
    except KubeConfigError as exc:
        assert "\n" not in str(exc)
