"""skein-speaker: argument parsing and wiring only (the daemon is speaker.daemon).

    skein-speaker --node NAME --manifests FILE [--assign-to-lo] [...]
    skein-speaker --node NAME (--kubeconfig FILE | --in-cluster) [--liveness lease] [...]

Liveness (who may own an L2 address): `--liveness lease` (the default with the
Kubernetes API) is a Lease per speaker in --namespace (speaker.membership.lease);
`--liveness heartbeat` (the default, and the only choice, with --manifests) is
the UDP heartbeat protocol (speaker.membership.udp), which fails over faster.

Run one per node, inside the node's network namespace.  Exit codes: 0 after a
clean stop (SIGTERM / SIGINT), 2 for bad usage or a configuration it cannot
run with, each explained in one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from foundation.kube.sources.base import Source
from speaker.api import service as api
from speaker.l2.announcer import DEFAULT_BURST, L2Announcer
from speaker.membership import Liveness
from speaker.membership.udp import DEFAULT_PORT

PROG = "skein-speaker"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _burst(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated seconds such as 0,0.05,0.5, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected at least one offset >= 0, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Announce Service LoadBalancer "
                                "addresses on layer 2 (ARP / NDP) with fast failover, and "
                                "over BGP to the routers of BGPPeer objects.")
    p.add_argument("--node", required=True, help="this node's name (its Node metadata.name)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifests", metavar="FILE",
                        help="follow a multi-document YAML file of Kubernetes objects")
    source.add_argument("--kubeconfig", metavar="FILE",
                        help="follow the Kubernetes API with this kubeconfig")
    source.add_argument("--in-cluster", action="store_true",
                        help="follow the Kubernetes API with the pod's service account")
    p.add_argument("--liveness", choices=("heartbeat", "lease"), default=None,
                   help="how speakers know each other alive: Kubernetes Leases (default with "
                        "--kubeconfig / --in-cluster) or UDP heartbeats (default, and the "
                        "only choice, with --manifests; faster failover)")
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "skein-system",
                   help="namespace of the speakers' Leases (default $POD_NAMESPACE, else "
                        "skein-system)")
    p.add_argument("--lease-duration", type=int, default=4, metavar="SECONDS",
                   help="a Lease not renewed this long is expired (whole seconds, default "
                        "%(default)s)")
    p.add_argument("--lease-renew", type=_positive, default=1.0, metavar="SECONDS",
                   help="Lease renewal period (default %(default)s)")
    p.add_argument("--member-port", type=int, default=DEFAULT_PORT,
                   help="UDP port of the speakers' heartbeats (default %(default)s)")
    p.add_argument("--heartbeat-interval", type=_positive, default=0.05, metavar="SECONDS",
                   help="heartbeat period (default %(default)s)")
    p.add_argument("--dead-after", type=_positive, default=0.2, metavar="SECONDS",
                   help="a peer silent this long is dead and loses its addresses "
                        "(default %(default)s)")
    burst_text = ",".join(str(v) for v in DEFAULT_BURST)
    p.add_argument("--garp-burst", type=_burst, default=DEFAULT_BURST, metavar="OFFSETS",
                   help="seconds after a takeover at which gratuitous ARP/NA are sent "
                        f"(default {burst_text})")
    p.add_argument("--garp-refresh", type=float, default=10.0, metavar="SECONDS",
                   help="re-announce owned addresses this often; 0 disables (default "
                        "%(default)s)")
    p.add_argument("--assign-to-lo", action="store_true",
                   help="add owned addresses (L2) and BGP-announced ones to lo so this host "
                        "accepts their traffic (where no kube-proxy does); sets arp_ignore=1, "
                        "arp_announce=2")
    p.add_argument("--lb-class", default=None,
                   help="serve only Services with this spec.loadBalancerClass (default: "
                        "those without one, as MetalLB)")
    bgp = p.add_argument_group("BGP (sessions from BGPPeer objects selecting this node)")
    bgp.add_argument("--bgp-listen", action="store_true",
                     help="also accept sessions from the peers on --bgp-port (default: "
                          "connect out only, as MetalLB; needs no NET_BIND_SERVICE)")
    bgp.add_argument("--bgp-port", type=int, default=179,
                     help="port listened on with --bgp-listen (default %(default)s)")
    bgp.add_argument("--advertise-pod-cidr", action="store_true",
                     help="announce this node's pod CIDR(s) to its BGP peers, as Calico "
                          "does, so outside routers reach pods directly")
    p.add_argument("--resync", type=_positive, default=5.0, metavar="SECONDS",
                   help="re-plan this often even without changes (default %(default)s)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    api.add_arguments(p)  # --api-socket, --api-address, --api-tls-*, --metrics-address
    return p


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _source(args: argparse.Namespace) -> Source:
    if args.manifests is not None:
        from foundation.kube.sources.file import FileSource

        return FileSource(args.manifests)
    from foundation.kube.sources.kube import SPEAKER_KINDS, KubeClient, KubeSource

    client = KubeClient.from_kubeconfig(None if args.in_cluster else args.kubeconfig)
    return KubeSource(client, SPEAKER_KINDS)


def _liveness(args: argparse.Namespace, source: Source) -> Liveness:
    if args.liveness == "lease":
        from foundation.kube.sources.kube import KubeSource
        from speaker.membership.lease import LeaseLiveness

        if not isinstance(source, KubeSource):  # main() refuses --manifests before this
            raise TypeError("Lease liveness needs the Kubernetes API source")
        return LeaseLiveness(args.node, source.client, namespace=args.namespace,
                             duration=args.lease_duration, renew_interval=args.lease_renew)
    from speaker.membership.udp import UdpMembership

    return UdpMembership(args.node, port=args.member_port, interval=args.heartbeat_interval,
                         dead_after=args.dead_after)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {args.node} %(name)s %(levelname)s %(message)s")
    if args.dead_after <= args.heartbeat_interval:
        return fail(f"--dead-after ({args.dead_after}) must exceed --heartbeat-interval "
                    f"({args.heartbeat_interval}), or every peer would flap")
    if args.liveness is None:
        args.liveness = "heartbeat" if args.manifests is not None else "lease"
    if args.liveness == "lease" and args.manifests is not None:
        return fail("--liveness lease needs the Kubernetes API (--kubeconfig or --in-cluster), "
                    "not --manifests")
    if args.liveness == "lease" and not 0 < args.lease_renew < args.lease_duration:
        return fail(f"--lease-renew ({args.lease_renew}) must be shorter than "
                    f"--lease-duration ({args.lease_duration}), which must be at least 1")
    problem = api.check_arguments(args)
    if problem is not None:
        return fail(problem)

    try:
        source = _source(args)
    except Exception as exc:  # noqa: BLE001 - any config-loading failure, said in one line
        return fail("cannot read the Kubernetes configuration: " + " ".join(str(exc).split()))

    from speaker.bgp_announcer import BgpAnnouncer
    from speaker.daemon import Daemon

    async def run() -> None:
        announcer = L2Announcer(burst=args.garp_burst, refresh=args.garp_refresh,
                                assign_to_lo=args.assign_to_lo)
        # Idle (no socket, no session) until a BGPPeer selects this node.
        bgp_announcer = BgpAnnouncer(listen=("0.0.0.0", "::") if args.bgp_listen else (),
                                     listen_port=args.bgp_port, assign_to_lo=args.assign_to_lo)
        liveness = _liveness(args, source)
        daemon = Daemon(args.node, source, liveness, [announcer, bgp_announcer],
                        resync=args.resync, lb_class=args.lb_class,
                        advertise_pod_cidrs=args.advertise_pod_cidr)
        daemon.install_signals()
        services = await api.start(daemon, args)
        try:
            await daemon.run()
        finally:
            await services.stop()

    try:
        asyncio.run(run())
    except OSError as exc:
        return fail(f"cannot start: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
