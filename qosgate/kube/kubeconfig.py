"""Kubeconfig documents → one `ClientConfig`: merging, relative paths and validation, without any I/O.

What kubectl (client-go `clientcmd`) does, to the extent qosgate needs it:

- Several files (`$KUBECONFIG` joined with `os.pathsep`) merge name by name: the first file that defines a
  cluster, user or context wins, and the first non-empty `current-context` wins (`merge_kubeconfigs`).
- Relative file references (certificate-authority, client-certificate, client-key, tokenFile, and an exec
  command containing a path separator) are resolved against the directory of the file that holds them,
  before merging (`resolve_paths`).
- Only one authentication method per user: a token (or tokenFile), basic auth, an exec plugin or an
  auth-provider; a client certificate may accompany any of them. `auth-provider` plugins (the removed
  in-tree gcp/azure/oidc providers) are refused with a message naming them.

Reading the files, the environment and the in-cluster service account is `qosgate.kube.config`'s job; the
transport that uses the result is `qosgate.kube.transport`.
"""

from __future__ import annotations

import base64
import binascii
import os.path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qosgate.core.errors import QosgateError

__all__ = [
    "EXEC_API_VERSIONS",
    "ClientConfig",
    "ExecPlugin",
    "KubeConfigError",
    "client_config",
    "merge_kubeconfigs",
    "resolve_paths",
]

# client.authentication.k8s.io/v1alpha1 was removed from client-go in 1.24.
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
# The named maps a kubeconfig holds: list key → the key of each entry's body.
_SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


class KubeConfigError(QosgateError):
    """No usable API server configuration; the message says what was tried or what is wrong, in one line."""


@dataclass(frozen=True)
class ExecPlugin:
    """A client-go credential plugin (`users[].user.exec`): a command printing an ExecCredential."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"
    # The cluster's `extensions[client.authentication.k8s.io/exec]`, handed to the plugin as cluster.config.
    cluster_config: Any = None


@dataclass(frozen=True)
class ClientConfig:
    """Everything needed to reach and authenticate to one API server. Data fields hold decoded bytes."""

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = None
    client_key_data: bytes | None = None
    exec_plugin: ExecPlugin | None = None
    impersonate_user: str | None = None
    impersonate_uid: str | None = None
    impersonate_groups: tuple[str, ...] = ()
    impersonate_extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    namespace: str | None = None
    # Where this came from ("kubeconfig /x, context y", "in-cluster service account"), for messages.
    source: str = ""

    @property
    def uses_tls(self) -> bool:
        return self.server.startswith("https://")


def _entries(doc: Mapping[str, Any], section: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, body) of each entry of clusters/users/contexts; a malformed entry is an error."""
    raw = doc.get(section)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise KubeConfigError(f"{where}: {section} must be a list, got {type(raw).__name__}")
    body_key = _SECTIONS[section]
    found = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise KubeConfigError(f"{where}: {section}[{index}] needs a name")
        body = entry.get(body_key)
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise KubeConfigError(f"{where}: {section}[{index}] ({entry['name']}): {body_key} must be a mapping")
        found.append((entry["name"], body))
    return found


def _absolute(value: Any, base: str) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(value):
        return os.path.join(base, value)
    return value


def resolve_paths(doc: Mapping[str, Any], base: str, where: str = "kubeconfig") -> dict[str, Any]:
    """A copy of `doc` whose relative file references are joined to `base` (the file's directory)."""
    resolved = dict(doc)
    for section, body_key in _SECTIONS.items():
        if section == "contexts" or doc.get(section) is None:
            continue
        entries = []
        for name, body in _entries(doc, section, where):
            fixed = dict(body)
            if section == "clusters":
                fixed["certificate-authority"] = _absolute(body.get("certificate-authority"), base)
            else:
                for key in ("client-certificate", "client-key", "tokenFile"):
                    fixed[key] = _absolute(body.get(key), base)
                plugin = body.get("exec")
                if isinstance(plugin, Mapping):
                    command = plugin.get("command")
                    # Like client-go: a bare command name is looked up on PATH, a relative path is the file's.
                    if isinstance(command, str) and os.sep in command:
                        fixed["exec"] = {**plugin, "command": _absolute(command, base)}
            entries.append({"name": name, body_key: {k: v for k, v in fixed.items() if v is not None}})
        resolved[section] = entries
    return resolved


