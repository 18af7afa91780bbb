"""skein-speaker: argument parsing and wiring only (the daemon is speaker.daemon).

    skein-speaker --node NAME --manifests FILE [--assign-to-lo] [...]
    skein-speaker --node NAME [--kubeconfig FILE [--context NAME]] [--liveness ...] [...]

The source, logging and --version flags are the ones every daemon takes
(foundation.kube.cli); without --manifests or --kubeconfig it follows the API
in-cluster.  Liveness (who may own an L2 address): `--liveness heartbeat+lease`
(the default with the Kubernetes API; speaker.membership.combined) fails over
on UDP heartbeats and falls back on a Lease per speaker in --namespace when
heartbeats do not flow; `--liveness lease` is the Leases alone
(speaker.membership.lease: failover after the lease duration);
`--liveness heartbeat` (the default, and the only choice, with --manifests) the
heartbeats alone (speaker.membership.udp).

With the API the speaker also writes MetalLB's ServiceL2Status and
ServiceBGPStatus objects in --namespace and nodeAssigned Events
(speaker.kube_status; `--no-status-objects` turns that off), and serves
MetalLB's metrics beside its own with --metrics-address (speaker.metrics).

Run one per node, inside the node's network namespace.  Exit codes: 0 after a
clean stop (SIGTERM / SIGINT), 2 for bad usage or a configuration it cannot
run with, each explained in one line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Any

import click

from foundation.kube.cli import (
    CONTEXT_SETTINGS,
    Args,
    BadFlags,
    Refused,
    begin,
    daemon_options,
    make_source,
    run,
)
from foundation.kube.sources.base import Source
from speaker.api import service as api
from speaker.l2.announcer import DEFAULT_BURST, L2Announcer
from speaker.membership import Liveness
from speaker.membership.udp import DEFAULT_PORT

PROG = "skein-speaker"
API_WAIT = 2.0  # seconds the API waits for the first plan, at most
HEARTBEAT, LEASE, BOTH = "heartbeat", "lease", "heartbeat+lease"
LIVENESS = (BOTH, LEASE, HEARTBEAT)


class Seconds(click.ParamType):
    """A positive number of seconds."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"expected a positive number of seconds, got {value!r}", param, ctx)
        if not seconds > 0:
            self.fail(f"expected a positive number of seconds, got {value}", param, ctx)
        return seconds


