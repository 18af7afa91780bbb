"""Kubernetes Lease liveness: the `Liveness` of cluster mode.

Why Leases: in a cluster the API server is the one place every speaker already
talks to, so liveness needs no extra port opened between nodes (the UDP
heartbeats need 7946/udp node-to-node, which some network policies and cloud
security groups block), and the view is one shared record rather than each
speaker's own observation of the segment.  Why heartbeats stay the default of
file mode (and remain selectable in a cluster): a Lease expiry is counted in
whole seconds (`leaseDurationSeconds` is an integer, at least 1; default 4),
while a heartbeat peer is dead after `--dead-after`, a fraction of a second; and
file mode has no API server.

The protocol, as client-go's leader election does it, with one Lease per speaker:
- this speaker creates and renews the Lease `skein-speaker-<node>` in its
  namespace every `renew_interval` (default 1 s): `spec.holderIdentity` = node
  name, `leaseDurationSeconds` = `duration` (default 4), `renewTime` a MicroTime
  (RFC 3339 with microseconds).  An update carries the resourceVersion it read;
  a 409 Conflict re-reads and retries, a 404 re-creates;
- it lists and watches the Leases of that namespace carrying LABEL
  (`app.kubernetes.io/component=skein-speaker`) with the list + watch loop of
  the cluster state (foundation.kube.sources.kube.ListWatch: resume after a
  server timeout, list again on 410 Gone), and holds a member live while
  its Lease was seen to CHANGE less than its `leaseDurationSeconds` ago.  The
  time compared is when this speaker observed the change (a monotonic clock),
  never the remote `renewTime`, so clock skew between nodes does not matter; a
  Lease seen for the first time gets a full duration, as in client-go;
- `leave()` (SIGTERM) deletes this speaker's Lease: the peers see DELETED on
  their watch and re-elect at once.  A killed speaker's Lease simply stops
  changing and expires after its duration;
- this speaker counts itself live only while its own Lease is fresh by the same
  rule: one that cannot renew is expired for its peers too, so it stops
  answering for its addresses when they take them over.

While this speaker cannot list or watch (the API server is down, or unreachable
from this node) it cannot see anybody renew, so it sees nobody die either: the
view is frozen, and after the next successful list every Lease gets a fresh
duration from that moment.  An API outage therefore leaves the announcements as
they were instead of withdrawing them all.  Errors are retried with an
exponential back-off (with jitter, capped at half a duration so a recovered
API sees renewals again before the Lease expires); each problem is logged as
one line when it starts and one when it is over (the list/watch's under the
name "leases").  Nothing here raises into the daemon.

Blocking API calls run in threads (the `kubernetes` client is synchronous): the
renewals via `asyncio.to_thread`, the list/watch in one daemon thread that
hands each observation to the event loop, where the view lives.

RBAC (in the speaker's namespace): coordination.k8s.io leases get, list,
watch, create, update, delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from foundation.kube.model.fields import IPAddress
from foundation.kube.sources.kube import KubeClient, ListWatch, Position, one_line
from speaker.membership import OnChange

log = logging.getLogger("speaker.membership")

DEFAULT_NAMESPACE = "skein-system"
LEASE_PREFIX = "skein-speaker-"
LABEL = ("app.kubernetes.io/component", "skein-speaker")
API_VERSION = "coordination.k8s.io/v1"


def lease_name(node: str) -> str:
    return LEASE_PREFIX + node


def micro_time(when: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339, UTC, microseconds."""
    when = when or datetime.datetime.now(datetime.UTC)
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Record:
    holder: str
    marker: tuple[Any, ...]  # what must change for a renewal to count
    duration: float
    observed: float  # monotonic time the marker was last seen to change


@dataclass
class LeaseView:
    """The live set as one speaker sees it; pure (the caller passes the time)."""

    me: str
    default_duration: float
    members: frozenset[str] = frozenset()
    records: dict[str, _Record] = field(default_factory=dict)  # by Lease name
    frozen_at: float | None = None  # blind since then: nothing expires after it

    def live(self, now: float) -> frozenset[str]:
        if self.frozen_at is not None:
            now = min(now, self.frozen_at)
        fresh = {r.holder for r in self.records.values() if now < r.observed + r.duration}
        return frozenset(n for n in fresh if n == self.me or n in self.members)

    def observe(self, lease: Any, now: float, refresh: bool = False) -> None:
        """Account for a Lease as listed or watched (ADDED / MODIFIED)."""
        meta = (lease.get("metadata") or {}) if isinstance(lease, dict) else {}
        spec = (lease.get("spec") or {}) if isinstance(lease, dict) else {}
        name, holder = meta.get("name"), spec.get("holderIdentity")
        if not isinstance(name, str) or not isinstance(holder, str) or not holder:
            return
        try:
            duration = float(spec.get("leaseDurationSeconds") or self.default_duration)
        except (TypeError, ValueError):
            duration = self.default_duration
        marker = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        old = self.records.get(name)
        if old is not None and old.marker == marker and not refresh:
            return
        self.records[name] = _Record(holder, marker, duration, now)

    def forget(self, lease: Any) -> None:
        """A Lease was deleted: its holder left."""
        meta = (lease.get("metadata") or {}) if isinstance(lease, dict) else {}
        self.records.pop(str(meta.get("name")), None)

    def replace(self, leases: list[Any], now: float, refresh: bool) -> None:
        """A fresh list; `refresh`: this speaker was blind, so every Lease starts over."""
        names = {(x.get("metadata") or {}).get("name") for x in leases if isinstance(x, dict)}
        for name in list(self.records):
            if name not in names:
                del self.records[name]
        for lease in leases:
            self.observe(lease, now, refresh)


