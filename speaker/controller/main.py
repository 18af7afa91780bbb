"""skein-controller: argument parsing and wiring only.

Two sources like every Skein daemon: `--manifests FILE` (the lab; statuses are
written back into FILE) or the Kubernetes API (`--kubeconfig PATH`, else the
pod's service account).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from foundation.kube.sources.base import Source
from speaker.controller.controller import Controller
from speaker.controller.metrics import ControllerMetrics, parse_listen_address, serve
from speaker.controller.writers import ManifestsWriter, StatusWriter

log = logging.getLogger("skein-controller")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skein-controller",
                                description="Assign LoadBalancer addresses to Services "
                                "from MetalLB IPAddressPools")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--manifests", metavar="FILE",
                        help="YAML file of Kubernetes objects (lab mode); statuses are "
                        "written back into it")
    source.add_argument("--kubeconfig", metavar="PATH",
                        help="use the Kubernetes API through this kubeconfig "
                        "(default without --manifests: in-cluster service account)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--metallb-namespace", default="metallb-system",
                   help="namespace of the IPAddressPools (API mode; '' for all)")
    p.add_argument("--lb-class", default=None,
                   help="serve Services with this spec.loadBalancerClass (default: those "
                   "without one)")
    p.add_argument("--metrics-address", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics "
                   "(port 0: any free port, logged)")
    p.add_argument("--resync", type=float, default=30.0,
                   help="seconds between reconciles when nothing changes")
    p.add_argument("--log-level", default="INFO")
    return p


def _source_and_writer(args: argparse.Namespace) -> tuple[Source, StatusWriter]:
    if args.manifests:
        from foundation.kube.sources.file import FileSource

        return FileSource(args.manifests), ManifestsWriter(args.manifests)
    from foundation.kube.sources.kube import CONTROLLER_KINDS, KubeClient, KubeSource
    from speaker.controller.writers import KubeWriter

    client = KubeClient.from_kubeconfig(args.kubeconfig, args.context)
    return (KubeSource(client, CONTROLLER_KINDS, args.metallb_namespace or None),
            KubeWriter(client))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.metrics_address is not None:
        try:
            parse_listen_address(args.metrics_address)
        except ValueError as exc:
            print(f"skein-controller: --metrics-address: {exc}", file=sys.stderr)
            return 2
    try:
        source, writer = _source_and_writer(args)
    except Exception as exc:  # noqa: BLE001 - a bad kubeconfig is a usage error
        print(f"skein-controller: cannot reach the Kubernetes API: {exc}", file=sys.stderr)
        return 2
    metrics = ControllerMetrics()
    if args.metrics_address is not None:
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
