"""A STAND-IN for the Kubernetes API server: just enough of the real list/watch
protocol over HTTP for the official client to drive it.  It is not an API
server: no auth, no validation, no field selectors, no server-side apply.

What it speaks (as kube-apiserver does):
- GET on a collection (`/api/v1/services`, `/apis/G/V/namespaces/NS/plural`)
  lists it: `{"kind": "XList", "metadata": {"resourceVersion", "continue"},
  "items": [...]}`, paged by `limit` / `continue`; an unknown group, version or
  resource is a 404 (a CRD that is not installed);
- `?watch=true&resourceVersion=RV` streams JSON lines (chunked) of ADDED /
  MODIFIED / DELETED events newer than RV, then new ones as they happen, until
  `timeoutSeconds`; with `allowWatchBookmarks=true` a `bookmark()` sends a
  BOOKMARK carrying the current resourceVersion;
- after `compact()`, a watch from an older resourceVersion gets 410 Gone: as an
  ERROR event in a 200 stream (`gone_as="event"`, what kube-apiserver does) or
  as an HTTP 410 (`gone_as="http"`);
- PATCH of `.../services/NAME/status` and of `.../services/NAME` (its
  metadata) with a JSON merge patch (RFC 7386), and
  POST of Events, both recorded;
- coordination.k8s.io/v1 Leases as a client writes them: GET of one (404 if
  absent), POST to create (409 AlreadyExists), PUT to update (409 Conflict
  when metadata.resourceVersion is not the current one, 404 if absent), DELETE;
  list and watch take a `labelSelector` of `key=value` terms (Leases or not).
Test controls: `put`, `delete`, `compact`, `bookmark`, `end_watches` (as a
server timeout does), `fail(n, status)` (the next n requests fail),
`conflict(n)` (the next n Lease PUTs get 409 Conflict, as a concurrent write
would cause).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LEASES = ("coordination.k8s.io", "v1", "leases")

# (group, version, plural) -> kind
SERVED = {
    ("", "v1", "services"): "Service",
    ("", "v1", "namespaces"): "Namespace",
    ("", "v1", "nodes"): "Node",
    ("", "v1", "events"): "Event",
    ("", "v1", "secrets"): "Secret",
    ("coordination.k8s.io", "v1", "leases"): "Lease",
    ("discovery.k8s.io", "v1", "endpointslices"): "EndpointSlice",
    ("metallb.io", "v1beta1", "ipaddresspools"): "IPAddressPool",
    ("metallb.io", "v1beta1", "l2advertisements"): "L2Advertisement",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class Event:
    rv: int
    resource: tuple[str, str, str]
    type: str
    obj: dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]


@dataclass
class State:
    served: dict[tuple[str, str, str], str] = field(default_factory=lambda: dict(SERVED))
    objects: dict[tuple[str, str, str], dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=dict)
    log: list[Event] = field(default_factory=list)
    rv: int = 100
    compacted: int = 0
    watch_generation: int = 0  # bumped by end_watches()
    bookmarks: int = 0
    bookmarks_sent: list[tuple[str, str, str]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    patches: list[tuple[str, str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    conflicts: int = 0  # the next n Lease PUTs get 409


def resource_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    for (g, v, plural), kind in SERVED.items():
        if (g, v, kind) == (group, version, obj["kind"]):
            return g, v, plural
    raise KeyError(obj["kind"])


class FakeApiServer:
    def __init__(self, gone_as: str = "event", host: str = "127.0.0.1") -> None:
        """`host`: the address to listen on; a test that constructs the server
        while its thread is inside a lab namespace binds it there."""
        self.gone_as = gone_as
        self.state = State()
        self.cond = threading.Condition()
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.end_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": "standin-token"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "u"}}],
        }))
        return path

    # -- test controls -----------------------------------------------------------

    def _record(self, resource: tuple[str, str, str], type_: str, obj: dict[str, Any]) -> None:
        self.state.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.state.rv)
        self.state.log.append(Event(self.state.rv, resource, type_, copy.deepcopy(obj)))
        self.cond.notify_all()

    def put(self, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        resource = resource_of(obj)
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        with self.cond:
            store = self.state.objects.setdefault(resource, {})
            type_ = "MODIFIED" if key in store else "ADDED"
            store[key] = obj
            self._record(resource, type_, obj)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        resource = resource_of({"apiVersion": api_version, "kind": kind})
        with self.cond:
            obj = self.state.objects.get(resource, {}).pop((namespace, name))
            self._record(resource, "DELETED", obj)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        resource = resource_of({"apiVersion": api_version, "kind": kind})
        with self.cond:
            return copy.deepcopy(self.state.objects[resource][(namespace, name)])

    def compact(self) -> None:
        """Forget history: watches from before now get 410 Gone."""
        with self.cond:
            self.state.compacted = self.state.rv
            self.state.log.clear()
        self.end_watches()

    def end_watches(self) -> None:
        with self.cond:
            self.state.watch_generation += 1
            self.cond.notify_all()

    def bookmark(self) -> None:
        with self.cond:
            self.state.bookmarks += 1
            self.cond.notify_all()

    def fail(self, count: int, status: int = 500) -> None:
        with self.cond:
            self.state.failures.extend([status] * count)

    def conflict(self, count: int) -> None:
        with self.cond:
            self.state.conflicts += count

    def requests(self, method: str = "GET", watch: bool | None = None) -> list[Request]:
        with self.cond:
            out = [r for r in self.state.requests if r.method == method]
        if watch is not None:
            out = [r for r in out if (r.query.get("watch") == "true") == watch]
        return out


def selected(obj: dict[str, Any], selector: str) -> bool:
    """`key=value[,key=value]` (equality terms only) against metadata.labels."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


