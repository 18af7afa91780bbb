"""KubeSource: cluster state from the Kubernetes API (`--kubeconfig PATH` or in-cluster),
and `ListWatch`, the one list + watch loop of Skein (KubeSource's kinds, and the
speakers' Leases in speaker.membership.lease).

`ListWatch` follows one collection the way client-go's reflector does: it lists
it (paged, a consistent read), then watches from the list's resourceVersion
with bookmarks, in a thread of its owner's:
- a watch the server ends (timeoutSeconds), or one that breaks off, is resumed
  from the last resourceVersion seen (an event's or a BOOKMARK's);
- 410 Gone (an HTTP 410, or an ERROR event with code 410: the version is too
  old) lists again at once;
- any other error (connection refused, 5xx, 403) is logged as one line when it
  starts or changes, not at every attempt, and retried after an exponential
  back-off with jitter, then lists again; the recovery is one line too;
- a collection the API does not serve (a CRD that is not installed) is looked
  for again at the longest back-off, quietly.
What a list and an event mean is its owner's business (`relist`, `on_event`,
`on_error`).

KubeSource runs one ListWatch per kind a daemon reads.  A kind whose CRD is not
installed (404 on every version) is logged once and treated as empty.  Objects
go through `foundation.kube.model.cluster.parse_object`; a bad one is logged as
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

Importing the kubernetes package is slow enough to matter for a short-lived
process, so only daemons import this module (the CNI plugin never does).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException

from foundation.kube.model.cluster import (
    KINDS,
    ClusterState,
    ModelObject,
    ServiceChanges,
    parse_object,
    ref_of,
)
from foundation.kube.model.errors import ModelError, ObjectRef
from foundation.kube.model.fields import IPAddress
from foundation.kube.model.service import Service
from foundation.kube.sources.base import Source, state_field

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
    # BGPPeer spec.passwordSecret: read in the speaker's own namespace only.
    ("", "Secret"): "secrets",
}

AGENT_KINDS: tuple[KindKey, ...] = (("", "Node"),)
CONTROLLER_KINDS: tuple[KindKey, ...] = (
    ("", "Service"), ("", "Namespace"), ("metallb.io", "IPAddressPool"))
SPEAKER_KINDS: tuple[KindKey, ...] = tuple(
    k for k in PLURALS if k != ("", "Namespace"))
# What each daemon reads, by its role (foundation.kube.cli.make_source).
KINDS_OF: dict[str, tuple[KindKey, ...]] = {
    "agent": AGENT_KINDS, "speaker": SPEAKER_KINDS, "controller": CONTROLLER_KINDS}

# MetalLB keeps its configuration in its own namespace and reads it only there.
METALLB_NAMESPACE = "metallb-system"


def own_pod_namespace() -> str:
    """The daemon's own namespace: $POD_NAMESPACE (the downward API), else skein-system
    (as the speaker's --namespace)."""
    return os.environ.get("POD_NAMESPACE") or "skein-system"


@dataclass(frozen=True)
class Resource:
    """One kind as the API serves it."""

    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]
    namespace: str | None = None  # list in this namespace only (None: all)

    @classmethod
    def of(cls, key: KindKey, metallb_namespace: str | None,
           own_namespace: str | None = None) -> Resource:
        group, kind = key
        versions = tuple(reversed(KINDS[key].versions))  # newest first
        namespace: str | None
        if key == ("", "Secret"):
            # BGPPeer passwordSecret: where the BGPPeers are, as MetalLB keeps them.
            namespace = metallb_namespace or own_namespace or own_pod_namespace()
        else:
            namespace = metallb_namespace if group == "metallb.io" else None
        return cls(group, kind, PLURALS[key], versions, namespace)

    def path(self, version: str) -> str:
        base = f"/api/{version}" if not self.group else f"/apis/{self.group}/{version}"
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{base}{scope}/{self.plural}"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


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

    def list_all(self, path: str, page_size: int = 500, label_selector: str | None = None,
                 timeout: Any = 30, each: Callable[[Any], Any] | None = None
                 ) -> tuple[list[Any], str]:
        """Every item of a collection (following `continue`) and the list's resourceVersion;
        with `each`, what it makes of every item, page by page (only a page of the
        items as sent is held at once)."""
        items: list[Any] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", page_size)]
            if label_selector:
                query.insert(0, ("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            body = self.request("GET", path, query, timeout=timeout)
            page = body.get("items") or []
            items.extend(page if each is None else map(each, page))
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

    def patch_service_annotations(self, namespace: str, name: str,
                                  annotations: Mapping[str, str | None]) -> None:
        """Set (None: remove) annotations of a Service, leaving the others alone."""
        self.request("PATCH", f"/api/v1/namespaces/{namespace}/services/{name}",
                     body={"metadata": {"annotations": dict(annotations)}},
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


# Where a watch starts: the collection's path and a resourceVersion ("" for any).
Position = tuple[str, str]


class ListWatch:
    """One collection listed, then watched, until `stop` is set; see the module docstring.

    `relist()` lists the collection (KubeClient.list_all), replaces whatever the
    owner knew of it and returns where to watch from, or None when the API does
    not serve it; `on_event(type, object)` gets each ADDED, MODIFIED and DELETED
    object as the API sent it; `on_error()` is called on every failure, before
    the back-off (the owner may stop trusting what it knows).  All three run in
    the ListWatch's thread.  `while_failing` is added to the warning, to say
    what an outage means for the owner.
    """

    def __init__(self, client: KubeClient, name: str, relist: Callable[[], Position | None],
                 on_event: Callable[[str, Any], None], *,
                 on_error: Callable[[], None] | None = None,
                 label_selector: str | None = None, watch_timeout: int = 300,
                 timeouts: tuple[float, float] | None = None,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 while_failing: str = "", logger: logging.Logger | None = None) -> None:
        self.client = client
        self.name = name
        self.relist = relist
        self.on_event = on_event
        self.on_error = on_error
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        # (connect, read): a stream silent for longer than `read` is broken.
        self.timeouts = timeouts or (10.0, watch_timeout + 30.0)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.while_failing = while_failing
        self.log = logger or log
        self.stop = threading.Event()
        self._listed = False
        self._position: Position | None = None
        self._problem: str | None = None
        self._failures = 0
        self._lock = threading.Lock()
        self._response: Any = None  # the open watch stream, for interrupt()

    # -- for the owner ---------------------------------------------------------------------

    def first_list(self) -> bool:
        """List once in the caller's thread; a failure is logged and left to run()."""
        try:
            self._list()
        except Exception as exc:  # noqa: BLE001 - run() retries; the caller must not die
            self.log.warning("%s: list failed: %s; retrying in the background", self.name,
                             one_line(exc))
            return False
        return True

    def run(self, stop: threading.Event | None = None) -> None:
        """List (unless first_list did) and watch until `stop` (default self.stop) is set."""
        if stop is not None:
            self.stop = stop
        stop = self.stop
        delay = self.backoff_initial
        while not stop.is_set():
            try:
                if not self._listed:
                    self._list()
                if self._position is None:  # not served: look again now and then, quietly
                    if stop.wait(self.backoff_max):
                        return
                    self._listed = False
                    continue
                self._position = self._watch(*self._position)
                delay = self.backoff_initial  # only a watch that ran well resets it
            except Exception as exc:  # noqa: BLE001 - a watcher must outlive any error
                if stop.is_set():
                    return
                self._listed = False
                if isinstance(exc, Gone) or (isinstance(exc, ApiException)
                                             and exc.status == 410):
                    version = self._position[1] if self._position else ""
                    self.log.info("%s: resourceVersion %s is gone (410); listing again",
                                  self.name, version)
                    continue
                wait = delay * random.uniform(0.5, 1.0)
                self._failed(exc, wait)
                if stop.wait(wait):
                    return
                delay = min(delay * 2, self.backoff_max)

    def interrupt(self) -> None:
        """Break off the watch in progress (after setting `stop`, to end run())."""
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # noqa: BLE001 - closing anyway
                pass

    # -- the loop's steps ------------------------------------------------------------------

    def _failed(self, exc: BaseException, wait: float) -> None:
        if self.on_error is not None:
            self.on_error()
        self._failures += 1
        problem = one_line(exc)
        if problem != self._problem:
            self._problem = problem
            self.log.warning("%s: list/watch failed: %s; retrying in %.1fs, then backing off%s",
                             self.name, problem, wait,
                             f" ({self.while_failing})" if self.while_failing else "")

    def _list(self) -> None:
        self._position = self.relist()
        self._listed = True
        if self._problem is not None:
            self.log.info("%s: listed again after %d failed attempt%s", self.name,
                          self._failures, "" if self._failures == 1 else "s")
            self._problem, self._failures = None, 0

    def _watch(self, path: str, version: str) -> Position:
        """Apply the events of one watch request; where to watch from next."""
        query: list[tuple[str, Any]] = [("watch", "true"), ("allowWatchBookmarks", "true"),
                                        ("timeoutSeconds", self.watch_timeout)]
        if self.label_selector:
            query.insert(0, ("labelSelector", self.label_selector))
        if version:
            query.append(("resourceVersion", version))
        if self.stop.is_set():
            return path, version
        response = self.client.stream(path, query, self.timeouts)
        with self._lock:
            self._response = response
        if self.stop.is_set():  # close() may have looked before the stream was stored
            self.interrupt()
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        version = self._event(line, version)
                if self.stop.is_set():
                    break
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as exc:
            if not self.stop.is_set():
                self.log.info("%s: watch interrupted (%s); resuming from %s", self.name,
                              one_line(exc), version)
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return path, version

    def _event(self, line: bytes, version: str) -> str:
        event = json.loads(line)
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiException(status=obj.get("code"),
                               reason=str(obj.get("message") or obj.get("reason") or obj))
        version = _resource_version(obj) or version
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.on_event(kind, obj)
        return version


class KubeSource(Source):
    """Follows the API; see the module docstring for the protocol and the rules."""

    def __init__(self, client: KubeClient, kinds: Iterable[KindKey] = tuple(PLURALS),
                 metallb_namespace: str | None = METALLB_NAMESPACE,
                 watch_timeout: int = 300, coalesce: float = 0.05,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 page_size: int = 500, own_namespace: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.resources = [Resource.of(k, metallb_namespace, own_namespace)
                          for k in dict.fromkeys(kinds)]
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
        # Each kind's objects in ClusterState's order (by ref), kept up to date event
        # by event, and the tuples last published: a new state is made of the
        # kinds that changed plus the very tuples of those that did not.
        self._order: dict[Resource, tuple[list[_Key], list[ModelObject]]] = {}
        self._tuples: dict[Resource, tuple[ModelObject, ...]] = {}
        self._changed: set[Resource] = set()
        # The Services that came and went since the last publish, by id (None: not
        # known, after a relist), for the state's ServiceChanges.
        self._service_record: tuple[dict[int, Service], dict[int, Service]] | None = ({}, {})
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._watchers: list[ListWatch] = []
        self._threads: list[threading.Thread] = []

    # -- Source --------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._watchers = [
            ListWatch(self.client, str(res), partial(self._relist, res),
                      partial(self._on_event, res), watch_timeout=self.watch_timeout,
                      backoff_initial=self.backoff_initial, backoff_max=self.backoff_max)
            for res in self.resources]
        for watcher in self._watchers:
            watcher.stop = self._stop
            watcher.first_list()
        self._publish_now()
        for watcher in self._watchers:
            self._spawn(f"KubeSource({watcher.name})", watcher.run)
        self._spawn("KubeSource(publish)", self._publisher)

    def close(self) -> None:
        self._stop.set()
        self._dirty.set()
        # A watch may be between connecting and being stoppable; interrupting
        # again until every thread is gone closes that window.
        deadline = time.monotonic() + 10
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            for watcher in self._watchers:
                watcher.interrupt()
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
            service_changes = None
            for res in self._changed:
                before = self._tuples.get(res)
                self._tuples[res] = tuple(self._order.get(res, ((), ()))[1])
                if (res.kind == "Service" and before is not None
                        and self._service_record is not None):
                    came, went = self._service_record
                    service_changes = ServiceChanges(
                        cast(tuple[Service, ...], before),
                        cast(tuple[Service, ...], self._tuples[res]),
                        tuple(came.values()), tuple(went.values()))
            self._changed.clear()
            self._service_record = ({}, {})
            tuples = {res: self._tuples[res] for res in self.resources if res in self._tuples}
        state = _state_of(tuples)
        if service_changes is not None and service_changes.after is state.services:
            state = replace(state, service_changes=service_changes)
        problems = [str(p) for p in state.problems()]
        if problems != self._problems:
            for line in problems:
                log.warning("inconsistent: %s", line)
            self._problems = problems
        if self._publish(state):
            now = self.snapshot()
            log.info("API: revision %d: %d nodes, %d services, %d pools", now.revision,
                     len(now.nodes), len(now.services), len(now.ip_address_pools))

    # -- what a list and an event mean (in the kind's ListWatch thread) ------------

    def _relist(self, res: Resource) -> Position | None:
        """List `res` and replace what is known of it; None if no version is served."""
        for api_version in (self._version.get(res), *res.versions):
            if api_version is None:
                continue
            try:
                # Parsed page by page: N objects as sent (managedFields and all) are
                # never held at once beside what is made of them.
                items, rv = self.client.list_all(res.path(api_version), self.page_size,
                                                 each=partial(self._parsed, res, api_version))
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            self._version[res] = api_version
            if res in self._missing:
                log.info("%s: present now (%s)", res, api_version)
            self._replace(res, api_version, items)
            return res.path(api_version), rv
        if res not in self._missing:
            log.warning("%s: not served by the API (CRD not installed?); treating it as empty",
                        res)
        self._replace(res, None, [])
        return None

    def _parsed(self, res: Resource, api_version: str, item: Any
                ) -> tuple[tuple[str, str], ModelObject | None]:
        """A listed item's key and what it parses to (None: skipped, logged)."""
        return _item_key(item), self._parse(res, api_version, item)

    def _replace(self, res: Resource, api_version: str | None,
                 items: list[tuple[tuple[str, str], ModelObject | None]]) -> None:
        """`items`: every listed item's key and object (`_parsed`)."""
        parsed = {key: obj for key, obj in items if obj is not None}
        ordered = sorted((_key(ref_of(obj)), obj) for obj in parsed.values())
        listed = {(res, key) for key, _ in items}
        with self._lock:
            for gone in [k for k in self._errors if k[0] == res and k not in listed]:
                del self._errors[gone]  # relisted without it: deleted meanwhile
            if api_version is None:
                self._missing.add(res)
            else:
                self._missing.discard(res)
            self._objects[res] = parsed
            self._order[res] = ([k for k, _ in ordered], [o for _, o in ordered])
            if res.kind == "Service":
                self._service_record = None  # relisted: compared whole
            self._changed.add(res)
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
            with self._lock:
                known, self._errors[key] = self._errors.get(key), str(exc)
            if known != str(exc):
                log.warning("skipped %s", exc)
            return None
        with self._lock:
            self._errors.pop(key, None)
        return obj

    def refusals(self) -> tuple[str, ...]:
        """The objects skipped because they cannot be used, one line each
        ("BGPPeer metallb-system/x: spec.peerASN: ..."), as logged."""
        with self._lock:
            return tuple(sorted(self._errors.values()))

    def _on_event(self, res: Resource, kind: str, raw: Any) -> None:
        key = _item_key(raw)
        if kind == "DELETED":
            with self._lock:
                self._errors.pop((res, key), None)
            self._apply(res, key, None)
        else:
            self._apply(res, key, self._parse(res, self._version[res], raw))

    def _apply(self, res: Resource, key: tuple[str, str], obj: ModelObject | None) -> None:
        with self._lock:
            per_kind = self._objects.setdefault(res, {})
            keys, objs = self._order.setdefault(res, ([], []))
            old = per_kind.pop(key, None) if obj is None else per_kind.get(key)
            record = self._service_record if res.kind == "Service" else None
            if old is not None:
                i = bisect_left(keys, _key(ref_of(old)))
                del keys[i], objs[i]
                if record is not None and isinstance(old, Service):
                    # Came and went before anyone saw it: neither.
                    if record[0].pop(id(old), None) is None:
                        record[1][id(old)] = old
            elif obj is None:
                return
            if obj is not None:
                per_kind[key] = obj
                ref = _key(ref_of(obj))
                i = bisect_left(keys, ref)
                keys.insert(i, ref)
                objs.insert(i, obj)
                if record is not None and isinstance(obj, Service):
                    record[0][id(obj)] = obj
            self._changed.add(res)
        self._dirty.set()


_Key = tuple[str, str, str]  # an object's ref as a plain tuple: kind, namespace, name


def _key(ref: ObjectRef) -> _Key:
    return (ref.kind, ref.namespace, ref.name)


def _state_of(tuples: dict[Resource, tuple[ModelObject, ...]]) -> ClusterState:
    """The state of every kind's objects (each tuple in ClusterState's order)."""
    by_field: dict[str, list[tuple[ModelObject, ...]]] = {}
    for objs in tuples.values():
        if objs:
            name = state_field(objs[0])
            if name is None:
                return ClusterState.from_objects(o for t in tuples.values() for o in t)
            by_field.setdefault(name, []).append(objs)
    kinds: dict[str, Any] = {}
    for name, parts in by_field.items():
        if len(parts) == 1:
            kinds[name] = parts[0]
        else:  # one kind from two API groups (Calico's): one object per ref, the later
            unique = {_key(ref_of(o)): o for part in parts for o in part}
            kinds[name] = tuple(unique[k] for k in sorted(unique))
    return ClusterState(**kinds)


def one_line(exc: BaseException) -> str:
    """An API error (or any exception) as one log line: "HTTP 503: message"."""
    if isinstance(exc, ApiException):
        reason = exc.reason
        try:
            reason = json.loads(exc.body or "").get("message") or reason
        except (ValueError, AttributeError):
            pass
        return f"HTTP {exc.status}: {reason}".replace("\n", " ")
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")
