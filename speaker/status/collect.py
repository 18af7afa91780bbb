"""Read what a node's network really is, from the kernel, not from configuration.

Why this exists: a newcomer asking "which network does this cluster use, which
blocks for pods and services, how does a packet get from this pod to that one"
would otherwise dig through `ip`, `bridge`, the CNI conf dir, the IPAM leases and
the speaker.  This module does that digging once, for `skeinctl status` and
`skeinctl diagram`.

How each fact is derived (this is also what the docs promise):

- CNI in use: the first file of the CNI conf dir a runtime would pick (libcni's
  order: `*.conflist`, `*.conf`, `*.json` sorted by name); its network name,
  plugin chain, bridge, IPAM ranges (the node's pod CIDRs), IPAM dataDir and
  `ipMasqExclude` (the cluster's pod network).  The only input read from a file.
- Bridge and pods: the bridge named by the conflist (default cni0) and its ports,
  from netlink in the node namespace.  Each port's far end is found by the
  veth's link-netnsid: every named namespace (/var/run/netns) is asked for its
  nsid as seen from the node, and the one that matches is entered to read the
  peer interface (by the veth's peer ifindex): its name, MAC and addresses are
  the pod's.  The container ID comes from the IPAM lease file holding one of
  those addresses (`<dataDir>/<network>/<ip>` = "<containerID>\\r\\n<ifname>").
  A port whose namespace is not named (a runtime that keeps it elsewhere) is
  still listed, with the lease's addresses and `netns` None.
- VXLAN and peers: the VXLAN device (VNI, port, local address from its link
  info) and, on it, the routes, neighbour entries and FDB entries of protocol 83
  (the agent's): route pod-CIDR via VTEP address, neighbour VTEP address -> VTEP
  MAC, FDB VTEP MAC -> underlay IP.  Joined on the VTEP address and MAC.
- Underlay: the VXLAN device's lower device, else the default route's device.
- Service CIDR: not visible on a node at all (kube-proxy programs addresses, not
  a range), so it is what the caller passes (`--service-cidr`) or what a Calico
  BGPConfiguration `default` says (`serviceClusterIPs`), else "unknown".
- LoadBalancer addresses and BGP sessions: the speaker's own account
  (`SpeakerState`, from its API); the kernel only shows addresses it assigned to
  `lo` (`--assign-to-lo`), listed as `host_addresses`.
- Services as kube-proxy programmed them: `iptables-save -t nat` run in the node's
  namespace, its KUBE-SERVICES / KUBE-NODEPORTS rules followed to their DNAT
  targets (speaker/status/services.py).  No iptables-save, or no KUBE-SERVICES
  chain: no kube-proxy rules known (`proxy_source` "").

Everything reads the calling thread's network namespace; `collect_in` enters a
namespace (setns, per thread) first, so a lab's nodes can be read in parallel.
Files (the conf dir, the leases, the pods' named namespaces) are read under the
target's `root`: a node whose mount namespace is not ours (the kube lab's) is read
through /proc/PID/root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from foundation.netlink import RTPROT_SKEIN, rtnl
from foundation.netlink.netns import entered_fd
from speaker.status.model import (
    ClusterStatus,
    CniInfo,
    Interface,
    NodeStatus,
    Peer,
    Pod,
    ProxyRule,
    SpeakerState,
    Vxlan,
    with_peer_names,
)

NETNS_DIR = "/var/run/netns"
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
AF_INET, AF_INET6 = 2, 10
MAIN_TABLE = 254
_CONF_SUFFIXES = (".conflist", ".conf", ".json")


# -- the CNI configuration ---------------------------------------------------------------

def find_conflist(conf_dir: str) -> tuple[str, dict[str, Any]] | None:
    """The network configuration a runtime would use: the first parseable file by
    name.  A single-plugin `.conf` is returned as a one-plugin list."""
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith(_CONF_SUFFIXES))
    except FileNotFoundError:
        return None
    for name in names:
        path = os.path.join(conf_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if "plugins" not in data:
            data = {"cniVersion": data.get("cniVersion", ""), "name": data.get("name", ""),
                    "plugins": [data]}
        return path, data
    return None


def cni_info(path: str, conf: dict[str, Any]) -> CniInfo:
    plugins = [p for p in conf.get("plugins", []) if isinstance(p, dict)]
    main = next((p for p in plugins if p.get("type") in ("skein", "bridge")),
                plugins[0] if plugins else {})
    ipam = main.get("ipam") or {}
    cidrs = [r.get("subnet") for rs in ipam.get("ranges", []) for r in rs if isinstance(r, dict)]
    if ipam.get("subnet"):  # the older single-range form
        cidrs.append(ipam["subnet"])
    vxlan = main.get("vxlan")
    return CniInfo(
        path=path, network=str(conf.get("name", "")), cni_version=str(conf.get("cniVersion", "")),
        plugins=tuple(str(p.get("type", "?")) for p in plugins),
        bridge=str(main.get("bridge", "cni0")),
        pod_cidrs=tuple(str(c) for c in cidrs if c),
        data_dir=str(ipam.get("dataDir", "/var/lib/cni/networks")),
        cluster_cidrs=tuple(str(c) for c in main.get("ipMasqExclude", [])),
        vxlan_device=(str(vxlan.get("device", "skein.1")) if isinstance(vxlan, dict) else None),
        mtu=main.get("mtu"))


def read_leases(data_dir: str, network: str, root: str = ""
                ) -> dict[str, tuple[str, str | None]]:
    """address -> (container ID, ifname) from host-local's lease files."""
    from ipam.store import DiskStore

    try:
        leases = DiskStore(_under(root, os.path.join(data_dir, network))).leases()
    except FileNotFoundError:
        return {}
    return {str(a): (lease.container_id, lease.ifname) for a, lease in leases.items()}


