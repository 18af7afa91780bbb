"""The controller's loop: newest state in, reconcile, statuses and failures out.

Why apart from main (wiring) and reconcile (pure decisions): this is the only
stateful part -- the allocator, which failures were already reported -- and
tests drive `step` directly with states and a recording writer.
"""

from __future__ import annotations

import logging
import threading

from foundation.kube.model.cluster import ClusterState
from foundation.kube.sources.base import Source
from ipam.pools import Allocator
from speaker.controller.metrics import ControllerMetrics
from speaker.controller.reconcile import Plan, reconcile
from speaker.controller.writers import StatusWriter

log = logging.getLogger(__name__)


class Controller:
    def __init__(self, writer: StatusWriter, metrics: ControllerMetrics | None = None,
                 lb_class: str | None = None) -> None:
        self.writer = writer
        self.metrics = metrics if metrics is not None else ControllerMetrics()
        self.lb_class = lb_class
        self.allocator = Allocator()
        self._reported: dict[str, str] = {}

    def step(self, state: ClusterState) -> tuple[Plan, bool]:
        """Reconcile one state; the plan and whether every status write succeeded."""
        plan = reconcile(self.allocator, state, self.lb_class)
        for key, message in sorted(plan.failures.items()):
            if self._reported.get(key) != message:
                self.metrics.failures.inc()
                namespace, _, name = key.partition("/")
                self.writer.report_failure(namespace, name, message)
        self._reported = dict(plan.failures)
        written = self.writer.write(plan.changes)
        self.metrics.observe(self.allocator)
        return plan, written

    def run(self, source: Source, stop: threading.Event, resync: float = 30.0,
            retry: float = 2.0) -> None:
        """Reconcile every new state until `stop`; again after `resync` seconds anyway,
        or after `retry` seconds when a write failed."""
        state = source.snapshot()
        while not stop.is_set():
            _plan, written = self.step(state)
            deadline = resync if written else retry
            waited = 0.0
            while not stop.is_set() and waited < deadline:
                # Short waits so that `stop` is seen promptly.
                newer = source.wait_for_change(state.revision, timeout=min(0.5, deadline))
                if newer is not None:
                    state = newer
                    break
                waited += 0.5