def parse_path(path: str) -> tuple[tuple[str, str, str], str, list[str]] | None:
    """((group, version, plural), namespace, rest) of an API path."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    return (group, version, rest[0]), namespace, rest[1:]


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                "reason": reason, "message": message}

    def _discard_body(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _begin(self, method: str) -> tuple[Any, dict[str, str]] | None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        api = self.api
        with api.cond:
            api.state.requests.append(Request(method, url.path, query))
            failure = api.state.failures.pop(0) if api.state.failures else None
        if failure is not None:
            self._discard_body()  # or it would be read as the next request on this connection
            self._reply(failure, self._status(failure, "InternalError", "injected failure"))
            return None
        parsed = parse_path(url.path)
        if parsed is None or parsed[0] not in api.state.served:
            self._discard_body()
            self._reply(404, self._status(404, "NotFound", f"the server could not find "
                                          f"the requested resource ({url.path})"))
            return None
        return parsed, query

    def do_GET(self) -> None:
        begun = self._begin("GET")
        if begun is None:
            return
        (resource, namespace, rest), query = begun
        if rest:
            with self.api.cond:
                obj = copy.deepcopy(self.api.state.objects.get(resource, {}).get(
                    (namespace, rest[0])))
            if obj is None:
                self._reply(404, self._status(404, "NotFound", f"{resource[2]} {rest[0]} "
                                              "not found"))
            else:
                self._reply(200, obj)
        elif query.get("watch") == "true":
            self._watch(resource, namespace, query)
        else:
            self._list(resource, namespace, query)

    def _list(self, resource: tuple[str, str, str], namespace: str,
              query: dict[str, str]) -> None:
        api = self.api
        with api.cond:
            store = api.state.objects.get(resource, {})
            items = [copy.deepcopy(o) for k, o in sorted(store.items())
                     if (not namespace or k[0] == namespace)
                     and selected(o, query.get("labelSelector", ""))]
            rv = api.state.rv
        start, list_rv = 0, rv
        if query.get("continue"):
            offset, _, token_rv = query["continue"].partition(":")
            start, list_rv = int(offset), int(token_rv)
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[start:start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if start + limit < len(items):
            meta["continue"] = f"{start + limit}:{list_rv}"
        kind = api.state.served[resource]
        for item in page:
            item.pop("kind", None)  # list items come without kind and apiVersion
            item.pop("apiVersion", None)
        group, version, _ = resource
        self._reply(200, {"kind": f"{kind}List",
                          "apiVersion": f"{group}/{version}" if group else version,
                          "metadata": meta, "items": page})

    def _chunk(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, resource: tuple[str, str, str], namespace: str,
               query: dict[str, str]) -> None:
        api = self.api
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        with api.cond:
            gone = since < api.state.compacted
        if gone and api.gone_as == "http":
            self._reply(410, self._status(410, "Expired", f"too old resource version: {since}"))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if gone:
                self._chunk({"type": "ERROR", "object": self._status(
                    410, "Expired", f"too old resource version: {since}")})
            else:
                self._stream(resource, namespace, since, bookmarks,
                             float(query.get("timeoutSeconds") or 60),
                             query.get("labelSelector", ""))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _stream(self, resource: tuple[str, str, str], namespace: str, since: int,
                bookmarks: bool, timeout: float, selector: str = "") -> None:
        api = self.api
        with api.cond:
            generation = api.state.watch_generation
            seen_bookmarks = api.state.bookmarks
        sent = since
        deadline = time.monotonic() + timeout
        while True:
            def ready(s: int = sent, b: int = seen_bookmarks) -> bool:
                return (api.state.watch_generation != generation or api.state.bookmarks != b
                        or any(e.rv > s for e in api.state.log))

            with api.cond:
                ended = not api.cond.wait_for(ready, max(0.0, deadline - time.monotonic()))
                if ended or api.state.watch_generation != generation:
                    return
                news = [e for e in api.state.log if e.rv > sent]
                rv = api.state.rv
                bookmark = api.state.bookmarks != seen_bookmarks
                seen_bookmarks = api.state.bookmarks
            for event in news:
                sent = event.rv
                if event.resource == resource and (
                        not namespace or event.obj["metadata"].get("namespace") == namespace
                ) and selected(event.obj, selector):
                    self._chunk({"type": event.type, "object": event.obj})
            if bookmark and bookmarks:
                group, version, _ = resource
                self._chunk({"type": "BOOKMARK", "object": {
                    "kind": api.state.served[resource],
                    "apiVersion": f"{group}/{version}" if group else version,
                    "metadata": {"resourceVersion": str(rv)}}})
                sent = max(sent, rv)
                with api.cond:
                    api.state.bookmarks_sent.append(resource)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_PATCH(self) -> None:
        begun = self._begin("PATCH")
        if begun is None:
            return
        (resource, namespace, rest), _ = begun
        body = self._body()
        api = self.api
        if rest[1:] not in ([], ["status"]) or resource != ("", "v1", "services"):
            self._reply(405, self._status(405, "MethodNotAllowed", "only services"))
            return
        if "merge-patch" not in (self.headers.get("Content-Type") or ""):
            self._reply(415, self._status(415, "UnsupportedMediaType", "merge patch only"))
            return
        with api.cond:
            store = api.state.objects.get(resource, {})
            obj = store.get((namespace, rest[0]))
            if obj is None:
                self._reply(404, self._status(404, "NotFound", f"services {rest[0]} not found"))
                return
            if rest[1:] == ["status"]:
                # The status subresource ignores everything but status.
                obj["status"] = merge_patch(obj.get("status"), body.get("status"))
            else:
                # The object itself: its metadata (annotations) here; its status
                # only through the subresource.
                obj["metadata"] = merge_patch(obj.get("metadata"), body.get("metadata"))
            if rest[1:] == ["status"]:
                api.state.patches.append((namespace, rest[0], body))
            api._record(resource, "MODIFIED", obj)
            reply = copy.deepcopy(obj)
        self._reply(200, reply)

    def do_POST(self) -> None:
        begun = self._begin("POST")
        if begun is None:
            return
        (resource, namespace, _rest), _ = begun
        body = self._body()
        if resource == LEASES:
            self._create(resource, namespace, body)
            return
        if resource != ("", "v1", "events"):
            self._reply(405, self._status(405, "MethodNotAllowed", "only events"))
            return
        with self.api.cond:
            self.api.state.events.append(body)
        body.setdefault("metadata", {})["namespace"] = namespace
        self._reply(201, body)

    # -- Leases: create, update, delete ------------------------------------------------

    def _create(self, resource: tuple[str, str, str], namespace: str, body: Any) -> None:
        api = self.api
        meta = body.setdefault("metadata", {})
        meta["namespace"] = namespace
        name = meta.get("name", "")
        with api.cond:
            store = api.state.objects.setdefault(resource, {})
            if (namespace, name) in store:
                self._reply(409, self._status(409, "AlreadyExists",
                                              f"{resource[2]} {name!r} already exists"))
                return
            meta["uid"] = f"uid-{api.state.rv + 1}"
            store[(namespace, name)] = body
            api._record(resource, "ADDED", body)
            reply = copy.deepcopy(body)
        self._reply(201, reply)

    def _begin_lease(self, method: str) -> tuple[str, list[str]] | None:
        """(namespace, [name]) of a request on one Lease; None once answered otherwise."""
        begun = self._begin(method)
        if begun is None:
            return None
        (resource, namespace, rest), _ = begun
        if resource != LEASES or len(rest) != 1:
            self._discard_body()
            self._reply(405, self._status(405, "MethodNotAllowed", "only leases"))
            return None
        return namespace, rest

    def do_PUT(self) -> None:
        begun = self._begin_lease("PUT")
        if begun is None:
            return
        namespace, rest = begun
        resource = LEASES
        body = self._body()
        api = self.api
        with api.cond:
            store = api.state.objects.setdefault(resource, {})
            current = store.get((namespace, rest[0]))
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if current is None:
                self._reply(404, self._status(404, "NotFound", f"leases {rest[0]} not found"))
                return
            if api.state.conflicts or (
                    sent_rv and sent_rv != current["metadata"]["resourceVersion"]):
                api.state.conflicts = max(0, api.state.conflicts - 1)
                self._reply(409, self._status(
                    409, "Conflict", f"Operation cannot be fulfilled on leases "
                    f"{rest[0]!r}: the object has been modified; please apply your changes "
                    "to the latest version and try again"))
                return
            body.setdefault("metadata", {}).update(namespace=namespace, name=rest[0],
                                                   uid=current["metadata"].get("uid"))
            store[(namespace, rest[0])] = body
            api._record(resource, "MODIFIED", body)
            reply = copy.deepcopy(body)
        self._reply(200, reply)

    def do_DELETE(self) -> None:
        begun = self._begin_lease("DELETE")
        if begun is None:
            return
        namespace, rest = begun
        resource = LEASES
        api = self.api
        with api.cond:
            obj = api.state.objects.get(resource, {}).pop((namespace, rest[0]), None)
            if obj is not None:
                api._record(resource, "DELETED", obj)
        if obj is None:
            self._reply(404, self._status(404, "NotFound", f"leases {rest[0]} not found"))
            return
        self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
