"""HTTP front end and the public :class:`FakeAPIServer`.

A stdlib ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1 keep-alive) is enough:
the official client pools connections, watches are long-lived chunked responses that each park a
thread on an ``Event``, and plain threads make "cut every watch socket now" (``drop_watches``)
trivial — which an asyncio server would make awkward.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import socketserver
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from .admission import Admission, UserInfo, Webhook, make_client
from .errors import APIError
from .resources import Registry, ResourceType
from .rest import Request, RequestRecord, Response, RestAPI, WatchPlan, full, parse_bool, parse_path, rbac_verb
from .selectors import compile_label_selector_object
from .store import Store

Authorizer = Callable[[UserInfo, RequestRecord], bool]
_UNAUTHENTICATED_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})


def _warning_header(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{escaped}"'


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], api: FakeAPIServer) -> None:
        self.api = api
        super().__init__(addr, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse-DNS getfqdn(); skip it (slow/absent DNS in sandboxes).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection resets from clients that went away are routine for a test server.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Nagle + delayed ACK would add ~40 ms to every small response and every watch event.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # ----- plumbing --------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(
        self,
        code: int,
        body: Any,
        warnings: Iterable[str] = (),
        content_type: str = "application/json",
        method: str = "GET",
    ) -> None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        head = [
            f"HTTP/1.1 {code} {self.responses.get(code, ('',))[0]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(data)}",
            "Cache-Control: no-cache, private",
        ]
        head += [f"Warning: {_warning_header(w)}" for w in dict.fromkeys(warnings)]
        if self.close_connection:
            head.append("Connection: close")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace")
        # One write per response: header and body in the same segment.
        self.wfile.write(payload if method == "HEAD" else payload + data)

    def _serve(self, method: str) -> None:
        api = self.server.api
        body = self._read_body()
        try:
            self._dispatch(api, method, body)
        except APIError as exc:
            self._send(exc.code, exc.status(), exc.warnings, method=method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a fake-server bug: surface it to the client *and* the test
            api.server_errors.append(traceback.format_exc())
            err = APIError(500, f"Internal error occurred: fakeapi bug: {exc!r}", "InternalError")
            with contextlib.suppress(OSError):
                self._send(500, err.status(), method=method)

    def _dispatch(self, api: FakeAPIServer, method: str, body: bytes) -> None:
        split = urllib.parse.urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        if path in _UNAUTHENTICATED_PATHS:
            if path == "/version":
                self._send(200, api.version_info(), method=method)
            else:
                self._send(200, b"ok", content_type="text/plain; charset=utf-8", method=method)
            return
        user = api._authenticate(self.headers.get("Authorization", ""))
        if user is None:
            raise APIError(401, "Unauthorized", "Unauthorized")
        info = parse_path(path)
        if info is None:
            doc = api._discovery(path)
            if doc is None:
                raise APIError(404, "the server could not find the requested resource", "NotFound")
            self._send(200, doc, method=method)
            return
        watch = False
        if method == "GET" and "watch" in query:
            with contextlib.suppress(APIError):
                watch = parse_bool("watch", query["watch"])
        info.verb = rbac_verb(method, info, watch)
        record = RequestRecord(user.username, info.verb, info.group, info.resource, info.subresource, info.namespace)
        api.requests_log.append(record)
        if api.authorizer is not None and not api.authorizer(user, record):
            raise _forbidden(user, record, info.name)
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        req = Request(method, info, query, ctype, body, user)
        result = api._rest.handle(req)
        if isinstance(result, WatchPlan):
            self._stream_watch(api, result)
            return
        assert isinstance(result, Response)
        self._send(result.code, result.body, result.warnings, method=method)

    # ----- watch streaming -----------------------------------------------------------------------------
    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _client_gone(self) -> bool:
        # A watch client never sends anything: readable + empty peek means it hung up.
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _stream_watch(self, api: FakeAPIServer, plan: WatchPlan) -> None:
        store = api._store
        w = plan.watcher
        w.conn = self.connection
        rt = plan.rt
        kind, av = rt.kind, rt.api_version

        def event(etype: str, obj: dict[str, Any]) -> bytes:
            return orjson.dumps({"type": etype, "object": {"kind": kind, "apiVersion": av, **obj}}) + b"\n"

        def bookmark(rv: int, initial_end: bool = False) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return (
                orjson.dumps({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": av, "metadata": meta}}) + b"\n"
            )

        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Cache-Control: no-cache, private\r\n\r\n"
        )
        clean_end = False
        try:
            self.wfile.write(head)
            if w.error is not None:
                self._write_chunk(orjson.dumps({"type": "ERROR", "object": w.error}) + b"\n")
                clean_end = True
                return
            for i in range(0, len(plan.initial), 500):
                self._write_chunk(b"".join(event("ADDED", o) for o in plan.initial[i : i + 500]))
            if plan.send_initial:
                self._write_chunk(bookmark(plan.initial_rv, initial_end=True))
            deadline = time.monotonic() + plan.timeout_seconds if plan.timeout_seconds else None
            next_bookmark = time.monotonic() + api.bookmark_interval
            while True:
                now = time.monotonic()
                wait = 1.0  # upper bound so a vanished client is noticed
                if plan.allow_bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
                w.wake.wait(wait)
                w.wake.clear()
                if w.dropped or api._stopping:
                    return
                events, rv = store.drain(w)
                buf = b"".join(event(t, o) for t, o in events)
                now = time.monotonic()
                if plan.allow_bookmarks and (now >= next_bookmark or w.force_bookmark):
                    w.force_bookmark = False
                    buf += bookmark(rv)
                    next_bookmark = now + api.bookmark_interval
                if buf:
                    self._write_chunk(buf)
                elif self._client_gone():
                    return
                if deadline is not None and now >= deadline:
                    clean_end = True
                    return
        except OSError:
            clean_end = False
        finally:
            store.unwatch(w)
            if clean_end and not w.dropped:
                with contextlib.suppress(OSError):
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self.close_connection = True


def _forbidden(user: UserInfo, rec: RequestRecord, name: str) -> APIError:
    res = f"{rec.resource}/{rec.subresource}" if rec.subresource else rec.resource
    qualified = f"{rec.resource}.{rec.api_group}" if rec.api_group else rec.resource
    subject = f'{qualified} "{name}"' if name else qualified
    scope = f'in the namespace "{rec.namespace}"' if rec.namespace else "at the cluster scope"
    msg = (
        f'{subject} is forbidden: User "{user.username}" cannot {rec.verb} resource "{res}" '
        f'in API group "{rec.api_group}" {scope}'
    )
    details: dict[str, Any] = {"name": name, "kind": rec.resource}
    if rec.api_group:
        details["group"] = rec.api_group
    return APIError(403, msg, "Forbidden", details)


class FakeAPIServer:
    """A kube-apiserver stand-in on 127.0.0.1 that the official ``kubernetes`` client talks to unchanged.

    See tests/fakeapi/README.md for semantics and known differences from the real server.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        bookmark_interval: float = 1.0,
        history_size: int = 300_000,
        enforce_namespaces: bool = True,
        version: tuple[str, str] = ("1", "37"),
    ) -> None:
        self.host = host
        self.port = port
        self.bookmark_interval = bookmark_interval
        self.version = version
        self.registry = Registry()
        self._store = Store(self.registry, history_size=history_size)
        self._admission = Admission()
        self._rest = RestAPI(self.registry, self._store, self._admission, enforce_namespaces)
        self._users: dict[str, UserInfo] = {}
        self.add_user("admin", "admin", ["system:masters", "system:authenticated"])
        #: (username, verb, apiGroup, resource, subresource, namespace) per served resource request.
        self.requests_log: list[RequestRecord] = []
        #: Optional RBAC stand-in: return False to answer 403 Forbidden like the real authorizer.
        self.authorizer: Authorizer | None = None
        #: Tracebacks of unexpected exceptions inside the fake (a test can assert this stays empty).
        self.server_errors: list[str] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._stopping = False
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        # The namespaces a fresh cluster always has.
        self._store.seed(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for n in ("default", "kube-system", "kube-public", "kube-node-lease")
        )

    # ----- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeAPIServer:
        if self._httpd is not None:
            return self
        self._stopping = False
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping = True
        httpd.shutdown()
        self.drop_watches()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._admission.close()
        if self._store.froze_gc:
            # Give objects frozen after a bulk seed back to the collector (they are freed with the store).
            gc.unfreeze()
            self._store.froze_gc = False
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> FakeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ----- identities & client config --------------------------------------------------------------------
    def add_user(
        self,
        token: str,
        username: str,
        groups: list[str] | None = None,
        *,
        uid: str = "",
        extra: dict[str, list[str]] | None = None,
    ) -> None:
        """Map a bearer token to an identity (``system:authenticated`` is always added, like upstream)."""
        gs = list(groups or [])
        if "system:authenticated" not in gs:
            gs.append("system:authenticated")
        self._users[token] = UserInfo(username, tuple(gs), uid, dict(extra or {}))

    def remove_user(self, token: str) -> None:
        """Stop accepting a bearer token (a rotated or revoked credential): its requests get 401."""
        self._users.pop(token, None)

    def _authenticate(self, header: str) -> UserInfo | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self._users.get(token.strip())

    def write_kubeconfig(self, path: str | os.PathLike[str], token: str = "admin", namespace: str = "default") -> str:
        """Write a kubeconfig for ``kubernetes.config.load_kube_config(config_file=path)``; returns the path."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fakeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "fakeapi-user", "user": {"token": token}}],
            "contexts": [
                {"name": "fakeapi", "context": {"cluster": "fakeapi", "user": "fakeapi-user", "namespace": namespace}}
            ],
            "current-context": "fakeapi",
        }
        p = os.fspath(path)
        with open(p, "wb") as fh:
            fh.write(orjson.dumps(cfg, option=orjson.OPT_INDENT_2))  # JSON is valid YAML
        return p

    def api_client(self, token: str = "admin") -> Any:
        """A ``kubernetes.client.ApiClient`` configured through a kubeconfig written by this server."""
        from kubernetes import config

        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="fakeapi-")
        path = self.write_kubeconfig(
            os.path.join(self._tmpdir.name, f"kubeconfig-{len(os.listdir(self._tmpdir.name))}"), token=token
        )
        return config.new_client_from_config(config_file=path)

    def kube_client(self, token: str = "admin") -> Any:
        """qosgate's own client (``qosgate.kube.transport.KubeClient``) through a kubeconfig written by this server."""
        from qosgate.kube.config import load_api_client

        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="fakeapi-")
        path = self.write_kubeconfig(
            os.path.join(self._tmpdir.name, f"kubeconfig-{len(os.listdir(self._tmpdir.name))}"), token=token
        )
        return load_api_client(path)

    def version_info(self) -> dict[str, str]:
        major, minor = self.version
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{major}.{minor}.0-fakeapi",
            "gitCommit": "fakeapi",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _discovery(self, path: str) -> dict[str, Any] | None:
        parts = [p for p in path.split("/") if p]
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            }
        if parts == ["api", "v1"]:
            return self.registry.resource_list("", "v1")
        if parts == ["apis"]:
            return self.registry.group_list()
        if len(parts) == 2 and parts[0] == "apis":
            return self.registry.group_doc(parts[1])
        if len(parts) == 3 and parts[0] == "apis":
            return self.registry.resource_list(parts[1], parts[2])
        return None

    # ----- data helpers (bypass HTTP, auth and admission) ------------------------------------------------
    def register_resource(
        self, group: str, version: str, resource: str, kind: str, *, namespaced: bool = True, **flags: Any
    ) -> ResourceType:
        """Serve an extra type (e.g. a CRD); ``flags`` are :class:`ResourceType` fields."""
        rt = ResourceType(group, version, resource, kind, namespaced=namespaced, **flags)
        self.registry.add(rt)
        return rt

    def seed(self, objs: Iterable[dict[str, Any]]) -> int:
        """Bulk insert (or overwrite) objects as if written to etcd directly; returns the resulting revision.

        Each object gets a resourceVersion, and a uid/creationTimestamp unless it has one. Watchers
        see ADDED (or MODIFIED) events. No defaulting, validation or admission happens.
        """
        return self._store.seed(objs)

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A private copy of one object as served (with kind/apiVersion), or None.

        ``resource``: ``"pods"``, ``"deployments.apps"``, ``"apps/v1/deployments"``, ``"v1/pods"`` or a kind.
        """
        rt = self.registry.lookup(resource)
        obj = self._store.get(rt, (namespace or "") if rt.namespaced else "", name)
        return None if obj is None else orjson.loads(orjson.dumps(full(rt, obj)))

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Private copies of every stored object of a type (optionally one namespace), in key order."""
        rt = self.registry.lookup(resource)
        items = self._store.list(rt, namespace, None).items
        return orjson.loads(orjson.dumps([full(rt, o) for o in items]))

    @property
    def resource_version(self) -> int:
        return self._store.current_rv()

    # ----- resilience knobs -----------------------------------------------------------------------------
    def drop_watches(self) -> int:
        """Abruptly cut every open watch stream (no terminating chunk). Returns how many were cut."""
        watchers = self._store.all_watchers()
        for w in watchers:
            w.dropped = True
            if w.conn is not None:
                with contextlib.suppress(OSError):
                    w.conn.shutdown(socket.SHUT_RDWR)
            w.wake.set()
            self._store.unwatch(w)
        return len(watchers)

    def open_watches(self, resource: str | None = None) -> int:
        rk = self.registry.lookup(resource).key if resource else None
        return sum(1 for w in self._store.all_watchers() if rk is None or w.rkey == rk)

    def compact(self) -> int:
        """Forget all history: watches/continues from any older resourceVersion now get 410 Gone."""
        self._store.compact()
        return self._store.current_rv()

    def send_bookmarks(self) -> None:
        """Make every watch that allows bookmarks emit one now (instead of waiting for the interval)."""
        for w in self._store.all_watchers():
            w.force_bookmark = True
            w.wake.set()

    # ----- admission -------------------------------------------------------------------------------------
    def add_admission_webhook(
        self,
        name: str,
        kind: str,
        url: str,
        ca_pem: bytes,
        server_hostname: str | None = None,
        rules: list[dict[str, Any]] | None = None,
        failure_policy: str = "Fail",
        timeout_seconds: int = 10,
        namespace_exclude: Iterable[str] = ("kube-system", "qosgate-system"),
        *,
        object_selector: dict[str, Any] | None = None,
        side_effects: str = "None",
        reinvocation_policy: str = "Never",
    ) -> None:
        """Register a webhook (re-registering a name replaces it). Mutating ones run in registration order."""
        if kind not in ("mutating", "validating"):
            raise ValueError("kind must be 'mutating' or 'validating'")
        if failure_policy not in ("Fail", "Ignore"):
            raise ValueError("failure_policy must be 'Fail' or 'Ignore'")
        if not 1 <= timeout_seconds <= 30:
            raise ValueError("timeout_seconds must be within 1..30 (apiserver validation)")
        if not url.startswith("https://"):
            raise ValueError("webhook url must be https://")
        hook = Webhook(
            name=name,
            kind=kind,
            url=url,
            ca_pem=ca_pem,
            server_hostname=server_hostname,
            rules=list(
                rules
                or [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE", "UPDATE"],
                    }
                ]
            ),
            failure_policy=failure_policy,
            timeout_seconds=timeout_seconds,
            namespace_exclude=frozenset(namespace_exclude),
            object_selector=compile_label_selector_object(object_selector),
            side_effects=side_effects,
            reinvocation_policy=reinvocation_policy,
            client=make_client(ca_pem, timeout_seconds),
        )
        self._admission.add(hook)

    def remove_admission_webhook(self, name: str) -> None:
        self._admission.remove(name)
