"""Serving Prometheus metrics, the one way every daemon does it: `/metrics` on
its `--metrics-address` ("HOST:PORT", "[V6]:PORT" or ":PORT"; port 0: any free
one), from a registry of its own (with process and platform collectors) or
prometheus_client's default one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from foundation.addresses import parse_listen_address


def serve(address: str, registry: CollectorRegistry | None = None) -> tuple[str, int]:
    """Serve `registry` (None: the default one, which has the process collector
    already) on `address`; the bound host and port."""
    host, port = parse_listen_address(address)
    if registry is None:
        server, _thread = start_http_server(port, host)
    else:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        server, _thread = start_http_server(port, host, registry=registry)
    bound = server.server_address
    return str(bound[0]), int(bound[1])