def _under(root: str, path: str) -> str:
    """`path` as seen from a mount namespace whose root is `root` ("" or "/": ours)."""
    if root in ("", "/"):
        return path
    return os.path.join(root, path.lstrip("/"))


def read_kube_proxy() -> tuple[tuple[ProxyRule, ...], str]:
    """kube-proxy's Service rules in the calling thread's namespace, and where they
    were read ("iptables"), or ((), "") when there are none to read."""
    from speaker.status.services import parse_iptables

    try:
        proc = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return (), ""
    if proc.returncode != 0 or ":KUBE-SERVICES" not in proc.stdout:
        return (), ""
    return parse_iptables(proc.stdout), "iptables"


# -- netlink reading (the calling thread's namespace) --------------------------------------

def _open() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def _global_addresses(ipr: Any, index: int) -> tuple[str, ...]:
    out = [(m["family"], f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}")
           for m in ipr.get_addr(index=index) if m["scope"] == 0]
    return tuple(a for _, a in sorted(out))


def _interface(ipr: Any, msg: Any) -> Interface:
    index = msg["index"]
    return Interface(name=msg.get("IFLA_IFNAME"), index=index,
                     mac=msg.get("IFLA_ADDRESS") or "", mtu=msg.get("IFLA_MTU") or 0,
                     up=bool(msg["flags"] & rtnl.IFF_UP), addresses=_global_addresses(ipr, index))


def _kind(msg: Any) -> str:
    info = msg.get("IFLA_LINKINFO")
    return (info.get("IFLA_INFO_KIND") if info is not None else None) or ""


