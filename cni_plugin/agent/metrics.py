"""skein-agent's Prometheus metrics, served with `--metrics-address HOST:PORT`.

A registry of its own (not prometheus_client's global one): tests run several
agents in one process, and a scrape shows what this agent knows, with the
process and platform collectors added by `serve`.

- skein_agent_peers: the other nodes this node tunnels to (after a reconcile);
- skein_agent_routes: the overlay routes the agent has in place, one per peer
  pod subnet;
- skein_agent_fastpath_requests_total{command,result}: CNI requests answered
  over the fast path; result is "ok" (exit 0) or "error" (a CNI error answer);
- skein_agent_fastpath_request_seconds{command}: how long the agent took per
  request, from the request read to the answer sent;
- skein_agent_fastpath_fallbacks_total{reason}: requests the agent took whose
  client did the work itself (cni_plugin/fallback.py): "client_gone" (the
  client gave up before the agent started, and the request was dropped),
  "reply_lost" (the answer could not be sent).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from foundation import metrics as metrics_server

# Seconds: a fast-path ADD takes milliseconds; the long tail is a request that
# waited for another one on the same attachment, or for the IPAM lock.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 40.0)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.peers = Gauge("skein_agent_peers", "Other nodes this node tunnels to",
                           registry=self.registry)
        self.routes = Gauge("skein_agent_routes", "Overlay routes in place (one per peer "
                            "pod subnet)", registry=self.registry)
        self.requests = Counter("skein_agent_fastpath_requests",
                                "CNI requests answered over the fast path",
                                ["command", "result"], registry=self.registry)
        self.latency = Histogram("skein_agent_fastpath_request_seconds",
                                 "Time from a fast path request read to its answer sent",
                                 ["command"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.fallbacks = Counter("skein_agent_fastpath_fallbacks",
                                 "Fast path requests whose client did the work itself",
                                 ["reason"], registry=self.registry)

    def served(self, command: str, code: int, seconds: float) -> None:
        """One request answered with exit code `code` after `seconds`."""
        self.requests.labels(command, "ok" if code == 0 else "error").inc()
        self.latency.labels(command).observe(seconds)

    def fell_back(self, reason: str) -> None:
        self.fallbacks.labels(reason).inc()


def serve(metrics: AgentMetrics, address: str) -> tuple[str, int]:
    """Serve /metrics on `address` (port 0: any free one); the bound host and port."""
    return metrics_server.serve(address, metrics.registry)