def merge_kubeconfigs(docs: Sequence[Mapping[str, Any]], where: str = "kubeconfig") -> dict[str, Any]:
    """kubectl's merge: the first definition of each name wins, and the first non-empty current-context."""
    merged: dict[str, Any] = {section: [] for section in _SECTIONS}
    seen: dict[str, set[str]] = {section: set() for section in _SECTIONS}
    current = ""
    for doc in docs:
        for section, body_key in _SECTIONS.items():
            for name, body in _entries(doc, section, where):
                if name not in seen[section]:
                    seen[section].add(name)
                    merged[section].append({"name": name, body_key: dict(body)})
        value = doc.get("current-context")
        if not current and isinstance(value, str) and value:
            current = value
    merged["current-context"] = current
    return merged


def _string(body: Mapping[str, Any], key: str, where: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeConfigError(f"{where}: {key} must be a string, got {type(value).__name__}")
    return value


def _flag(body: Mapping[str, Any], key: str, where: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise KubeConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _data(body: Mapping[str, Any], key: str, where: str) -> bytes | None:
    text = _string(body, key, where)
    if text is None:
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KubeConfigError(f"{where}: {key} is not valid base64") from None


def _strings(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise KubeConfigError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def _exec_plugin(raw: Any, cluster: Mapping[str, Any], where: str) -> ExecPlugin:
    where = f"{where}: exec"
    if not isinstance(raw, Mapping):
        raise KubeConfigError(f"{where} must be a mapping")
    command = _string(raw, "command", where)
    if command is None:
        raise KubeConfigError(f"{where}: command is required")
    api_version = _string(raw, "apiVersion", where)
    if api_version not in EXEC_API_VERSIONS:
        raise KubeConfigError(f"{where}: apiVersion {api_version!r} is not supported "
                              f"(use {' or '.join(EXEC_API_VERSIONS)})")
    env: list[tuple[str, str]] = []
    raw_env = raw.get("env") or []
    if not isinstance(raw_env, list):
        raise KubeConfigError(f"{where}: env must be a list of {{name, value}}")
    for index, item in enumerate(raw_env):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"] \
                or not isinstance(item.get("value", ""), str):
            raise KubeConfigError(f"{where}: env[{index}] must have a name and a string value")
        env.append((item["name"], item.get("value") or ""))
    mode = _string(raw, "interactiveMode", where) or "IfAvailable"
    if mode not in _INTERACTIVE_MODES:
        raise KubeConfigError(f"{where}: interactiveMode {mode!r} is not one of {', '.join(_INTERACTIVE_MODES)}")
    if mode == "Always":
        raise KubeConfigError(f"{where}: the plugin requires an interactive terminal (interactiveMode: Always), "
                              "which a server process does not have")
    extension = None
    extensions = cluster.get("extensions")
    if isinstance(extensions, list):
        for item in extensions:
            if isinstance(item, Mapping) and item.get("name") == "client.authentication.k8s.io/exec":
                extension = item.get("extension")
    return ExecPlugin(command=command, args=_strings(raw.get("args"), "args", where), env=tuple(env),
                      api_version=api_version, install_hint=_string(raw, "installHint", where) or "",
                      provide_cluster_info=_flag(raw, "provideClusterInfo", where), interactive_mode=mode,
                      cluster_config=extension)


def _impersonation(user: Mapping[str, Any], where: str) -> dict[str, Any]:
    extra_raw = user.get("as-user-extra") or {}
    if not isinstance(extra_raw, Mapping):
        raise KubeConfigError(f"{where}: as-user-extra must be a mapping of lists of strings")
    extra = tuple(sorted((str(key), _strings(values, f"as-user-extra.{key}", where))
                         for key, values in extra_raw.items()))
    return {"impersonate_user": _string(user, "as", where), "impersonate_uid": _string(user, "as-uid", where),
            "impersonate_groups": _strings(user.get("as-groups"), "as-groups", where),
            "impersonate_extra": extra}


def client_config(merged: Mapping[str, Any], context: str | None, source: str) -> ClientConfig:
    """The ClientConfig of `context` (default: current-context) in a merged kubeconfig.

    `source` names the file(s) in messages, which are single lines ending in what to fix.
    """
    contexts = dict(_entries(merged, "contexts", source))
    name = context or merged.get("current-context") or ""
    if not isinstance(name, str) or not name:
        raise KubeConfigError(f"kubeconfig {source}: no current-context is set and no context was given")
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise KubeConfigError(f"kubeconfig {source}: context {name!r} not found (contexts: {known})")
    where = f"kubeconfig {source}, context {name}"
    ctx = contexts[name]
    cluster_name = _string(ctx, "cluster", where)
    clusters = dict(_entries(merged, "clusters", source))
    if cluster_name is None or cluster_name not in clusters:
        raise KubeConfigError(f"{where}: cluster {cluster_name!r} not found")
    cluster = clusters[cluster_name]
    user_name = _string(ctx, "user", where)
    users = dict(_entries(merged, "users", source))
    if user_name is not None and user_name not in users:
        raise KubeConfigError(f"{where}: user {user_name!r} not found")
    user: Mapping[str, Any] = users[user_name] if user_name is not None else {}

    cluster_where, user_where = f"{where}, cluster {cluster_name}", f"{where}, user {user_name}"
    server = _string(cluster, "server", cluster_where)
    if server is None:
        raise KubeConfigError(f"{cluster_where}: no server is set")
    if "://" not in server:
        server = f"https://{server}"
    if not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"{cluster_where}: server {server!r} must be an http:// or https:// URL")
    ca_file, ca_data = _string(cluster, "certificate-authority", cluster_where), \
        _data(cluster, "certificate-authority-data", cluster_where)
    insecure = _flag(cluster, "insecure-skip-tls-verify", cluster_where)
    if insecure and (ca_file or ca_data):
        raise KubeConfigError(f"{cluster_where}: insecure-skip-tls-verify cannot be combined with a "
                              "certificate-authority (kubectl refuses it too)")

    provider = user.get("auth-provider")
    if provider is not None:
        provider_name = provider.get("name") if isinstance(provider, Mapping) else None
        raise KubeConfigError(f"{user_where}: auth-provider {provider_name or '(unnamed)'!s} is not supported; "
                              "use an exec credential plugin (e.g. kubelogin, gke-gcloud-auth-plugin)")
    token, token_file = _string(user, "token", user_where), _string(user, "tokenFile", user_where)
    username, password = _string(user, "username", user_where), _string(user, "password", user_where)
    plugin = _exec_plugin(user["exec"], cluster, user_where) if user.get("exec") is not None else None
    methods = [method for method, present in (("token", token or token_file), ("basic auth", username or password),
                                               ("exec", plugin)) if present]
    if len(methods) > 1:
        raise KubeConfigError(f"{user_where}: more than one authentication method ({', '.join(methods)}); "
                              "only one is allowed")
    cert_file, cert_data = _string(user, "client-certificate", user_where), \
        _data(user, "client-certificate-data", user_where)
    key_file, key_data = _string(user, "client-key", user_where), _data(user, "client-key-data", user_where)
    for what, as_file, as_data in (("client-certificate", cert_file, cert_data), ("client-key", key_file, key_data)):
        if as_file and as_data:
            raise KubeConfigError(f"{user_where}: both {what} and {what}-data are set")
    if bool(cert_file or cert_data) != bool(key_file or key_data):
        raise KubeConfigError(f"{user_where}: a client certificate needs both a certificate and a key")
    if (cert_file or cert_data) and not server.startswith("https://"):
        raise KubeConfigError(f"{cluster_where}: a client certificate needs an https:// server")
    return ClientConfig(
        server=server.rstrip("/"), ca_file=ca_file, ca_data=ca_data, insecure_skip_tls_verify=insecure,
        tls_server_name=_string(cluster, "tls-server-name", cluster_where),
        proxy_url=_string(cluster, "proxy-url", cluster_where), token=token,
        token_file=token_file if not token else None,
        username=username, password=password, client_cert_file=cert_file, client_key_file=key_file,
        client_cert_data=cert_data, client_key_data=key_data, exec_plugin=plugin,
        namespace=_string(ctx, "namespace", where), source=where, **_impersonation(user, user_where),
    )