class LeaseLiveness:
    """The `Liveness` of cluster mode (see the module docstring)."""

    def __init__(self, me: str, client: KubeClient, *, namespace: str = DEFAULT_NAMESPACE,
                 duration: int = 4, renew_interval: float = 1.0,
                 watch_timeout: int = 300) -> None:
        if not isinstance(duration, int) or duration < 1:
            raise ValueError(f"the lease duration is whole seconds, at least 1 "
                             f"(leaseDurationSeconds), not {duration!r}")
        if renew_interval <= 0 or renew_interval >= duration:
            raise ValueError(f"the renew interval ({renew_interval}s) must be positive and "
                             f"shorter than the lease duration ({duration}s)")
        self.me = me
        self.client = client
        self.namespace = namespace
        self.duration = duration
        self.renew_interval = renew_interval
        self.watch_timeout = watch_timeout
        self.backoff_max = max(renew_interval, duration / 2)
        self.name = lease_name(me)
        self.view = LeaseView(me, float(duration))
        self._blind = True  # until the first list
        self._listed = False
        self._renewed = False
        self._lease: dict[str, Any] | None = None  # our Lease as last written or read
        self._live: frozenset[str] = frozenset()
        self._on_change: OnChange | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = threading.Event()
        self._leaving = threading.Event()  # no write may start after leave()
        self._write_lock = threading.Lock()  # held by a write in flight
        self._thread: threading.Thread | None = None
        self._renew_problem: str | None = None
        self.selector = "=".join(LABEL)
        # Our own renewals alone make an event every renew_interval: a stream
        # silent for two durations is broken.
        self._watch = ListWatch(
            client, "leases", self._relist,
            lambda kind, lease: self._post(self._event, kind, lease),
            on_error=lambda: self._post(self._went_blind), label_selector=self.selector,
            watch_timeout=watch_timeout,
            timeouts=(2, max(watch_timeout + 5, 2 * duration)),
            backoff_initial=renew_interval, backoff_max=self.backoff_max,
            while_failing="the live set is frozen until the API answers", logger=log)

    @property
    def collection(self) -> str:
        return f"/apis/{API_VERSION}/namespaces/{self.namespace}/leases"

    # -- Liveness -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        # Leases listed once (every live peer is known) and ours written once (the
        # peers know this speaker): before that, the view would be "alone".
        return self._listed and self._renewed

    def set_members(self, members: Mapping[str, tuple[IPAddress, ...]]) -> None:
        self.view.members = frozenset(members)
        self._update()

    def live(self) -> frozenset[str]:
        return self._live

    async def start(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch.run, args=(self._stop,),
                                        name="LeaseLiveness(watch)", daemon=True)
        self._thread.start()
        self._tasks = [asyncio.create_task(self._renew_loop(), name="lease-renewal"),
                       asyncio.create_task(self._expire_loop(), name="lease-expiry")]

    async def leave(self) -> None:
        self._leaving.set()
        await self._cancel_tasks()
        try:
            await asyncio.to_thread(self._delete)
            log.info("deleted lease %s/%s: peers re-elect now", self.namespace, self.name)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete lease %s/%s (%s): peers take over when it "
                            "expires in %ds", self.namespace, self.name, one_line(exc),
                            self.duration)
        except Exception as exc:  # noqa: BLE001 - shutting down regardless
            log.warning("could not delete lease %s/%s (%s): peers take over when it "
                        "expires in %ds", self.namespace, self.name, one_line(exc),
                        self.duration)
        self._lease = None

    async def close(self) -> None:
        await self._cancel_tasks()
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            deadline = time.monotonic() + 5
            while thread.is_alive() and time.monotonic() < deadline:
                self._watch.interrupt()
                await asyncio.to_thread(thread.join, 0.05)

    # -- the view (on the event loop) -----------------------------------------------------

    def _update(self) -> None:
        before, self._live = self._live, self.view.live(time.monotonic())
        joined, left = self._live - before, before - self._live
        if joined:
            log.info("lease%s of %s fresh: alive", "s" if len(joined) > 1 else "",
                     ", ".join(sorted(joined)))
        if left:
            log.warning("lease%s of %s expired or deleted: considered dead",
                        "s" if len(left) > 1 else "", ", ".join(sorted(left)))
        if (joined or left) and self._on_change is not None:
            self._on_change(frozenset(joined), frozenset(left))

    def _listed_now(self, leases: list[Any]) -> None:
        self.view.replace(leases, time.monotonic(), refresh=self._blind)
        self.view.frozen_at = None
        self._blind, self._listed = False, True
        self._update()

    def _event(self, kind: str, lease: Any) -> None:
        if kind == "DELETED":
            self.view.forget(lease)
        else:
            self.view.observe(lease, time.monotonic())
        self._update()

    def _went_blind(self) -> None:
        if not self._blind:
            self._blind = True
            self.view.frozen_at = time.monotonic()

    async def _expire_loop(self) -> None:
        tick = min(0.1, self.renew_interval / 4)
        while True:
            await asyncio.sleep(tick)
            self._update()

    # -- renewing our Lease ---------------------------------------------------------------

    async def _renew_loop(self) -> None:
        delay = self.renew_interval
        failures = 0
        while True:
            try:
                lease = await asyncio.to_thread(self._renew_once)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the renewer must outlive any error
                failures += 1
                problem = one_line(exc)
                wait = delay * random.uniform(0.5, 1.0)
                if problem != self._renew_problem:
                    log.warning("lease %s/%s: renewal failed: %s; retrying with back-off",
                                self.namespace, self.name, problem)
                    self._renew_problem = problem
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.backoff_max)
                continue
            if self._renew_problem is not None:
                log.info("lease %s/%s: renewed again after %d failed attempt%s",
                         self.namespace, self.name, failures, "" if failures == 1 else "s")
                self._renew_problem = None
            failures, delay = 0, self.renew_interval
            self._lease = lease
            self._renewed = True
            # A successful write is an observation of our own Lease too.
            self.view.observe(lease, time.monotonic())
            self._update()
            await asyncio.sleep(self.renew_interval)

    def _body(self, base: dict[str, Any] | None) -> dict[str, Any]:
        lease = dict(base or {})
        meta = dict(lease.get("metadata") or {})
        meta.update(name=self.name, namespace=self.namespace)
        meta["labels"] = {**(meta.get("labels") or {}), LABEL[0]: LABEL[1],
                          "app.kubernetes.io/part-of": "skein"}
        spec = dict(lease.get("spec") or {})
        now = micro_time()
        if spec.get("holderIdentity") != self.me or not spec.get("acquireTime"):
            spec["acquireTime"] = now
        spec.update(holderIdentity=self.me, leaseDurationSeconds=self.duration, renewTime=now)
        lease.update(apiVersion=API_VERSION, kind="Lease", metadata=meta, spec=spec)
        return lease

    def _delete(self) -> None:
        # After a renewal still in flight (its thread outlives the cancelled task),
        # or that renewal would re-create the Lease just deleted.
        with self._write_lock:
            self.client.request("DELETE", f"{self.collection}/{self.name}", timeout=(2, 2))

    def _renew_once(self) -> Any:
        """Write our Lease (in a thread); the object the server returned."""
        with self._write_lock:
            if self._leaving.is_set():
                raise asyncio.CancelledError()
            return self._write()

    def _write(self) -> Any:
        path = f"{self.collection}/{self.name}"
        timeout = (2, max(1.0, self.renew_interval * 2))
        current = self._lease
        for _ in range(5):
            if current is None:
                try:
                    current = self.client.request("GET", path, timeout=timeout)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    try:
                        return self.client.request("POST", self.collection,
                                                   body=self._body(None), timeout=timeout)
                    except ApiException as exc2:
                        if exc2.status != 409:  # created meanwhile (a previous attempt)
                            raise
                        current = None
                        continue
            try:
                return self.client.request("PUT", path, body=self._body(current),
                                           timeout=timeout)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
                # 409: somebody (our own timed-out attempt) wrote it since: read again.
                # 404: deleted under us: create it again.
                log.debug("lease %s: HTTP %d on update; reading it again", self.name,
                          exc.status)
                current = None
        raise RuntimeError("lease update kept conflicting (5 attempts)")

    # -- list + watch (foundation.kube.sources.kube.ListWatch, in a thread) ---------------

    def _relist(self) -> Position:
        items, version = self.client.list_all(self.collection, 500,
                                              label_selector=self.selector, timeout=(2, 10))
        self._post(self._listed_now, items)
        return self.collection, version

    def _post(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or self._stop.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            loop.call_soon_threadsafe(callback, *args)

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