class Offsets(click.ParamType):
    """Comma-separated seconds >= 0, at least one."""

    name = "offsets"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(float(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"expected comma-separated seconds such as 0,0.05,0.5, got {value!r}",
                      param, ctx)
        if not values or any(v < 0 for v in values):
            self.fail(f"expected at least one offset >= 0, got {value!r}", param, ctx)
        return values


SECONDS = Seconds()


@click.command(PROG, context_settings=CONTEXT_SETTINGS,
               help="Announce Service LoadBalancer addresses on layer 2 (ARP / NDP) with "
                    "fast failover, and over BGP to the routers of BGPPeer objects.")
@click.option("--node", required=True, help="This node's name (its Node metadata.name).")
@click.option("--liveness", type=click.Choice(LIVENESS), default=None,
              help="How speakers know each other alive: UDP heartbeats with Kubernetes "
                   "Leases where heartbeats do not flow (heartbeat+lease, the default with "
                   "the API), Leases alone, or heartbeats alone (the default, and the only "
                   "choice, with --manifests).")
@click.option("--namespace", metavar="NAME",
              default=lambda: os.environ.get("POD_NAMESPACE") or "skein-system",
              show_default="$POD_NAMESPACE, else skein-system",
              help="Namespace of the speakers' Leases and status objects.")
@click.option("--status-objects/--no-status-objects", default=True, show_default=True,
              help="With the API: write ServiceL2Status / ServiceBGPStatus objects and "
                   "nodeAssigned Events, as MetalLB's speaker does.")
@click.option("--lease-duration", type=int, default=4, metavar="SECONDS", show_default=True,
              help="A Lease not renewed this long is expired (whole seconds).")
@click.option("--lease-renew", type=SECONDS, default=1.0, show_default=True,
              help="Lease renewal period.")
@click.option("--member-port", type=int, default=DEFAULT_PORT, show_default=True,
              help="UDP port of the speakers' heartbeats.")
@click.option("--heartbeat-interval", type=SECONDS, default=0.05, show_default=True,
              help="Heartbeat period.")
@click.option("--dead-after", type=SECONDS, default=0.2, show_default=True,
              help="A peer silent this long is dead and loses its addresses.")
@click.option("--garp-burst", type=Offsets(), show_default=True,
              default=",".join(str(v) for v in DEFAULT_BURST),
              help="Seconds after a takeover at which gratuitous ARP/NA are sent.")
@click.option("--garp-refresh", type=float, default=10.0, metavar="SECONDS",
              show_default=True, help="Re-announce owned addresses this often; 0 disables.")
@click.option("--assign-to-lo", is_flag=True,
              help="Add owned addresses (L2) and BGP-announced ones to lo so this host "
                   "accepts their traffic (where no kube-proxy does); sets arp_ignore=1, "
                   "arp_announce=2.")
@click.option("--lb-class", default=None, metavar="CLASS",
              help="Serve only Services with this spec.loadBalancerClass.  [default: those "
                   "without one, as MetalLB]")
@click.option("--bgp-listen", is_flag=True,
              help="BGP: also accept sessions from the peers on --bgp-port (default: connect "
                   "out only, as MetalLB; needs no NET_BIND_SERVICE).")
@click.option("--bgp-port", type=int, default=179, show_default=True,
              help="BGP: the port listened on with --bgp-listen.")
@click.option("--advertise-pod-cidr", is_flag=True,
              help="BGP: announce this node's pod CIDR(s) to its peers, as Calico does, so "
                   "outside routers reach pods directly.")
@click.option("--resync", type=SECONDS, default=5.0, show_default=True,
              help="Re-plan this often even without changes.")
@api.api_options  # --api-socket, --api-address, --api-tls-*, --metrics-address
@daemon_options   # --manifests / --kubeconfig / --context, --log-level, --log-format, --version
def command(**params: Any) -> int:
    return speaker(Args(**params))


def main(argv: list[str] | None = None) -> int:
    return run(command, argv)


def _liveness(args: Args, source: Source) -> Liveness:
    if args.liveness in (LEASE, BOTH):
        from foundation.kube.sources.kube import KubeSource

        if not isinstance(source, KubeSource):  # speaker() refuses --manifests before this
            raise TypeError("Lease liveness needs the Kubernetes API source")
        if args.liveness == BOTH:
            from speaker.membership.combined import CombinedLiveness

            return CombinedLiveness(args.node, source.client, namespace=args.namespace,
                                    duration=args.lease_duration,
                                    renew_interval=args.lease_renew, port=args.member_port,
                                    interval=args.heartbeat_interval,
                                    dead_after=args.dead_after)
        from speaker.membership.lease import LeaseLiveness

        return LeaseLiveness(args.node, source.client, namespace=args.namespace,
                             duration=args.lease_duration, renew_interval=args.lease_renew)
    from speaker.membership.udp import UdpMembership

    return UdpMembership(args.node, port=args.member_port, interval=args.heartbeat_interval,
                         dead_after=args.dead_after)


def speaker(args: Args) -> int:
    begin(args, node=args.node)
    if args.dead_after <= args.heartbeat_interval:
        raise BadFlags(
            f"--dead-after ({args.dead_after}) must exceed --heartbeat-interval "
            f"({args.heartbeat_interval}), or every peer would flap")
    if args.liveness is None:
        args.liveness = HEARTBEAT if args.manifests is not None else BOTH
    if args.liveness != HEARTBEAT and args.manifests is not None:
        raise BadFlags(f"--liveness {args.liveness} needs the Kubernetes API (--kubeconfig, or "
                       "in-cluster), not --manifests")
    if args.liveness != HEARTBEAT and not 0 < args.lease_renew < args.lease_duration:
        raise BadFlags(
            f"--lease-renew ({args.lease_renew}) must be shorter than --lease-duration "
            f"({args.lease_duration}), which must be at least 1")
    problem = api.check_arguments(args)
    if problem is not None:
        raise BadFlags(problem)
    source = make_source(args, "speaker")  # Refused if the kubeconfig cannot be loaded

    from speaker.bgp_announcer import BgpAnnouncer
    from speaker.daemon import Daemon

    async def go() -> None:
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
        status = _status_writer(args, source)
        if status is not None:
            status.start()
            daemon.events.listeners.append(
                lambda _obs: status.observe(daemon.desired, daemon.liveness.live(),
                                            daemon.last_change))
            # What this node refuses: objects skipped whole, and what the plan
            # could not act on; each an Event on its object, naming the field.
            daemon.events.listeners.append(lambda _obs: status.observe_problems(
                (*source.refusals(), *daemon.problems)))
        if args.metrics_address is not None:
            from speaker.metrics import MetalLBMetrics

            metallb = MetalLBMetrics()
            daemon.events.listeners.append(lambda _obs: metallb.observe(daemon))
        running = asyncio.create_task(daemon.run())
        services = None
        try:
            # The API and the metrics start once the first plan is applied: loading
            # grpc is a fifth of a start with many Services, and the routes matter
            # more.  A source still without its first state after API_WAIT seconds
            # (an unreachable API server) does not keep them waiting longer.
            applied = asyncio.create_task(daemon.first_applied.wait())
            await asyncio.wait({running, applied}, timeout=API_WAIT,
                               return_when=asyncio.FIRST_COMPLETED)
            applied.cancel()
            if not running.done():
                services = await api.start(daemon, args)
                daemon.events.observe(daemon)  # the metrics' first figures, now
            await running
        finally:
            if not running.done():  # the API failed to start: withdraw, then report it
                daemon.stop()
                with contextlib.suppress(Exception):
                    await running
            if services is not None:
                await services.stop()
            if status is not None:
                await asyncio.to_thread(status.close)

    try:
        asyncio.run(go())
    except OSError as exc:
        raise Refused(f"cannot start: {exc}") from None
    return 0


def _status_writer(args: Args, source: Source) -> Any:
    """speaker.kube_status.StatusWriter with the API, owned by this speaker's Pod when
    the downward API names it (POD_NAME, POD_UID); None without the API."""
    if not args.status_objects or args.manifests is not None:
        return None  # before the import: the client library is most of a file-fed speaker
    from foundation.kube.sources.kube import KubeSource

    if not isinstance(source, KubeSource):
        return None
    from speaker.kube_status import StatusWriter

    pod, uid = os.environ.get("POD_NAME"), os.environ.get("POD_UID")
    owner = None
    if pod and uid and args.namespace == os.environ.get("POD_NAMESPACE"):
        owner = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
    return StatusWriter(source.client, args.node, args.namespace, owner=owner)


if __name__ == "__main__":
    sys.exit(main())
