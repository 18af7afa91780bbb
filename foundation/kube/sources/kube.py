"""KubeSource: cluster state from the Kubernetes API (`--kubeconfig PATH` or in-cluster).

The same `Source` as FileSource, fed by the official `kubernetes` client: for
each kind a daemon reads, one thread lists it (paged, a consistent read), then
watches from the list's resourceVersion with bookmarks, the way client-go's
reflector does:
- a watch the server ends (timeoutSeconds) or a read timeout is resumed from the
  last resourceVersion seen (an event's or a BOOKMARK's);
- 410 Gone (an HTTP 410, or an ERROR event with code 410: the version is too
  old) re-lists at once;
- any other error (connection refused, 5xx, 403) is logged as one line and
  retried after an exponential back-off with jitter, then re-lists;
- a kind whose CRD is not installed (404 on every version) is logged once and
  treated as empty; it is looked for again at the longest back-off, quietly.

Objects go through `foundation.kube.model.cluster.parse_object`; a bad one is logged as
ONE line (again only when its error changes) and left out, as FileSource does.
Watch threads only mark the state dirty; a publisher thread builds a new
`ClusterState` a moment later (`coalesce` seconds), so a burst of events (a
re-list of a thousand Services) is one new state, not a thousand.

`start()` lists every kind once before returning, so `snapshot()` is useful at
once; `wait_synced()` tells whether every kind has been listed at least once
(a controller must not act on a state where Services are known but pools are
not).  `KubeClient` also carries the few writes the controller makes: the
Service status patch and an Event.

Least RBAC (verbs x resources) for the daemons using this source:
- controller: services list, watch; services/status patch; namespaces list,
  watch (pool serviceAllocation.namespaceSelectors); metallb.io ipaddresspools
  list, watch (a Role in MetalLB's namespace is enough); events create.
- speaker: nodes, services list, watch; discovery.k8s.io endpointslices list,
  watch; metallb.io ipaddresspools, l2advertisements, bgpadvertisements,
  bgppeers, communities list, watch (Role in MetalLB's namespace);
  projectcalico.org and crd.projectcalico.org bgpconfigurations list, watch
  (optional: a 403/404 there only logs).
- agent: nodes list, watch.
No `get` is needed by this source: nothing is read one object at a time.  The
speaker's lease liveness (speaker.membership.lease) needs, in its own
namespace, coordination.k8s.io leases get, list, watch, create, update, delete.

The kubernetes package takes ~0.4 s to import; only daemons import this module
(the CNI plugin never does).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from foundation.kube.model.cluster import KINDS, ClusterState, ModelObject, parse_object
from foundation.kube.model.errors import ModelError
from foundation.kube.model.fields import IPAddress
from foundation.kube.sources.base import Source

log = logging.getLogger(__name__)

KindKey = tuple[str, str]  # (API group, kind), as in foundation.kube.model.KINDS

# Plural resource names, and the versions to try, newest first.
PLURALS: dict[KindKey, str] = {
    ("", "Node"): "nodes",
    ("", "Service"): "services",
    ("", "Namespace"): "namespaces",
    ("discovery.k8s.io", "EndpointSlice"): "endpointslices",
    ("metallb.io", "IPAddressPool"): "ipaddresspools",
    ("metallb.io", "L2Advertisement"): "l2advertisements",
    ("metallb.io", "BGPAdvertisement"): "bgpadvertisements",
    ("metallb.io", "BGPPeer"): "bgppeers",
    ("metallb.io", "Community"): "communities",
    ("projectcalico.org", "BGPConfiguration"): "bgpconfigurations",
    ("crd.projectcalico.org", "BGPConfiguration"): "bgpconfigurations",
}

AGENT_KINDS: tuple[KindKey, ...] = (("", "Node"),)
CONTROLLER_KINDS: tuple[KindKey, ...] = (
    ("", "Service"), ("", "Namespace"), ("metallb.io", "IPAddressPool"))
SPEAKER_KINDS: tuple[KindKey, ...] = tuple(
    k for k in PLURALS if k != ("", "Namespace"))

# MetalLB keeps its configuration in its own namespace and reads it only there.
METALLB_NAMESPACE = "metallb-system"


@dataclass(frozen=True)
class Resource:
    """One kind as the API serves it."""

    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]
    namespace: str | None = None  # list in this namespace only (None: all)

    @classmethod
    def of(cls, key: KindKey, metallb_namespace: str | None) -> Resource:
        group, kind = key
        versions = tuple(reversed(KINDS[key].versions))  # newest first
        return cls(group, kind, PLURALS[key], versions,
                   metallb_namespace if group == "metallb.io" else None)

    def path(self, version: str) -> str:
        base = f"/api/{version}" if not self.group else f"/apis/{self.group}/{version}"
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{base}{scope}/{self.plural}"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


class _Closing(Exception):
    """close() was called while a watch was about to connect."""


class Gone(Exception):
    """The resourceVersion is too old (410): list again."""


class KubeClient:
    """The official client's transport (auth, TLS, kubeconfig) with raw JSON bodies.

    Raw dicts rather than the generated models: the model layer parses raw
    objects (the same ones a manifests file holds), and custom resources have
    no generated model anyway.
    """

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None,
                        context: str | None = None) -> KubeClient:
        """From a kubeconfig file, or from the pod's service account when None."""
        config = kubernetes.client.Configuration()
        if kubeconfig:
            kubernetes.config.load_kube_config(config_file=kubeconfig, context=context,
                                               client_configuration=config)
        else:
            kubernetes.config.load_incluster_config(client_configuration=config)
        return cls(kubernetes.client.ApiClient(config))

    def close(self) -> None:
        self.api.close()

    def _send(self, method: str, path: str, query: Sequence[tuple[str, Any]] = (),
              body: Any = None, content_type: str | None = None,
              timeout: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(method, path, query_params=list(query),
                                           header_params=headers, body=body,
                                           auth_settings=["BearerToken"])
        response = self.api.call_api(*request, _request_timeout=timeout)
        return response

    def request(self, method: str, path: str, query: Sequence[tuple[str, Any]] = (),
                body: Any = None, content_type: str | None = None,
                timeout: Any = 30) -> Any:
        """The decoded JSON body; ApiException on a non-2xx status."""
        response = self._send(method, path, query, body, content_type, timeout)
        response.read()
        return self.api.response_deserialize(
            response, {"2XX": "object"}).data

    def stream(self, path: str, query: Sequence[tuple[str, Any]], timeout: Any) -> Any:
        """The open urllib3 response of a watch; ApiException on a non-2xx status."""
        response = self._send("GET", path, query, timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    def list_all(self, path: str, page_size: int = 500) -> tuple[list[Any], str]:
        """Every item of a collection (following `continue`) and the list's resourceVersion."""
        items: list[Any] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", page_size)]
            if token:
                query.append(("continue", token))
            body = self.request("GET", path, query)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def patch_service_status(self, namespace: str, name: str,
                             ingress: Sequence[IPAddress]) -> None:
        """Set status.loadBalancer.ingress (a merge patch replaces the whole list)."""
        value = [{"ip": str(ip)} for ip in ingress] or None
        self.request("PATCH", f"/api/v1/namespaces/{namespace}/services/{name}/status",
                     body={"status": {"loadBalancer": {"ingress": value}}},
                     content_type="application/merge-patch+json")

    def create_event(self, namespace: str, name: str, reason: str, message: str,
                     component: str, warning: bool = True) -> None:
        """A core/v1 Event about a Service, as `kubectl describe service` shows them."""
        import datetime

        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Service",
                               "namespace": namespace, "name": name},
            "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
            "source": {"component": component},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)