def named_namespaces(ipr: Any, netns_dir: str = NETNS_DIR) -> dict[int, str]:
    """nsid (as the namespace of `ipr` numbers it) -> name, for the named namespaces
    that have an nsid here (every namespace a veth of this one leads into does)."""
    out: dict[int, str] = {}
    try:
        names = sorted(os.listdir(netns_dir))
    except FileNotFoundError:
        return out
    for name in names:
        try:
            fd = os.open(os.path.join(netns_dir, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            reply = ipr.get_netnsid(fd=fd)
        except Exception:  # noqa: BLE001 - not a namespace, or a kernel without RTM_GETNSID
            continue
        finally:
            os.close(fd)
        nsid = reply.get("nsid") if reply else None
        if isinstance(nsid, int) and 0 <= nsid < 2**31:
            out[nsid] = name
    return out


def _pod_end(netns_dir: str, netns: str, index: int) -> tuple[str, str, tuple[str, ...]] | None:
    """(ifname, MAC, addresses) of interface `index` inside namespace `netns`; None when
    the namespace or the interface went away while we looked."""
    try:
        fd = os.open(os.path.join(netns_dir, netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with entered_fd(fd):
            ipr = _open()
    finally:
        os.close(fd)
    try:
        msgs = ipr.get_links(index)
        if not msgs:
            return None
        iface = _interface(ipr, msgs[0])
        return iface.name, iface.mac, iface.addresses
    except Exception:  # noqa: BLE001 - the pod went away while we looked
        return None
    finally:
        ipr.close()


def _pods(ipr: Any, links: Sequence[Any], bridge: Interface, cni: CniInfo | None,
          netns_dir: str, problems: list[str], root: str = "") -> tuple[Pod, ...]:
    leases = read_leases(cni.data_dir, cni.network, root) if cni else {}
    nsids: dict[int, str] | None = None
    pods = []
    claimed: set[str] = set()
    for msg in links:
        if msg.get("IFLA_MASTER") != bridge.index or _kind(msg) != "veth":
            continue
        if nsids is None:
            nsids = named_namespaces(ipr, netns_dir)
        name, index = msg.get("IFLA_IFNAME"), msg["index"]
        netns = nsids.get(msg.get("IFLA_LINK_NETNSID", -1))
        end = _pod_end(netns_dir, netns, msg.get("IFLA_LINK")) if netns else None
        if end is None:
            problems.append(f"veth {name} on {bridge.name}: its far end is in no named "
                            "namespace; addresses from the IPAM leases only")
        ifname, mac, addresses = end or (None, None, ())
        ips = tuple(a.split("/")[0] for a in addresses)
        lease = next((leases[ip] for ip in ips if ip in leases), None)
        if lease is None and end is None:
            # No namespace to look into: the leases whose veth name this is.
            from foundation.cni.names import host_veth_name

            held = sorted(ip for ip, (cid, ifn) in leases.items()
                          if host_veth_name(cid, ifn or "eth0") == name)
            ips = tuple(held)
            lease = leases[held[0]] if held else None
        claimed.update(ips)
        container_id = lease[0] if lease else None
        pods.append(Pod(host_veth=name, host_index=index, ifname=ifname or (
            lease[1] if lease else None), ips=ips, mac=mac, netns=netns,
            container_id=container_id, name=netns or container_id or name))
    for ip, (cid, ifname) in sorted(leases.items()):
        if ip not in claimed:
            problems.append(f"IPAM lease {ip} ({cid}/{ifname}) has no veth on {bridge.name}")
    return tuple(sorted(pods, key=lambda p: (p.name, p.host_veth)))


def _vxlan(ipr: Any, msg: Any, by_index: dict[int, str]) -> Vxlan:
    data = msg.get("IFLA_LINKINFO").get("IFLA_INFO_DATA")
    iface = _interface(ipr, msg)
    lower = data.get("IFLA_VXLAN_LINK") if data is not None else None
    return Vxlan(name=iface.name, index=iface.index,
                 vni=data.get("IFLA_VXLAN_ID") if data is not None else None,
                 port=data.get("IFLA_VXLAN_PORT") if data is not None else None,
                 local=data.get("IFLA_VXLAN_LOCAL") if data is not None else None,
                 underlay_device=by_index.get(lower) if lower else None,
                 mac=iface.mac, mtu=iface.mtu, addresses=iface.addresses)


def _peers(ipr: Any, vxlan: Vxlan, problems: list[str]) -> tuple[Peer, ...]:
    macs: dict[str, str] = {}
    for family in (AF_INET, AF_INET6):
        for m in ipr.neigh("dump", ifindex=vxlan.index, family=family):
            if m.get("NDA_PROTOCOL") == RTPROT_SKEIN and m.get("NDA_LLADDR"):
                macs[m.get("NDA_DST")] = m.get("NDA_LLADDR")
    remote: dict[str, str] = {}
    for m in ipr.fdb("dump", ifindex=vxlan.index):
        mac = m.get("NDA_LLADDR")
        if m.get("NDA_DST") and mac and mac != "00:00:00:00:00:00":
            remote[mac] = m.get("NDA_DST")
    peers = []
    for family in (AF_INET, AF_INET6):
        for m in ipr.route("dump", family=family):
            if m["proto"] != RTPROT_SKEIN or m.get("RTA_TABLE") != MAIN_TABLE:
                continue
            dst, via = f"{m.get('RTA_DST')}/{m['dst_len']}", m.get("RTA_GATEWAY")
            mac = macs.get(via)
            underlay = remote.get(mac) if mac else None
            if mac is None or underlay is None:
                problems.append(f"route {dst} via {via}: no "
                                f"{'neighbour entry' if mac is None else 'FDB entry'}"
                                f" on {vxlan.name}; the tunnel is incomplete")
            peers.append(Peer(pod_cidr=dst, vtep_ip=via, vtep_mac=mac, underlay_ip=underlay))
    return tuple(sorted(peers, key=lambda p: _net_key(p.pod_cidr)))


def _net_key(cidr: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(cidr, strict=False)
    return (net.version, int(net.network_address), net.prefixlen)


def _default_route_device(ipr: Any) -> int | None:
    for m in ipr.route("dump", family=AF_INET):
        if m["dst_len"] == 0 and m.get("RTA_TABLE") == MAIN_TABLE and m.get("RTA_OIF"):
            return int(m.get("RTA_OIF"))
    return None


def _host_addresses(ipr: Any, lo: Any) -> tuple[str, ...]:
    return tuple(a for a in _global_addresses(ipr, lo["index"])
                 if not ipaddress.ip_interface(a).ip.is_loopback)


# -- one node, one cluster -----------------------------------------------------------------

@dataclass(frozen=True)
class NodeTarget:
    """Where to read a node: its namespace (None: the caller's own), CNI conf dir, and
    the root its files are seen under ("": ours; "/proc/PID/root": a process's mount
    namespace), with the directory of its pods' named namespaces (default: the
    collector's netns dir under that root)."""

    name: str
    netns: str | None = None
    cni_conf_dir: str = DEFAULT_CNI_CONF_DIR
    root: str = ""
    pod_netns_dir: str | None = None


def collect_node(name: str, *, cni_conf_dir: str = DEFAULT_CNI_CONF_DIR,
                 service_cidrs: Sequence[str] = (), service_cidrs_source: str = "unknown",
                 speaker: SpeakerState | None = None, netns_dir: str = NETNS_DIR,
                 netns: str | None = None, root: str = "",
                 kube_proxy: bool = True) -> NodeStatus:
    """The status of the node whose network namespace the calling thread is in; its
    files under `root`, its pods' namespaces named in `netns_dir`."""
    problems: list[str] = []
    found = find_conflist(_under(root, cni_conf_dir))
    cni = None
    if found:  # named as the node names it
        cni = cni_info(os.path.join(cni_conf_dir, os.path.basename(found[0])), found[1])
    if cni is None:
        problems.append(f"no CNI network configuration in {cni_conf_dir}")
    ipr = _open()
    try:
        links = list(ipr.get_links())
        by_name = {m.get("IFLA_IFNAME"): m for m in links}
        by_index = {m["index"]: m.get("IFLA_IFNAME") for m in links}
        bridge_msg = by_name.get(cni.bridge if cni else "cni0")
        bridge = _interface(ipr, bridge_msg) if bridge_msg is not None else None
        pods = _pods(ipr, links, bridge, cni, netns_dir, problems, root) if bridge else ()
        vx_name = cni.vxlan_device if cni else None
        vx_msg = by_name.get(vx_name) if vx_name else next(
            (m for m in links if _kind(m) == "vxlan"), None)
        vxlan = _vxlan(ipr, vx_msg, by_index) if vx_msg is not None else None
        peers = _peers(ipr, vxlan, problems) if vxlan else ()
        lower = by_name.get(vxlan.underlay_device) if vxlan and vxlan.underlay_device else None
        if lower is None:
            index = _default_route_device(ipr)
            lower = next((m for m in links if m["index"] == index), None)
        underlay = _interface(ipr, lower) if lower is not None else None
        lo = by_name.get("lo")
        host_addresses = _host_addresses(ipr, lo) if lo is not None else ()
    finally:
        ipr.close()
    proxy, proxy_source = read_kube_proxy() if kube_proxy else ((), "")
    return NodeStatus(name=name, netns=netns, cni=cni, service_cidrs=tuple(service_cidrs),
                      service_cidrs_source=service_cidrs_source if service_cidrs else "unknown",
                      underlay=underlay, bridge=bridge, pods=pods, vxlan=vxlan, peers=peers,
                      host_addresses=host_addresses, speaker=speaker, proxy=proxy,
                      proxy_source=proxy_source, problems=tuple(problems))


def collect_in(target: NodeTarget, netns_dir: str = NETNS_DIR, **kw: Any) -> NodeStatus:
    """`collect_node` for `target`, entering its namespace on this thread first."""
    pods_dir = target.pod_netns_dir or _under(target.root, netns_dir)
    if target.netns is None:
        return collect_node(target.name, cni_conf_dir=target.cni_conf_dir,
                            netns_dir=pods_dir, root=target.root, **kw)
    path = target.netns if os.sep in target.netns else os.path.join(netns_dir, target.netns)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered_fd(fd):
            return collect_node(target.name, cni_conf_dir=target.cni_conf_dir,
                                netns_dir=pods_dir, netns=os.path.basename(path),
                                root=target.root, **kw)
    finally:
        os.close(fd)


SpeakerLookup = Callable[[NodeTarget], SpeakerState | None]


def collect_cluster(targets: Iterable[NodeTarget], *, service_cidrs: Sequence[str] = (),
                    service_cidrs_source: str = "unknown",
                    speaker: SpeakerLookup | None = None,
                    netns_dir: str = NETNS_DIR, kube_proxy: bool = True) -> ClusterStatus:
    """Every target read in parallel (one thread each, each in its namespace), the
    tunnels' far ends named after the collected nodes."""
    targets = list(targets)

    def one(target: NodeTarget) -> NodeStatus:
        return collect_in(target, netns_dir, service_cidrs=service_cidrs,
                          service_cidrs_source=service_cidrs_source,
                          speaker=speaker(target) if speaker else None,
                          kube_proxy=kube_proxy)

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        nodes = tuple(pool.map(one, targets))
    return with_peer_names(ClusterStatus(nodes))
