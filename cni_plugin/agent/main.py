"""skein-agent: argument parsing and wiring only.

The source, logging and --version flags are the ones every daemon takes
(foundation.kube.cli); without --manifests or --kubeconfig it follows the
Nodes through the API in-cluster.  Exit codes: 0 after a clean stop, 1 when
--uninstall fails, 2 for bad usage or a configuration it cannot run with, in
one line on stderr.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Any

import click

from cni_plugin.agent.daemon import Agent, AgentConfig, parse_cluster_cidrs
from cni_plugin.agent.masquerade import FAMILY, TABLE, Nft, NftError, NodeMasquerade
from cni_plugin.config import DEFAULT_VXLAN_DEVICE, DEFAULT_VXLAN_PORT, VxlanConf
from foundation.kube.cli import (
    CONTEXT_SETTINGS,
    Args,
    BadFlags,
    begin,
    daemon_options,
    make_source,
    run,
)


@click.command("skein-agent", context_settings=CONTEXT_SETTINGS,
               help="Skein node agent: VXLAN overlay, CNI conflist, the plugin's fast path.")
@click.option("--node", default=None, metavar="NAME",
              help="This node's name (its Node object); required unless --uninstall.")
@click.option("--cni-conf-dir", default="/etc/cni/net.d", metavar="DIR", show_default=True)
@click.option("--ipam-data-dir", default="/var/lib/cni/networks", metavar="DIR",
              show_default=True)
@click.option("--cluster-cidr", multiple=True, metavar="CIDR",
              help="The cluster's pod network (repeatable): pod traffic to anything outside "
                   "it is masqueraded by the node.  [default: 10.244.0.0/16]")
@click.option("--no-ip-masq", "ip_masq", flag_value=False, default=True,
              help="Keep no masquerade rules for the node (and remove the ones an earlier "
                   "run left).")
@click.option("--uninstall", is_flag=True,
              help="Remove what the agent leaves on the node when it stops (the node's "
                   "masquerade rules: nftables table inet skein), then exit.")
@click.option("--vni", type=int, default=1, show_default=True)
@click.option("--vxlan-port", type=int, default=DEFAULT_VXLAN_PORT, show_default=True)
@click.option("--vxlan-device", default=DEFAULT_VXLAN_DEVICE, show_default=True)
@click.option("--underlay-device", default=None, metavar="DEVICE",
              help="[default: the device with the default route]")
@click.option("--resync", type=float, default=10.0, metavar="SECONDS", show_default=True,
              help="Seconds between full resyncs.")
@click.option("--socket", default="/run/skein/agent.sock", metavar="PATH", show_default=True,
              help="Unix socket of the CNI fast path (root only).")
@click.option("--no-fastpath", is_flag=True,
              help="Do not serve the CNI fast path; skein then works in-process.")
@click.option("--no-overlay", is_flag=True,
              help="Serve the fast path only: no VXLAN, no peers, no conflist.")
@click.option("--metrics-address", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics.")
@daemon_options   # --manifests / --kubeconfig / --context, --log-level, --log-format, --version
def command(**params: Any) -> int:
    return agent(Args(**params))


def uninstall(nft: Nft | None = None) -> int:
    """Remove the node's masquerade rule set: it outlives the agent on purpose
    (pods keep reaching the outside while the agent restarts or upgrades)."""
    try:
        removed = NodeMasquerade((), nft).remove()
    except NftError as exc:
        print(f"skein-agent: --uninstall: {exc}", file=sys.stderr)
        return 1
    print(f"skein-agent: {'removed' if removed else 'found no'} table {FAMILY} {TABLE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(command, argv)


def agent(args: Args) -> int:
    begin(args, node=args.node)
    if args.uninstall:
        return uninstall()
    if not args.node:
        raise BadFlags("--node is required")
    if args.no_overlay and args.no_fastpath:
        raise BadFlags("--no-overlay with --no-fastpath leaves nothing to do")
    fault_pause = float(os.environ.get("SKEIN_AGENT_FAULT_PAUSE", "0") or 0)

    try:
        cidrs = parse_cluster_cidrs(list(args.cluster_cidr) or ["10.244.0.0/16"])
    except ValueError as exc:
        raise BadFlags(f"--cluster-cidr: {exc}") from None
    config = AgentConfig(
        node=args.node,
        vxlan=VxlanConf(vni=args.vni, port=args.vxlan_port, device=args.vxlan_device,
                        underlay_device=args.underlay_device),
        cni_conf_dir=args.cni_conf_dir, ipam_data_dir=args.ipam_data_dir,
        cluster_cidrs=cidrs, resync=args.resync,
        socket_path=None if args.no_fastpath else args.socket,
        overlay=not args.no_overlay, ip_masq=args.ip_masq, fault_pause=fault_pause,
        metrics_address=args.metrics_address)
    # The peers' source: the manifests file (labs), else the Kubernetes API (Nodes
    # only; the least the agent needs is list/watch on nodes).  Refused if the
    # kubeconfig cannot be loaded.
    source = None if args.no_overlay else make_source(args, "agent")
    daemon = Agent(config, source)
    # Everything imported so far lives as long as the process: keep the cyclic
    # garbage collector from walking it again and again in the middle of pod ADDs.
    gc.freeze()

    def stop(*_: Any) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
