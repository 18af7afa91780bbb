"""skein-agent: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from typing import Any

from cni_plugin.agent.daemon import Agent, AgentConfig, parse_cluster_cidrs
from cni_plugin.agent.masquerade import FAMILY, TABLE, Nft, NftError, NodeMasquerade
from cni_plugin.config import DEFAULT_VXLAN_DEVICE, DEFAULT_VXLAN_PORT, VxlanConf
from foundation.kube.sources.base import Source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skein-agent",
                                description="Skein node agent: VXLAN overlay and CNI conflist")
    p.add_argument("--node", help="this node's name (its Node object); required unless "
                   "--uninstall")
    p.add_argument("--manifests", help="YAML file of Kubernetes objects (lab mode); "
                   "re-read when it changes")
    p.add_argument("--kubeconfig", help="use the Kubernetes API through this kubeconfig "
                   "(default without --manifests: the in-cluster service account)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--cni-conf-dir", default="/etc/cni/net.d")
    p.add_argument("--ipam-data-dir", default="/var/lib/cni/networks")
    p.add_argument("--cluster-cidr", action="append", default=[],
                   help="the cluster's pod network (repeatable): pod traffic to anything "
                   "outside it is masqueraded by the node (default 10.244.0.0/16)")
    p.add_argument("--no-ip-masq", dest="ip_masq", action="store_false",
                   help="keep no masquerade rules for the node (and remove the ones an "
                   "earlier run left)")
    p.add_argument("--uninstall", action="store_true",
                   help="remove what the agent leaves on the node when it stops (the "
                   "node's masquerade rules: nftables table inet skein), then exit")
    p.add_argument("--vni", type=int, default=1)
    p.add_argument("--vxlan-port", type=int, default=DEFAULT_VXLAN_PORT)
    p.add_argument("--vxlan-device", default=DEFAULT_VXLAN_DEVICE)
    p.add_argument("--underlay-device", default=None,
                   help="default: the device with the default route")
    p.add_argument("--resync", type=float, default=10.0, help="seconds between full resyncs")
    p.add_argument("--socket", default="/run/skein/agent.sock",
                   help="unix socket of the CNI fast path (root only)")
    p.add_argument("--no-fastpath", action="store_true",
                   help="do not serve the CNI fast path; skein then works in-process")
    p.add_argument("--no-overlay", action="store_true",
                   help="serve the fast path only: no VXLAN, no peers, no conflist")
    p.add_argument("--log-level", default="INFO")
    return p


def make_source(args: argparse.Namespace) -> Source:
    """The peers' source: the manifests file (labs), else the Kubernetes API
    (Nodes only; the least the agent needs is get/list/watch on nodes)."""
    if args.manifests:
        from foundation.kube.sources.file import FileSource

        return FileSource(args.manifests)
    from foundation.kube.sources.kube import AGENT_KINDS, KubeClient, KubeSource

    return KubeSource(KubeClient.from_kubeconfig(args.kubeconfig, args.context), AGENT_KINDS)


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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pyroute2 logs every netlink message at DEBUG, which would slow every pod down.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)  # pyroute2 makes a loop per socket
    if args.uninstall:
        return uninstall()
    if not args.node:
        print("skein-agent: --node is required", file=sys.stderr)
        return 2
    if args.no_overlay and args.no_fastpath:
        print("skein-agent: --no-overlay with --no-fastpath leaves nothing to do",
              file=sys.stderr)
        return 2
    fault_pause = float(os.environ.get("SKEIN_AGENT_FAULT_PAUSE", "0") or 0)

    try:
        cidrs = parse_cluster_cidrs(args.cluster_cidr or ["10.244.0.0/16"])
    except ValueError as exc:
        print(f"skein-agent: --cluster-cidr: {exc}", file=sys.stderr)
        return 2
    config = AgentConfig(
        node=args.node,
        vxlan=VxlanConf(vni=args.vni, port=args.vxlan_port, device=args.vxlan_device,
                        underlay_device=args.underlay_device),
        cni_conf_dir=args.cni_conf_dir, ipam_data_dir=args.ipam_data_dir,
        cluster_cidrs=cidrs, resync=args.resync,
        socket_path=None if args.no_fastpath else args.socket,
        overlay=not args.no_overlay, ip_masq=args.ip_masq, fault_pause=fault_pause)
    try:
        source = None if args.no_overlay else make_source(args)
    except Exception as exc:  # noqa: BLE001 - a bad kubeconfig is a usage error
        print(f"skein-agent: cannot reach the Kubernetes API: {exc}", file=sys.stderr)
        return 2
    agent = Agent(config, source)
    # Everything imported so far lives as long as the process: keep the cyclic
    # garbage collector from walking it again and again in the middle of pod ADDs.
    gc.freeze()

    def stop(*_: Any) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
