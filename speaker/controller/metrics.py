"""The controller's Prometheus metrics: allocation failures and pool usage.

Why a registry of its own rather than prometheus_client's global one: tests
build several controllers in one process, and a scrape should show only what
this controller knows (plus the process collectors added by `serve`).

- skein_controller_allocation_failures_total: new allocation failures (a
  service failing for the same reason on every reconcile counts once);
- skein_controller_pool_addresses_in_use{pool}: distinct addresses handed out;
- skein_controller_pool_addresses_total{pool}: addresses the pool can hand out
  (avoidBuggyIPs taken into account; an IPv6 /64 is a large float).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from foundation import metrics as metrics_server
from ipam.pools import Allocator, capacity


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.failures = Counter("skein_controller_allocation_failures",
                                "Allocation failures (each new failure of a service once)",
                                registry=self.registry)
        self.in_use = Gauge("skein_controller_pool_addresses_in_use",
                            "Addresses of the pool assigned to services", ["pool"],
                            registry=self.registry)
        self.total = Gauge("skein_controller_pool_addresses_total",
                           "Addresses the pool can assign", ["pool"], registry=self.registry)
        self._pools: set[str] = set()

    def observe(self, allocator: Allocator) -> None:
        """Set the pool gauges from the allocator; pools that went away are dropped."""
        for name, pool in allocator.pools.items():
            self.in_use.labels(name).set(allocator.in_use(name))
            self.total.labels(name).set(capacity(pool))
        for gone in self._pools - set(allocator.pools):
            self.in_use.remove(gone)
            self.total.remove(gone)
        self._pools = set(allocator.pools)


def serve(metrics: ControllerMetrics, address: str) -> tuple[str, int]:
    """Serve /metrics on `address` (port 0: any free one); the bound host and port."""
    return metrics_server.serve(address, metrics.registry)
