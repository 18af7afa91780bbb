"""The controller's loop: newest state in, reconcile, statuses and failures out.

Why apart from main (wiring) and reconcile (pure decisions): this is the only
stateful part -- the allocator, which failures were already reported -- and
tests drive `step` directly with states and a recording writer.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from foundation.kube.model.cluster import ClusterState
from foundation.kube.model.fields import IPAddress
from foundation.kube.model.service import Service
from foundation.kube.sources.base import Source
from ipam.pools import Allocator
from speaker.controller.reconcile import Plan, Requests, reconcile
from speaker.controller.writers import StatusWriter

if TYPE_CHECKING:
    from speaker.controller.metrics import ControllerMetrics

log = logging.getLogger(__name__)


class Controller:
    """Reconciles each new state by the Services that changed since the last one
    (plus those still failing or whose status write is not seen yet); a state
    whose pools or namespaces changed, the first one and each resync are
    reconciled whole."""

    def __init__(self, writer: StatusWriter, metrics: ControllerMetrics | None = None,
                 lb_class: str | None = None) -> None:
        self.writer = writer
        self.metrics = metrics  # None: not served, not kept
        self.lb_class = lb_class
        self.allocator = Allocator()
        self.requests = Requests()
        # Every service of ours -> its desired ingress (what a whole reconcile returns).
        self.desired: dict[str, tuple[IPAddress, ...]] = {}
        self._reported: dict[str, str] = {}
        self._last: ClusterState | None = None
        self._pending: set[str] = set()  # statuses written, not yet seen in a state

    def _touched(self, state: ClusterState) -> dict[str, Service | None] | None:
        """Keys to reconcile with their Service in `state` (None: not there), or None
        for all of them."""
        last = self._last
        if (last is None or last.ip_address_pools != state.ip_address_pools
                or last.namespaces != state.namespaces):
            return None
        touched: dict[str, Service | None] = {}
        if state.services is not last.services:
            # Sources keep an unchanged object as the same object: only the others
            # are compared (an equal copy is not a change).
            came, went = state.services_since(last)
            old = {s.key: s for s in went}
            new = {s.key: s for s in came}
            touched = {k: new.get(k) for k in (*old, *new) if old.get(k) != new.get(k)}
        for key in (*self._reported, *self._pending):
            if key not in touched:
                touched[key] = state.service(*key.split("/", 1))
        return touched

    def step(self, state: ClusterState, full: bool = False) -> tuple[Plan, bool]:
        """Reconcile one state (`full`: every service, else by what changed); the plan
        (of the services looked at) and whether every status write succeeded."""
        keys = None if full else self._touched(state)
        plan = reconcile(self.allocator, state, self.lb_class, keys,
                         self.writer.annotates, self.requests)
        self._last = state
        if keys is None:
            self.desired = dict(plan.desired)
            failures = dict(plan.failures)
        else:
            for key in keys:
                self.desired.pop(key, None)
            self.desired.update(plan.desired)
            failures = {k: m for k, m in self._reported.items() if k not in keys}
            failures.update(plan.failures)
        for key, message in sorted(plan.failures.items()):
            if self._reported.get(key) != message:
                if self.metrics is not None:
                    self.metrics.failures.inc()
                namespace, _, name = key.partition("/")
                self.writer.report_failure(namespace, name, message)
        self._reported = failures
        written = self.writer.write(plan.changes)
        self._pending = {c.key for c in plan.changes}
        if self.metrics is not None:
            self.metrics.observe(self.allocator)
        return plan, written

    def run(self, source: Source, stop: threading.Event, resync: float = 30.0,
            retry: float = 2.0) -> None:
        """Reconcile every new state until `stop`; again, whole, after `resync` seconds
        anyway, or after `retry` seconds when a write failed."""
        state = source.snapshot()
        full = True
        while not stop.is_set():
            _plan, written = self.step(state, full)
            deadline = resync if written else retry
            waited = 0.0
            full = True
            while not stop.is_set() and waited < deadline:
                # Short waits so that `stop` is seen promptly.
                newer = source.wait_for_change(state.revision, timeout=min(0.5, deadline))
                if newer is not None:
                    state, full = newer, False
                    break
                waited += 0.5
