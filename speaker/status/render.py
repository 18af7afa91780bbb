"""ClusterStatus as text a person reads: `skeinctl status` (-o table, -o wide).

Pure (no I/O): the CLI prints what these return.  The picture is
speaker/status/diagram.py.  `wide` adds what a newcomer does not need first (MAC
addresses, container IDs, host veth names, IPAM paths, every kube-proxy rule).
"""

from __future__ import annotations

from collections.abc import Sequence

from speaker.status.model import AddressView, ClusterStatus, NodeStatus, ServicePortView
from speaker.status.services import programmed

# -- table ------------------------------------------------------------------------------------

def _columns(rows: Sequence[Sequence[str]], indent: str = "    ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"
    return f"{s // 60}m{s % 60:02d}s"


def network_kind(cluster: ClusterStatus) -> str:
    cnis = {(n.cni.network, n.cni.plugins) for n in cluster.nodes if n.cni}
    if not cnis:
        return "no CNI configuration found"
    overlay = any(n.vxlan for n in cluster.nodes)
    text = "; ".join(f'CNI network "{net}" (plugins: {", ".join(p)})' for net, p in sorted(cnis))
    return text + (", VXLAN overlay" if overlay else ", no overlay device")


def summary_lines(cluster: ClusterStatus) -> list[str]:
    services = ", ".join(cluster.service_cidrs) or "unknown"
    sources = sorted({n.service_cidrs_source for n in cluster.nodes if n.service_cidrs})
    if sources:
        services += f" (from {', '.join(sources)})"
    return [
        f"network:       {network_kind(cluster)}",
        f"pod network:   {', '.join(cluster.cluster_cidrs) or 'unknown'}"
        f"  (node subnets {', '.join(cluster.pod_cidrs) or 'none'})",
        f"service CIDR:  {services}",
    ]


def node_lines(node: NodeStatus, wide: bool = False) -> list[str]:
    out = [f"{node.name}" + (f"  (netns {node.netns})" if node.netns else "")]
    cni = node.cni
    if cni:
        out.append(f"  CNI:      network \"{cni.network}\" (plugins: {', '.join(cni.plugins)}), "
                   f"cniVersion {cni.cni_version}, {cni.path}")
        out.append(f"  pod CIDR: {', '.join(cni.pod_cidrs) or '-'}"
                   + (f"   IPAM leases in {cni.data_dir}/{cni.network}" if wide else ""))
    else:
        out.append("  CNI:      none found")
    out.append(f"  services: {', '.join(node.service_cidrs) or 'unknown'}"
               + (f" ({node.service_cidrs_source})" if node.service_cidrs else ""))
    for label, iface in (("underlay", node.underlay), ("bridge", node.bridge)):
        if iface:
            out.append(f"  {label + ':':9} {iface.name} {', '.join(iface.addresses) or '-'} "
                       f"mtu {iface.mtu}" + (f" mac {iface.mac}" if wide else "")
                       + ("" if iface.up else " DOWN"))
    if node.pods:
        out.append("  pods:")
        head = ("NAME", "IP", "IFACE", "HOST VETH", "NETNS") + (("MAC", "CONTAINER") if wide
                                                               else ())
        out += _columns([head] + [
            (p.name, ",".join(p.ips) or "-", p.ifname or "-", p.host_veth, p.netns or "-")
            + ((p.mac or "-", p.container_id or "-") if wide else ()) for p in node.pods])
    vx = node.vxlan
    if vx:
        out.append(f"  vxlan:    {vx.name} VNI {vx.vni} UDP {vx.port} local {vx.local or '-'} "
                   f"via {vx.underlay_device or '-'}, VTEP {', '.join(vx.addresses) or '-'} "
                   f"mac {vx.mac} mtu {vx.mtu}")
    if node.peers:
        out.append("  vxlan peers:")
        out += _columns([("POD CIDR", "VIA VTEP", "VTEP MAC", "UNDERLAY", "NODE")] + [
            (p.pod_cidr, p.vtep_ip, p.vtep_mac or "-", p.underlay_ip or "-", p.node or "?")
            for p in node.peers])
    sp = node.speaker
    if sp is None:
        out.append("  speaker:  not asked")
    elif not sp.reachable:
        out.append(f"  speaker:  unreachable ({sp.source})")
    else:
        out.append(f"  speaker:  {sp.source}")
        if sp.announcements:
            out += _columns([("LB ADDRESS", "MODE", "SERVICES", "INTERFACES")] + [
                (a.address, a.mode, ",".join(a.services) or "-", ",".join(a.interfaces) or "auto")
                for a in sp.announcements])
        if sp.sessions:
            out += _columns([("BGP PEER", "PEER AS", "LOCAL AS", "STATE", "UPTIME", "PREFIXES")]
                            + [(s.name, str(s.peer_asn), str(s.local_asn), s.state,
                                _uptime(s.uptime), str(s.prefixes_advertised))
                               for s in sp.sessions])
    out += _proxy_lines(node, wide)
    if node.host_addresses:
        out.append(f"  on lo:    {', '.join(node.host_addresses)}")
    out += [f"  problem:  {p}" for p in node.problems]
    return out


def _proxy_lines(node: NodeStatus, wide: bool) -> list[str]:
    if not node.proxy_source:
        return ["  kube-proxy: no rules read (no iptables-save, or no KUBE-SERVICES chain)"]
    services = sorted({r.service.split(":", 1)[0] for r in node.proxy})
    out = [f"  kube-proxy: {node.proxy_source}, {len(node.proxy)} Service addresses of "
           f"{len(services)} Services"]
    if wide and node.proxy:
        out += _columns([("SERVICE", "KIND", "ADDRESS", "PORT", "ENDPOINTS")] + [
            (r.service, r.kind, r.address or "(every node address)",
             f"{r.port}/{r.protocol}", ",".join(r.endpoints) or "-") for r in node.proxy])
    return out


def _port(p: ServicePortView) -> str:
    return f"{p.port}" + (f":{p.node_port}" if p.node_port else "") + f"/{p.protocol}"


def service_lines(cluster: ClusterStatus, wide: bool = False) -> list[str]:
    """The Services of the API (kubectl's columns) and which nodes' kube-proxy
    programmed them."""
    if not cluster.services:
        return []
    readable = [n for n in cluster.nodes if n.proxy_source]
    rows = [("SERVICE", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "ENDPOINTS",
             "KUBE-PROXY")]
    for svc in cluster.services:
        ready = [e for e in svc.endpoints if e.ready]
        endpoints = (",".join(e.address for e in ready) if wide
                     else f"{len(ready)}/{len(svc.endpoints)}")
        if readable:
            missing = [n.name for n in readable if not programmed(n.proxy, svc.key)]
            proxied = f"missing on {','.join(missing)}" if missing else "every node"
        else:
            proxied = "not read"
        rows.append((svc.key, svc.type, ",".join(svc.cluster_ips) or "None",
                     ",".join((*svc.ingress, *svc.external_ips)) or
                     ("<pending>" if svc.type == "LoadBalancer" else "<none>"),
                     ",".join(_port(p) for p in svc.ports) or "<none>", endpoints or "-",
                     proxied))
    return ["Services (from the API; kube-proxy: whose rules have them):", *_columns(rows)]


def table(cluster: ClusterStatus, wide: bool = False) -> str:
    lines = summary_lines(cluster)
    addresses = cluster.addresses()
    if addresses:
        lines.append("announced addresses (LoadBalancer, and ranges over BGP):")
        lines += _columns([("ADDRESS", "MODE", "ANSWERED BY", "SERVICES")] + [
            (range_of(cluster, a)[0], a.mode, ",".join(a.nodes),
             ",".join(a.services) or f"- ({range_of(cluster, a)[1]})") for a in addresses])
    routers = cluster.routers()
    if routers:
        lines.append("BGP sessions:")
        lines += _columns([("ROUTER", "AS", "NODE", "STATE")] + [
            (r.address, str(r.asn), node, state) for r in routers for node, state in r.sessions])
    lines += service_lines(cluster, wide)
    for node in cluster.nodes:
        lines.append("")
        lines += node_lines(node, wide)
    return "\n".join(lines) + "\n"


def range_of(cluster: ClusterStatus, a: AddressView) -> tuple[str, str]:
    """(what to call the address, what it is).  A BGP entry without a Service is a
    range route (Calico's serviceClusterIPs, a pod CIDR); the API names it by its
    first address only, so it is matched against the CIDRs the status knows."""
    if a.services:
        return a.address, "LoadBalancer"
    for cidrs, kind in ((cluster.service_cidrs, "ClusterIP range"),
                        (cluster.pod_cidrs, "pod subnet"),
                        (cluster.cluster_cidrs, "pod network")):
        for cidr in cidrs:
            if cidr.split("/")[0] == a.address:
                return cidr, kind
    return a.address, "route without a Service"
