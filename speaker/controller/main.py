"""skein-controller: argument parsing and wiring only.

Two sources like every Skein daemon (foundation.kube.cli): `--manifests FILE`
(the lab; statuses are written back into FILE) or the Kubernetes API
(`--kubeconfig PATH [--context NAME]`, else the pod's service account).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from foundation.addresses import parse_listen_address
from foundation.kube.cli import (
    CONTEXT_SETTINGS,
    Args,
    BadFlags,
    begin,
    daemon_options,
    make_source,
    run,
)
from foundation.kube.sources.base import Source
from speaker.controller.controller import Controller
from speaker.controller.writers import ManifestsWriter, StatusWriter

log = logging.getLogger("skein-controller")


@click.command("skein-controller", context_settings=CONTEXT_SETTINGS,
               help="Assign LoadBalancer addresses to Services from MetalLB IPAddressPools "
                    "(with --manifests, statuses are written back into that file).")
@click.option("--metallb-namespace", default="metallb-system", metavar="NAME",
              show_default=True,
              help="Namespace of the IPAddressPools (API mode; '' for all).")
@click.option("--lb-class", default=None, metavar="CLASS",
              help="Serve Services with this spec.loadBalancerClass.  [default: those "
                   "without one]")
@click.option("--metrics-address", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (port 0: any free "
                   "port, logged).")
@click.option("--resync", type=float, default=30.0, metavar="SECONDS", show_default=True,
              help="Seconds between reconciles when nothing changes.")
@daemon_options   # --manifests / --kubeconfig / --context, --log-level, --log-format, --version
def command(**params: Any) -> int:
    return controller(Args(**params))


def _source_and_writer(args: Args) -> tuple[Source, StatusWriter]:
    source = make_source(args, "controller", args.metallb_namespace or None)
    if args.manifests is not None:
        return source, ManifestsWriter(args.manifests)
    from foundation.kube.sources.kube import KubeSource
    from speaker.controller.writers import KubeWriter

    assert isinstance(source, KubeSource)  # the API, without --manifests
    return source, KubeWriter(source.client)


def main(argv: list[str] | None = None) -> int:
    return run(command, argv)


def controller(args: Args) -> int:
    begin(args)
    if args.metrics_address is not None:
        try:
            parse_listen_address(args.metrics_address)
        except ValueError as exc:
            raise BadFlags(f"--metrics-address: {exc}") from None
    source, writer = _source_and_writer(args)  # Refused if the kubeconfig cannot be loaded
    metrics = None
    if args.metrics_address is not None:
        # Only then: prometheus_client and an HTTP server are a tenth of the start.
        from speaker.controller.metrics import ControllerMetrics, serve

        metrics = ControllerMetrics()
        host, port = serve(metrics, args.metrics_address)
        log.info("metrics on http://%s:%d/metrics", host, port)
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    source.start()
    try:
        wait_synced = getattr(source, "wait_synced", None)
        while wait_synced is not None and not stop.is_set() and not wait_synced(1.0):
            log.info("waiting for the first list of every kind before allocating")
        Controller(writer, metrics, args.lb_class).run(source, stop, args.resync)
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
