"""The agent's reconcile loop: cluster state in, kernel and conflist converged.

It reconciles whenever the source publishes a new state and every `resync`
seconds regardless (so an entry someone deleted by hand comes back).  It never
flushes on start: a restarted agent finds its own entries already right and
changes nothing, so traffic does not notice the restart.

It also keeps the node's masquerade rule set (masquerade.py): written at start,
from the agent's own configuration (the cluster's pod network), checked on
every resync, left in place when the agent stops.  And it remembers the VXLAN
device it made sure of, so the ADDs it serves do not verify it again
(vxlan.KnownDevice).  Everything it does in the kernel goes through one
netlink layer (foundation/netlink), the device and its entries through one
object (vxlan.VxlanDevice).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cni_plugin import vxlan
from cni_plugin.agent import kernel
from cni_plugin.agent.fastpath_server import FastPathServer
from cni_plugin.agent.masquerade import NodeMasquerade
from cni_plugin.agent.metrics import AgentMetrics
from cni_plugin.agent.peers import Topology, select_peers
from cni_plugin.agent.plan import Action, Entries, desired_entries, diff, owned_fdbs
from cni_plugin.agent.plan import Route as PlanRoute
from cni_plugin.config import NetConf, VxlanConf
from cni_plugin.conflist import CONFLIST_NAME, node_conflist, write_atomically
from cni_plugin.host import WarmHost
from cni_plugin.ipam_exec import Ipam
from cni_plugin.nft import Nft, NftCommand
from cni_plugin.plugin import SkeinPlugin
from foundation import netlink
from foundation.cni.spec import CniError
from foundation.kube.model.cluster import ClusterState
from foundation.kube.sources.base import Source

log = logging.getLogger("skein.agent")


@dataclass
class AgentConfig:
    node: str
    vxlan: VxlanConf = field(default_factory=VxlanConf)
    cni_conf_dir: str = "/etc/cni/net.d"
    ipam_data_dir: str = "/var/lib/cni/networks"
    cluster_cidrs: tuple[str, ...] = ("10.244.0.0/16",)
    resync: float = 10.0
    socket_path: str | None = "/run/skein/agent.sock"  # None: no fast path
    overlay: bool = True  # False: serve the fast path only (no VXLAN, no peers)
    ip_masq: bool = True  # the node masquerades pod traffic leaving cluster_cidrs
    fault_pause: float = 0.0  # tests: pause before answering a fast path request
    metrics_address: str | None = None  # HOST:PORT of /metrics; None: not served


class Agent:
    """`nft` runs every `nft` command of the agent: its masquerade rule set's,
    and the plugin's own ipMasq when a config asks for it (default: the nft
    binary; tests pass cni_plugin.nft.FakeNft)."""

    def __init__(self, config: AgentConfig, source: Source | None,
                 nft: Nft | None = None) -> None:
        self.config = config
        self.source = source
        self.fastpath: FastPathServer | None = None
        self.warm_host = WarmHost()
        self.vxlan_device = vxlan.KnownDevice()
        self.nft: Nft = nft or NftCommand()
        self.metrics = AgentMetrics()
        # Only an overlay agent is the node's agent; --no-overlay serves the
        # fast path and leaves the node's netfilter alone.
        self.masquerade = (NodeMasquerade(config.cluster_cidrs if config.ip_masq else (),
                                          self.nft)
                           if config.overlay else None)
        self._masquerade_problem: str | None = None
        self.stop_event = threading.Event()
        self._last_problems: tuple[str, ...] = ()
        self.topology: Topology | None = None

    def reconcile(self, state: ClusterState) -> None:
        sock = netlink.open_route_socket()
        try:
            device = vxlan.VxlanDevice.ensure(sock, self.config.vxlan, recreate=True)
            self.vxlan_device.remember(self.config.vxlan, device.link)
            neighs_routes, fdbs = kernel.observe(device)
            mac_of = {n.address: n.mac for n in neighs_routes.neighs}
            topo = select_peers(state.nodes, self.config.node,
                                frozenset((r.dst, mac_of.get(r.via, ""))
                                          for r in neighs_routes.routes))
            if topo.problems != self._last_problems:
                for problem in topo.problems:
                    log.warning("peer data: %s", problem)
                self._last_problems = topo.problems
            self.topology = topo
            for cidr in topo.own_cidrs:
                if cidr.version == 4:
                    device.add_address(f"{cidr.network_address}/32")
            desired = desired_entries(topo.peers)
            observed = Entries(neighs_routes.neighs,
                               owned_fdbs(fdbs, neighs_routes.neighs, desired),
                               neighs_routes.routes)
            actions = diff(desired, observed)
            failures = kernel.apply(device, actions)
            for action, why in failures:
                log.error("overlay: %s %s: %s", action.op, action.entry, why)
            if actions:
                log.info("overlay: %d peers; applied %s", len(topo.peers),
                         ", ".join(f"{a.op} {a.entry}" for a in actions))
            self.metrics.peers.set(len(topo.peers))
            self.metrics.routes.set(len(routes_in_place(observed, actions, failures)))
            mtu = device.mtu
        finally:
            sock.close()
        if topo.own_cidrs:
            self.write_conflist([str(c) for c in topo.own_cidrs], mtu)

    def conflist(self, own_cidrs: list[str], mtu: int) -> dict[str, Any]:
        """The node's conflist: masquerading is this agent's (the plugin's own
        ipMasq off), the fast path is named when it is served."""
        return node_conflist(own_cidrs, data_dir=self.config.ipam_data_dir,
                             cluster_cidrs=list(self.config.cluster_cidrs), mtu=mtu,
                             vxlan={"vni": self.config.vxlan.vni,
                                    "port": self.config.vxlan.port,
                                    "device": self.config.vxlan.device,
                                    **({"underlayDevice": self.config.vxlan.underlay_device}
                                       if self.config.vxlan.underlay_device else {})},
                             ip_masq=self.config.ip_masq, agent_socket=self.config.socket_path,
                             agent_masquerades=True)

    def write_conflist(self, own_cidrs: list[str], mtu: int) -> None:
        conf = self.conflist(own_cidrs, mtu)
        path = os.path.join(self.config.cni_conf_dir, CONFLIST_NAME)
        if write_atomically(path, conf):
            log.info("wrote %s (pod subnets %s, MTU %d)", path, ", ".join(own_cidrs), mtu)

    def reconcile_safely(self, state: ClusterState) -> None:
        try:
            self.reconcile(state)
        except CniError as err:
            log.error("reconcile failed: %s (%s)", err.msg, err.details)
        except Exception as exc:  # noqa: BLE001 - a daemon logs and keeps serving
            log.error("reconcile failed: %s: %s", type(exc).__name__, exc)
            log.debug("reconcile failure", exc_info=True)

    def sync_masquerade(self) -> None:
        """The node's masquerade rule set made true; a failure is logged (once
        until it changes) and retried on the next resync."""
        if self.masquerade is None:
            return
        try:
            self.masquerade.sync()
            problem = None
        except Exception as exc:  # noqa: BLE001 - a daemon logs and keeps serving
            problem = str(exc)
        if problem != self._masquerade_problem:
            if problem:
                log.error("masquerade: %s", problem)
            elif self._masquerade_problem:
                log.info("masquerade: in place again")
            self._masquerade_problem = problem

    def readiness(self, conf: NetConf) -> str | None:
        """STATUS as the agent sees it: an overlay node is ready once its own pod
        subnet is known (its conflist exists then too)."""
        if conf.vxlan is None or not self.config.overlay:
            return None
        if self.topology is None or not self.topology.own_cidrs:
            return f"node {self.config.node}: pod subnet not known yet (no spec.podCIDR)"
        return None

    def start_fastpath(self) -> None:
        if not self.config.socket_path:
            return
        from ipam.leasecache import LeaseCache
        from ipam.plugin import HostLocalIpam
        from ipam.spare import Spares

        # skein-ipam runs in this process: no Python start per pod.  It reads
        # only the leases that changed (ipam/leasecache.py), and its next lease
        # file is made once an answer is out (ipam/spare.py).
        spares, cache = Spares(), LeaseCache()
        ipam = Ipam({"skein-ipam": lambda: HostLocalIpam(spares, cache)})
        warm, nft = self.warm_host, self.nft
        overlay = self.vxlan_device.device
        self.fastpath = FastPathServer(self.config.socket_path,
                                       lambda: SkeinPlugin(readiness=self.readiness, host=warm,
                                                           overlay=overlay, ipam=ipam, nft=nft),
                                       pause_before_reply=self.config.fault_pause,
                                       after_reply=spares.replenish, metrics=self.metrics)
        self.fastpath.start()

    def serve_metrics(self) -> None:
        if self.config.metrics_address is None:
            return
        from cni_plugin.agent.metrics import serve

        try:
            host, port = serve(self.metrics, self.config.metrics_address)
        except (ValueError, OSError) as exc:
            log.error("--metrics-address %s: %s; serving no metrics",
                      self.config.metrics_address, exc)
            return
        log.info("metrics on http://%s:%d/metrics", host, port)

    def run(self) -> None:
        self.serve_metrics()
        # Before the first pod: the rule set depends on this agent's flags only.
        self.sync_masquerade()
        self.start_fastpath()
        try:
            if self.source is None:
                while not self.stop_event.wait(self.config.resync):
                    self.warm_host.forget()
                    self.vxlan_device.forget()  # no reconcile here re-checks it
                return
            self.source.start()
            state = self.source.snapshot()
            self.reconcile_safely(state)
            checked = time.monotonic()
            while not self.stop_event.is_set():
                self.warm_host.forget()  # re-check bridge and gateways once per resync
                newer = self.source.wait_for_change(state.revision, timeout=self.config.resync)
                if self.stop_event.is_set():
                    break
                state = newer or self.source.snapshot()
                self.reconcile_safely(state)
                if time.monotonic() - checked >= self.config.resync:
                    # Once per resync, not on every change of the cluster's Nodes.
                    self.sync_masquerade()
                    checked = time.monotonic()
            self.source.close()
        finally:
            if self.fastpath is not None:
                self.fastpath.close()

    def stop(self) -> None:
        self.stop_event.set()


def routes_in_place(observed: Entries, actions: list[Action],
                    failures: list[tuple[Action, str]]) -> set[str]:
    """The destinations of the agent's routes once `actions` ran (less the
    ones that failed)."""
    failed = {id(action) for action, _ in failures}
    dsts = {route.dst for route in observed.routes}
    for action in actions:
        if isinstance(action.entry, PlanRoute) and id(action) not in failed:
            if action.op == "add":
                dsts.add(action.entry.dst)
            else:
                dsts.discard(action.entry.dst)
    return dsts


def parse_cluster_cidrs(values: list[str]) -> tuple[str, ...]:
    return tuple(str(ipaddress.ip_network(v, strict=False)) for v in values)
