"""MetalLB's status surfaces, written by each speaker about itself.

- ServiceL2Status (metallb.io/v1beta1): one per (Service, node) that answers
  ARP/NDP for the Service; `status.node`, `serviceName`, `serviceNamespace`,
  and `interfaces` when the L2Advertisement restricts them;
- ServiceBGPStatus: one per (Service, node) that announces it over BGP, with
  `status.peers`, the BGPPeer names its routes are sent to;
- an Event with reason `nodeAssigned` on the Service when this node starts
  announcing it: `announcing from node "N" with protocol "layer2"` (or "bgp");
- a Warning Event on each object this node refuses or cannot act on, naming
  the field (reason `ConfigRefused` on MetalLB's objects, `NotAnnounced` on a
  Service), once per problem, as `kubectl describe` shows them: the same line
  the daemon logs.

As MetalLB's speaker does: the objects are named by the API server from the
prefixes "l2-" and "bgp-", labelled `metallb.io/node`, `metallb.io/service-name`
and `metallb.io/service-namespace`, live in the speaker's namespace and are
owned by the speaker's Pod (so deleting the Pod deletes them).  A node removes
its own objects as soon as it stops announcing (and all of them on SIGTERM);
the new owner of an L2 Service also removes the ServiceL2Status of a node its
liveness says is dead, which has nobody left to remove it.

`plan_writes` is pure (existing objects + what should exist -> operations);
`StatusWriter` runs them in one thread, since the Kubernetes client blocks,
after each change of what is announced.  What exists is kept by a watch of
each kind (this node's ServiceBGPStatuses; every node's ServiceL2Statuses, as
a dead node's are deleted) and by this writer's own writes: listed once, then
followed, as MetalLB's informer cache does.  An event that shows drift (an
object of ours changed or deleted by someone else, another node's object for
a Service this node owns by layer 2) makes the writer sync again; the echo of
its own writes does not.  Listing every status object again on a timer, or
whenever a heartbeat lapsed, cost O(N) in the speaker and the API server both,
idle.  A failure is logged as one line (again only when it changes) and
retried with back-off; nothing here raises into the daemon.  When the API does
not serve the kinds (their CRDs are not installed) the writer says so once and
their watch looks again every `resync` seconds.

RBAC: in the speaker's namespace, servicel2statuses and servicebgpstatuses
list/watch/create/delete and their /status patch; events create (any namespace).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from foundation.kube.sources.kube import KubeClient, ListWatch, Position, one_line
from speaker.plan import BGP, L2, Announcement

log = logging.getLogger("speaker.status")

GROUP_VERSION = "metallb.io/v1beta1"
LABEL_NODE = "metallb.io/node"
LABEL_SERVICE_NAME = "metallb.io/service-name"
LABEL_SERVICE_NAMESPACE = "metallb.io/service-namespace"
PROTOCOL = {L2: "layer2", BGP: "bgp"}  # MetalLB's names in the nodeAssigned message
COMPONENT = "skein-speaker"
REASON = "nodeAssigned"
REFUSED = "ConfigRefused"
NOT_ANNOUNCED = "NotAnnounced"
# What a plan problem line may be about ("Kind namespace/name: ..."), and the
# apiVersion its Event names (BGPPeer: MetalLB's storage version).
API_VERSIONS = {"Service": "v1", "BGPPeer": "metallb.io/v1beta2",
                **{k: "metallb.io/v1beta1" for k in (
                    "IPAddressPool", "L2Advertisement", "BGPAdvertisement", "Community",
                    "BFDProfile")}}


@dataclass(frozen=True)
class Note:
    """A core/v1 Event to record about one object."""

    api_version: str
    kind: str
    namespace: str
    name: str
    reason: str
    message: str
    warning: bool = True


@dataclass(frozen=True)
class Kind:
    mode: str  # speaker.plan's L2 / BGP
    kind: str
    plural: str
    prefix: str  # metadata.generateName


KINDS = (Kind(L2, "ServiceL2Status", "servicel2statuses", "l2-"),
         Kind(BGP, "ServiceBGPStatus", "servicebgpstatuses", "bgp-"))
KIND_OF = {k.mode: k for k in KINDS}

Key = tuple[str, str, str]  # (mode, service namespace, service name)


# -- pure ------------------------------------------------------------------------------------

def desired_statuses(node: str, desired: Iterable[Announcement]) -> dict[Key, dict[str, Any]]:
    """The `status` of every object this node should hold, by (mode, namespace, name)."""
    interfaces: dict[Key, set[str]] = {}
    all_interfaces: set[Key] = set()
    peers: dict[Key, set[str]] = {}
    for ann in desired:
        if ann.kind not in KIND_OF:
            continue
        for service in ann.services:  # none: a range route or an address added by hand
            namespace, _, name = service.partition("/")
            key = (ann.kind, namespace, name)
            if ann.kind == L2:
                interfaces.setdefault(key, set()).update(ann.interfaces)
                if not ann.interfaces:  # "every interface": MetalLB then lists none
                    all_interfaces.add(key)
            else:
                peers.setdefault(key, set()).update(ann.peers)
    out: dict[Key, dict[str, Any]] = {}
    for key, names in interfaces.items():
        status: dict[str, Any] = {"node": node, "serviceName": key[2],
                                  "serviceNamespace": key[1]}
        if names and key not in all_interfaces:
            status["interfaces"] = [{"name": n} for n in sorted(names)]
        out[key] = status
    for key, names in peers.items():
        out[key] = {"node": node, "serviceName": key[2], "serviceNamespace": key[1],
                    "peers": sorted(names)}
    return out


def assigned_messages(node: str, before: Iterable[Key], after: Iterable[Key]
                      ) -> list[tuple[str, str, str]]:
    """(namespace, name, message) of a nodeAssigned Event per Service this node
    started announcing (per mode) between `before` and `after`."""
    return [(ns, name, f'announcing from node "{node}" with protocol "{PROTOCOL[mode]}"')
            for mode, ns, name in sorted(set(after) - set(before))]


@dataclass(frozen=True)
class Create:
    kind: Kind
    key: Key
    status: dict[str, Any]


@dataclass(frozen=True)
class SetStatus:
    kind: Kind
    name: str
    key: Key
    status: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: Kind
    name: str
    key: Key
    why: str


Write = Create | SetStatus | Delete


def _key_of(kind: Kind, obj: Mapping[str, Any]) -> tuple[str, Key] | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    namespace, name = labels.get(LABEL_SERVICE_NAMESPACE), labels.get(LABEL_SERVICE_NAME)
    node = labels.get(LABEL_NODE)
    if not all(isinstance(v, str) and v for v in (namespace, name, node)):
        return None
    return str(node), (kind.mode, str(namespace), str(name))


def problem_notes(node: str, problems: Iterable[str]) -> list[Note]:
    """Warning Events for the plan problems that are about one object
    ("BGPPeer metallb-system/router: spec.bfdProfile: ..."; a "BGP: " prefix is
    the daemon's), each on that object, saying which node."""
    notes = []
    for line in problems:
        kind, _, rest = line.removeprefix("BGP: ").partition(" ")
        ref, sep, message = rest.partition(": ")
        namespace, slash, name = ref.partition("/")
        if kind not in API_VERSIONS or not sep or not slash or not name:
            continue
        reason = NOT_ANNOUNCED if kind == "Service" else REFUSED
        notes.append(Note(API_VERSIONS[kind], kind, namespace, name, reason,
                          f"{message} (node {node})"))
    return notes


def event_body(note: Note, host: str, now: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{note.name}.", "namespace": note.namespace},
        "involvedObject": {"apiVersion": note.api_version, "kind": note.kind,
                           "namespace": note.namespace, "name": note.name},
        "reason": note.reason, "message": note.message,
        "type": "Warning" if note.warning else "Normal",
        "source": {"component": COMPONENT, "host": host},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def plan_writes(node: str, desired: Mapping[Key, dict[str, Any]],
                existing: Mapping[str, Sequence[Mapping[str, Any]]],
                live: frozenset[str]) -> list[Write]:
    """What makes `existing` (plural -> the objects listed) hold `desired` for this node.

    This node's objects: one per desired key (created, or its status set when it
    differs; duplicates deleted), none for any other key.  Another node's
    ServiceL2Status is deleted when this node announces that Service and the
    other node is not `live`.  Objects without the three labels are not ours."""
    writes: list[Write] = []
    for kind in KINDS:
        mine: dict[Key, list[Mapping[str, Any]]] = {}
        foreign: list[tuple[str, Key, Mapping[str, Any]]] = []
        for obj in sorted(existing.get(kind.plural, ()),
                          key=lambda o: str((o.get("metadata") or {}).get("name"))):
            found = _key_of(kind, obj)
            if found is None:
                continue
            owner, key = found
            if owner == node:
                mine.setdefault(key, []).append(obj)
            else:
                foreign.append((owner, key, obj))
        for key, status in sorted((k, s) for k, s in desired.items() if k[0] == kind.mode):
            objs = mine.pop(key, [])
            if not objs:
                writes.append(Create(kind, key, status))
                continue
            first, *extra = objs
            if first.get("status") != status:
                writes.append(SetStatus(kind, _name(first), key, status))
            writes += [Delete(kind, _name(o), key, "a duplicate") for o in extra]
        for key, objs in sorted(mine.items()):
            writes += [Delete(kind, _name(o), key, "not announced from here any more")
                       for o in objs]
        if kind.mode == L2:
            for owner, key, obj in foreign:
                if key in desired and owner not in live:
                    writes.append(Delete(kind, _name(obj), key, f"{owner} is dead"))
    return writes


def shows_drift(node: str, desired: Mapping[Key, Mapping[str, Any]], live: frozenset[str],
                kind: Kind, event: str, obj: Mapping[str, Any]) -> bool:
    """Whether this watch event (ADDED, MODIFIED, DELETED) of a status object may
    call for a write by `node` (what plan_writes would do about it): one of its
    objects deleted while its Service is announced, or now other than wanted;
    another node's ServiceL2Status for a Service this node owns, that node dead.
    The echo of the node's own writes shows none: that of a create has no status
    yet (the API drops it; a status patch follows)."""
    found = _key_of(kind, obj)
    if found is None:
        return False
    owner, key = found
    wanted = desired.get(key)
    if owner != node:
        return (kind.mode == L2 and event != "DELETED" and wanted is not None
                and owner not in live)
    if event == "DELETED":
        return wanted is not None
    status = obj.get("status")
    return status != wanted and not (event == "ADDED" and not status and wanted is not None)


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What plan_writes reads of a status object: its name, labels and status.  The
    rest (managedFields above all) was most of the memory of the N objects kept."""
    meta = obj.get("metadata") or {}
    return {"metadata": {"name": meta.get("name"), "labels": meta.get("labels")},
            "status": obj.get("status")}


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))


def status_patch(status: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch making `status` exactly this (fields absent now are removed)."""
    return {"status": {**dict.fromkeys(("interfaces", "peers")), **status}}


Change = tuple[Sequence[Announcement], Sequence[Announcement], Sequence[Announcement],
               Sequence[Announcement]]  # the daemon's last_change: before, after, added, removed


class _Known:
    """The status objects of one kind the writer knows of (name -> `_slim` object),
    indexed by the Service each is about, so that a change is planned by the
    objects of the Services it touches (with the writer's lock held)."""

    def __init__(self, kind: Kind, items: Iterable[Mapping[str, Any]] = ()) -> None:
        self.kind = kind
        self.objects: dict[str, Mapping[str, Any]] = {}
        self._by_key: dict[Key | None, dict[str, Mapping[str, Any]]] = {}
        for obj in items:
            self.put(_name(obj), obj)

    def put(self, name: str, obj: Mapping[str, Any]) -> None:
        self.pop(name)
        self.objects[name] = obj
        self._by_key.setdefault(self._key(obj), {})[name] = obj

    def pop(self, name: str) -> None:
        obj = self.objects.pop(name, None)
        if obj is not None:
            key = self._key(obj)
            named = self._by_key[key]
            del named[name]
            if not named:
                del self._by_key[key]

    def of(self, keys: Iterable[Key] | None) -> list[Mapping[str, Any]]:
        """The objects about these Services (None: every object)."""
        if keys is None:
            return list(self.objects.values())
        return [o for key in keys for o in self._by_key.get(key, {}).values()]

    def _key(self, obj: Mapping[str, Any]) -> Key | None:
        found = _key_of(self.kind, obj)
        return found[1] if found else None


# -- the writer ------------------------------------------------------------------------------

@dataclass
class _Wanted:
    statuses: dict[Key, dict[str, Any]] = field(default_factory=dict)
    live: frozenset[str] = frozenset()
    events: list[Note] = field(default_factory=list)


class StatusWriter:
    """Keeps this node's status objects and Events in the API (see the module docstring)."""

    def __init__(self, client: KubeClient, node: str, namespace: str, *,
                 owner: Mapping[str, str] | None = None, resync: float = 30.0,
                 watch_timeout: int = 300) -> None:
        self.client = client
        self.node = node
        self.namespace = namespace
        self.owner = dict(owner) if owner else None  # the speaker's Pod: apiVersion, kind...
        self.resync = resync
        self.watch_timeout = watch_timeout
        self._lock = threading.Condition()
        self._wanted = _Wanted()
        self._dirty = False
        self._observed = False
        self._stopping = False
        self._announced: set[Key] = set()
        self._plan_of: dict[Key, list[Announcement]] = {}  # the plan's entries per Service
        # The last observe's inputs.
        self._seen: tuple[Sequence[Announcement], frozenset[str]] | None = None
        # The Services to sync (a change, drift), or None: all of them.
        self._suspects: set[Key] | None = set()
        self._l2 = 0  # how many Services that plan has this node announce by layer 2
        self._reported: frozenset[str] = frozenset()
        self._problem: str | None = None
        self._thread: threading.Thread | None = None
        # What the API holds (plural -> name -> object), kept by each kind's watch
        # and this writer's writes; a kind is planned for once its list arrived, and
        # one the API does not serve is in `_missing`.
        self._existing: dict[str, _Known] = {k.plural: _Known(k) for k in KINDS}
        self._listed: set[str] = set()
        self._missing: set[str] = set()
        self._stop = threading.Event()
        self._watches: list[ListWatch] = []
        self._watch_threads: list[threading.Thread] = []

    # -- on the daemon's loop -------------------------------------------------------------------

    def observe(self, desired: Sequence[Announcement], live: frozenset[str],
                change: Change | None = None) -> None:
        """What this node announces now; cheap, never blocks.  `change` is the daemon's
        last one, (before, after, added, removed): when it leads from the plan seen
        last to this one, only the Services it touches are looked at."""
        # The event bus calls this every second: the same plan (the daemon keeps an
        # unchanged one as the same object) needs no look at all N of it again.
        seen = self._seen
        self._seen = (desired, live)
        touched: set[Key]
        fresh: dict[Key, dict[str, Any]]
        if seen is not None and seen[0] is desired:
            # Who lives matters only to layer 2 (a dead owner's ServiceL2Status).
            if seen[1] == live or not self._l2:
                return
            touched, fresh = set(), {}
        elif (change is not None and seen is not None and change[0] is seen[0]
                and change[1] is desired):
            touched = self._follow_plan(change[2], change[3])
            fresh = desired_statuses(self.node, [a for key in touched
                                                 for a in self._plan_of.get(key, ())])
        else:
            self._plan_of = {}
            self._follow_plan(desired, ())
            fresh = desired_statuses(self.node, desired)
            touched = set(fresh) | self._announced
        started = sorted(k for k in touched if k in fresh and k not in self._announced)
        self._l2 -= sum(1 for k in touched if k[0] == L2 and k in self._announced)
        self._announced.difference_update(touched)
        self._announced.update(k for k in touched if k in fresh)
        self._l2 += sum(1 for k in touched if k[0] == L2 and k in fresh)
        events = [Note("v1", "Service", namespace, name, REASON, message, warning=False)
                  for namespace, name, message in assigned_messages(self.node, (), started)]
        with self._lock:
            wanted = self._wanted.statuses
            moved = {k for k in touched if fresh.get(k) != wanted.get(k)}
            for key in moved:
                if key in fresh:
                    wanted[key] = fresh[key]
                else:
                    del wanted[key]
            if live != self._wanted.live:
                self._wanted.live = live
                if self._l2:
                    moved |= {k for k in wanted if k[0] == L2}
            self._wanted.events += events
            if moved or events or not self._observed:
                self._observed = True
                self._suspect(moved)

    def _follow_plan(self, added: Iterable[Announcement],
                     removed: Iterable[Announcement]) -> set[Key]:
        """`_plan_of` after these entries came and went; the keys they touch."""
        touched: set[Key] = set()
        for ann, came in (*((a, False) for a in removed), *((a, True) for a in added)):
            if ann.kind not in KIND_OF:
                continue
            for service in ann.services:
                namespace, _, name = service.partition("/")
                key = (ann.kind, namespace, name)
                touched.add(key)
                if came:
                    self._plan_of.setdefault(key, []).append(ann)
                else:
                    left = [a for a in self._plan_of.get(key, ()) if a is not ann]
                    if left:
                        self._plan_of[key] = left
                    else:
                        self._plan_of.pop(key, None)
        return touched

    def observe_problems(self, problems: Sequence[str]) -> None:
        """The daemon's plan problems now: an Event for each one that is new (one
        that went away and came back is new again); cheap, never blocks."""
        now = frozenset(problems)
        fresh = [p for p in problems if p not in self._reported]
        self._reported = now
        notes = problem_notes(self.node, fresh)
        if not notes:
            return
        with self._lock:
            self._wanted.events += notes
            self._dirty = True
            self._lock.notify_all()

    def start(self) -> None:
        self._stop.clear()
        self._watches = [
            ListWatch(self.client, f"{kind.kind} status objects", partial(self._list, kind),
                      partial(self._on_event, kind), label_selector=self._selector(kind),
                      watch_timeout=self.watch_timeout, backoff_max=self.resync,
                      while_failing="status objects are written once it is back")
            for kind in KINDS]
        for watch in self._watches:
            watch.stop = self._stop
            thread = threading.Thread(target=self._follow, args=(watch,),
                                      name=f"StatusWriter({watch.name})", daemon=True)
            thread.start()
            self._watch_threads.append(thread)
        self._thread = threading.Thread(target=self._run, name="StatusWriter", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 3.0) -> None:
        """Remove this node's objects (it announces nothing any more), then stop."""
        # The watches first: the last sync plans by what they said (and lists a kind
        # they never listed).
        self._stop.set()
        for watch in self._watches:
            watch.interrupt()
        with self._lock:
            self._wanted.statuses, self._wanted.events = {}, []
            self._stopping = True
            self._suspects = None
            self._dirty = True
            self._lock.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        for thread in self._watch_threads:
            thread.join(timeout)
        self._watch_threads = []

    # -- in the watch threads ---------------------------------------------------------------------

    def _follow(self, watch: ListWatch) -> None:
        # Not before the daemon's first plan: a start with many Services wants the
        # CPU for its routes, and nothing is written before then anyway.
        with self._lock:
            while not (self._observed or self._stopping):
                self._lock.wait()
        watch.run()

    def _selector(self, kind: Kind) -> str | None:
        # Another node's objects matter only for layer 2 (a dead owner's are
        # deleted): BGP follows this node's alone, not every node's N.
        return None if kind.mode == L2 else f"{LABEL_NODE}={self.node}"

    def _list(self, kind: Kind, timeout: Any = (2, 10)) -> Position | None:
        """List `kind` (what it keeps of each object: `_slim`) in place of what was
        known; where to watch from, or None when the API does not serve it."""
        from kubernetes.client.exceptions import ApiException

        collection = self._collection(kind)
        try:
            items, version = self.client.list_all(collection, label_selector=self._selector(kind),
                                                  timeout=timeout, each=_slim)
        except ApiException as exc:
            if exc.status != 404:
                raise
            with self._lock:
                self._missing.add(kind.plural)
                self._listed.discard(kind.plural)
                self._existing[kind.plural] = _Known(kind)
                self._suspect(None)
            return None
        with self._lock:
            self._existing[kind.plural] = _Known(kind, items)
            self._listed.add(kind.plural)
            self._missing.discard(kind.plural)
            self._suspect(None)  # what was missed while not watching is planned for now
        return collection, version

    def _on_event(self, kind: Kind, event: str, obj: Any) -> None:
        slim = _slim(obj)
        name = _name(slim)
        with self._lock:
            known = self._existing[kind.plural]
            if event == "DELETED":
                known.pop(name)
            elif event != "ADDED" or name not in known.objects:  # not our create's echo
                known.put(name, slim)
            if shows_drift(self.node, self._wanted.statuses, self._wanted.live, kind, event,
                           slim):
                found = _key_of(kind, slim)
                self._suspect({found[1]} if found else None)

    def _suspect(self, keys: Iterable[Key] | None) -> None:
        """Sync these Services' objects (None: all) soon (with the lock held); not
        before the daemon's first plan."""
        if keys is None:
            self._suspects = None
        elif self._suspects is not None:
            self._suspects.update(keys)
        if self._observed or self._stopping:
            self._dirty = True
            self._lock.notify_all()

    # -- in the writer's thread ------------------------------------------------------------------

    def _run(self) -> None:
        delay = 1.0
        while True:
            with self._lock:
                # Nothing is known before the daemon's first plan (close() excepted).
                while not self._dirty or not (self._observed or self._stopping):
                    self._lock.wait()
                stopping = self._stopping
                suspects, self._suspects = self._suspects, set()
                wanted = self._wanted.statuses
                statuses = dict(wanted) if suspects is None else {
                    k: wanted[k] for k in suspects if k in wanted}
                live = self._wanted.live
                events, self._wanted.events = self._wanted.events, []
                self._dirty = False
            ok = self._sync(statuses, live, stopping, suspects)
            self._record(events)
            if stopping:
                return
            if ok:
                delay = 1.0
                continue
            with self._lock:
                self._suspect(suspects)  # tried again, with whatever came since
                self._lock.wait(delay)
            delay = min(delay * 2, self.resync)

    def _problem_now(self, problem: str | None) -> None:
        if problem == self._problem:
            return
        if problem is not None:
            log.warning("status objects: %s; retrying", problem)
        else:
            log.info("status objects: written again")
        self._problem = problem

    def _collection(self, kind: Kind) -> str:
        return f"/apis/{GROUP_VERSION}/namespaces/{self.namespace}/{kind.plural}"

    def _sync(self, statuses: dict[Key, dict[str, Any]], live: frozenset[str],
              stopping: bool, suspects: set[Key] | None = None) -> bool:
        """Write what makes the API hold `statuses` for the Services `suspects`
        (None: every one), as far as the watches say what it holds."""
        from kubernetes.client.exceptions import ApiException

        timeout = (2, 5) if stopping else (2, 10)
        try:
            if stopping:  # the last chance to remove ours: a kind never listed is now
                for kind in KINDS:
                    if kind.plural not in self._listed:
                        self._list(kind, timeout)
            with self._lock:
                ready = {k.plural for k in KINDS if k.plural in self._listed}
                missing = bool(self._missing)
                existing = {plural: self._existing[plural].of(suspects) for plural in ready}
            # plan_writes decides each Service by its own objects alone, so the
            # suspects' objects and statuses give the suspects' writes.
            writes = [w for w in plan_writes(self.node, statuses, existing, live)
                      if w.kind.plural in ready]
            for write in writes:
                self._write(write, timeout)
        except ApiException as exc:
            self._problem_now(f"HTTP {exc.status} {exc.reason}")
            return False
        except Exception as exc:  # noqa: BLE001 - the API may be unreachable: retry
            self._problem_now(one_line(exc))
            return False
        # A kind not listed yet is planned for when its list arrives; one not served
        # when it is (its watch looks again every `resync` seconds).
        self._problem_now("the API does not serve ServiceL2Status/ServiceBGPStatus "
                          "(metallb.io/v1beta1): install the CRDs of "
                          "install/manifests/10-crds.yaml" if missing else None)
        return True

    def _write(self, write: Write, timeout: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        collection = self._collection(write.kind)
        service = f"{write.key[1]}/{write.key[2]}"
        if isinstance(write, Delete):
            try:
                self.client.request("DELETE", f"{collection}/{write.name}", timeout=timeout)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            with self._lock:
                self._existing[write.kind.plural].pop(write.name)
            log.info("%s %s of Service %s deleted: %s", write.kind.kind, write.name, service,
                     write.why)
            return
        if isinstance(write, Create):
            meta: dict[str, Any] = {
                "generateName": write.kind.prefix, "namespace": self.namespace,
                "labels": {LABEL_NODE: self.node, LABEL_SERVICE_NAME: write.key[2],
                           LABEL_SERVICE_NAMESPACE: write.key[1]}}
            if self.owner is not None:
                meta["ownerReferences"] = [self.owner]
            body = {"apiVersion": GROUP_VERSION, "kind": write.kind.kind, "metadata": meta,
                    "spec": {}, "status": write.status}
            created = self.client.request("POST", collection, body=body, timeout=timeout)
            name = _name(created)
            if created.get("status") != write.status:  # dropped: a status subresource
                self._patch_status(collection, name, write.status, timeout)
            with self._lock:
                self._existing[write.kind.plural].put(
                    name, {**_slim(created), "status": write.status})
            log.info("%s %s: Service %s announced from %s", write.kind.kind, name, service,
                     self.node)
            return
        self._patch_status(collection, write.name, write.status, timeout)
        with self._lock:
            known = self._existing[write.kind.plural]
            was = known.objects.get(write.name)
            if was is not None:
                known.put(write.name, {**was, "status": write.status})

    def _patch_status(self, collection: str, name: str, status: Mapping[str, Any],
                      timeout: Any) -> None:
        self.client.request("PATCH", f"{collection}/{name}/status", body=status_patch(status),
                            content_type="application/merge-patch+json", timeout=timeout)

    def _record(self, events: list[Note]) -> None:
        import datetime

        for note in events:
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                self.client.request("POST", f"/api/v1/namespaces/{note.namespace}/events",
                                    body=event_body(note, self.node, now))
            except Exception as exc:  # noqa: BLE001 - an Event is best effort
                log.info("%s %s/%s: could not record the %s event: %s", note.kind,
                         note.namespace, note.name, note.reason, one_line(exc))