def _item_key(doc: Any) -> tuple[str, str]:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _resource_version(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return str(rv) if rv else None


class KubeSource(Source):
    """Follows the API; see the module docstring for the protocol and the rules."""

    def __init__(self, client: KubeClient, kinds: Iterable[KindKey] = tuple(PLURALS),
                 metallb_namespace: str | None = METALLB_NAMESPACE,
                 watch_timeout: int = 300, coalesce: float = 0.05,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 page_size: int = 500) -> None:
        super().__init__()
        self.client = client
        self.resources = [Resource.of(k, metallb_namespace) for k in dict.fromkeys(kinds)]
        self.watch_timeout = watch_timeout
        self.coalesce = coalesce
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.page_size = page_size
        self._lock = threading.Lock()
        self._objects: dict[Resource, dict[tuple[str, str], ModelObject]] = {}
        self._errors: dict[tuple[Resource, tuple[str, str]], str] = {}
        self._version: dict[Resource, str] = {}  # the API version in use
        self._missing: set[Resource] = set()
        self._synced_cond = threading.Condition(self._lock)
        self._synced: set[Resource] = set()
        self._problems: list[str] = []
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._watches: dict[Resource, Watch] = {}
        self._threads: list[threading.Thread] = []

    # -- Source --------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        versions: dict[Resource, str | None] = {}
        for res in self.resources:
            versions[res] = self._first_list(res)
        self._publish_now()
        for res in self.resources:
            self._spawn(f"KubeSource({res})", self._follow, res, versions[res])
        self._spawn("KubeSource(publish)", self._publisher)

    def close(self) -> None:
        self._stop.set()
        self._dirty.set()
        # A watch may be between connecting and being stoppable; stopping again
        # until every thread is gone closes that window.
        deadline = time.monotonic() + 10
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            with self._lock:
                watches = list(self._watches.values())
            for watch in watches:
                watch.stop()
            for thread in self._threads:
                thread.join(timeout=0.05)
        self._threads = []

    # -- sync state ----------------------------------------------------------------

    @property
    def synced(self) -> bool:
        with self._lock:
            return len(self._synced) == len(self.resources)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once every kind has been listed (or found missing) at least once; the
        snapshot then holds every kind (the publisher's coalescing is not waited for)."""
        with self._synced_cond:
            synced = self._synced_cond.wait_for(
                lambda: len(self._synced) == len(self.resources) or self._stop.is_set(),
                timeout) and len(self._synced) == len(self.resources)
        if synced:
            self._publish_now()
        return synced

    # -- threads -------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _publisher(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.wait(self.coalesce):
                return
            self._dirty.clear()
            self._publish_now()

    def _publish_now(self) -> None:
        with self._lock:
            objects = [o for per_kind in self._objects.values() for o in per_kind.values()]
        state = ClusterState.from_objects(objects)
        problems = [str(p) for p in state.problems()]
        if problems != self._problems:
            for line in problems:
                log.warning("inconsistent: %s", line)
            self._problems = problems
        if self._publish(state):
            now = self.snapshot()
            log.info("API: revision %d: %d nodes, %d services, %d pools", now.revision,
                     len(now.nodes), len(now.services), len(now.ip_address_pools))

    def _first_list(self, res: Resource) -> str | None:
        try:
            return self._relist(res)
        except Exception as exc:  # noqa: BLE001 - the thread retries; start() must not die
            log.warning("%s: list failed: %s; retrying in the background", res, _one_line(exc))
            return None

    def _follow(self, res: Resource, version: str | None) -> None:
        delay = self.backoff_initial
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist(res)
                if res in self._missing:
                    # No CRD: look again now and then, quietly.
                    if self._stop.wait(self.backoff_max):
                        return
                    version = None
                    continue
                version = self._watch(res, version)
                delay = self.backoff_initial  # only a watch that ran well resets it
            except Gone:
                log.info("%s: resourceVersion %s is gone (410); listing again", res, version)
                version = None
            except Exception as exc:  # noqa: BLE001 - a watcher must outlive any error
                if self._stop.is_set():
                    return
                wait = delay * random.uniform(0.5, 1.0)
                log.warning("%s: %s; retrying in %.1fs", res, _one_line(exc), wait)
                if self._stop.wait(wait):
                    return
                delay = min(delay * 2, self.backoff_max)
                version = None

    def _relist(self, res: Resource) -> str:
        """List `res` and replace what is known of it; the list's resourceVersion."""
        for api_version in (self._version.get(res), *res.versions):
            if api_version is None:
                continue
            try:
                items, rv = self.client.list_all(res.path(api_version), self.page_size)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                if exc.status == 410:
                    raise Gone() from exc
                raise
            self._version[res] = api_version
            if res in self._missing:
                log.info("%s: present now (%s)", res, api_version)
            self._replace(res, api_version, items)
            return rv
        if res not in self._missing:
            log.warning("%s: not served by the API (CRD not installed?); treating it as empty",
                        res)
        self._replace(res, None, [])
        return ""

    def _replace(self, res: Resource, api_version: str | None, items: list[Any]) -> None:
        parsed: dict[tuple[str, str], ModelObject] = {}
        for item in items:
            obj = self._parse(res, api_version or "", item)
            if obj is not None:
                parsed[_item_key(item)] = obj
        with self._lock:
            if api_version is None:
                self._missing.add(res)
            else:
                self._missing.discard(res)
            self._objects[res] = parsed
            self._synced.add(res)
            self._synced_cond.notify_all()
        self._dirty.set()

    def _parse(self, res: Resource, api_version: str, doc: Any) -> ModelObject | None:
        if isinstance(doc, dict):
            doc = {"kind": res.kind, "apiVersion": res.api_version(api_version), **doc}
        key = (res, _item_key(doc))
        try:
            obj = parse_object(doc)
        except ModelError as exc:
            if self._errors.get(key) != str(exc):
                log.warning("skipped %s", exc)
                self._errors[key] = str(exc)
            return None
        self._errors.pop(key, None)
        return obj

    def _watch(self, res: Resource, version: str) -> str:
        """Apply the events of one watch request; the last resourceVersion seen."""
        api_version = self._version[res]
        path = res.path(api_version)
        watch = Watch(return_type="object")

        def call(**kwargs: Any) -> Any:
            if self._stop.is_set():
                raise _Closing()
            query = [("watch", "true"), ("allowWatchBookmarks", "true"),
                     ("timeoutSeconds", kwargs["timeout_seconds"])]
            if kwargs.get("resource_version"):
                query.append(("resourceVersion", kwargs["resource_version"]))
            return self.client.stream(path, query, kwargs.get("_request_timeout"))

        with self._lock:
            self._watches[res] = watch
        try:
            # timeout_seconds also stops the client's own single retry after a
            # 410: this loop re-lists instead.
            for event in watch.stream(call, resource_version=version,
                                      timeout_seconds=self.watch_timeout,
                                      _request_timeout=(10, self.watch_timeout + 30)):
                if self._stop.is_set():
                    break
                kind, raw = event.get("type"), event.get("raw_object")
                version = _resource_version(raw) or version
                if kind in ("ADDED", "MODIFIED"):
                    self._apply(res, _item_key(raw), self._parse(res, api_version, raw))
                elif kind == "DELETED":
                    self._errors.pop((res, _item_key(raw)), None)
                    self._apply(res, _item_key(raw), None)
        except _Closing:
            return version
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as exc:
            if self._stop.is_set():
                return version
            log.info("%s: watch interrupted (%s); resuming from %s", res, _one_line(exc),
                     version)
        finally:
            with self._lock:
                self._watches.pop(res, None)
        return version

    def _apply(self, res: Resource, key: tuple[str, str], obj: ModelObject | None) -> None:
        with self._lock:
            per_kind = self._objects.setdefault(res, {})
            if obj is None:
                if per_kind.pop(key, None) is None:
                    return
            else:
                per_kind[key] = obj
        self._dirty.set()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        reason = exc.reason
        try:
            reason = json.loads(exc.body or "").get("message") or reason
        except (ValueError, AttributeError):
            pass
        return f"HTTP {exc.status}: {reason}".replace("\n", " ")
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")
