"""ClusterStatus as text a person reads: a table, or a Graphviz picture.

Pure (no I/O): the CLI writes what these return.  The picture is meant for someone
learning how a Kubernetes network is put together, so it draws the path a packet
takes and labels every hop with the real name and address from the kernel:

    pod ─veth─▶ cni0 (bridge, the pods' gateway) ─route─▶ skein.1 (VXLAN) ─UDP─▶ eth0
    skein.1 ⇠ tunnel ⇢ skein.1 of every peer (dashed), eth0s on the underlay segment,
    LoadBalancer addresses tied to the node answering ARP for them (L2) or to every
    node the router's BGP route points at (BGP), and the router with its sessions.

Layout: one Graphviz cluster per node, side by side; a packet's path runs top to
bottom inside it; what is shared (underlay, addresses, router) sits below.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from html import escape

import graphviz

from speaker.status.model import BGP, AddressView, ClusterStatus, NodeStatus, Peer, Router

# Fill / border pairs: pale fills keep black text readable, borders carry the hue.
POD = ("#d8f3dc", "#2d6a4f")
BRIDGE = ("#dbeafe", "#1d4ed8")
VXLAN = ("#ffedd5", "#c2410c")
UNDERLAY = ("#e5e7eb", "#374151")
LB_L2 = ("#ede9fe", "#6d28d9")
LB_BGP = ("#fee2e2", "#b91c1c")
ROUTER = ("#fef9c3", "#a16207")
NODE_BG = "#f8fafc"
SESSION_UP, SESSION_DOWN = "#15803d", "#b91c1c"
FONT = "Helvetica"


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


def _network_kind(cluster: ClusterStatus) -> str:
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
        f"network:       {_network_kind(cluster)}",
        f"pod network:   {', '.join(cluster.cluster_cidrs) or 'unknown'}"
        f"  (node subnets {', '.join(cluster.pod_cidrs) or 'none'})",
        f"service CIDR:  {services}",
    ]


def node_lines(node: NodeStatus) -> list[str]:
    out = [f"{node.name}" + (f"  (netns {node.netns})" if node.netns else "")]
    cni = node.cni
    if cni:
        out.append(f"  CNI:      network \"{cni.network}\" (plugins: {', '.join(cni.plugins)}), "
                   f"cniVersion {cni.cni_version}, {cni.path}")
        out.append(f"  pod CIDR: {', '.join(cni.pod_cidrs) or '-'}   IPAM leases in "
                   f"{cni.data_dir}/{cni.network}")
    else:
        out.append("  CNI:      none found")
    out.append(f"  services: {', '.join(node.service_cidrs) or 'unknown'}"
               + (f" ({node.service_cidrs_source})" if node.service_cidrs else ""))
    for label, iface in (("underlay", node.underlay), ("bridge", node.bridge)):
        if iface:
            out.append(f"  {label + ':':9} {iface.name} {', '.join(iface.addresses) or '-'} "
                       f"mtu {iface.mtu} mac {iface.mac}{'' if iface.up else ' DOWN'}")
    if node.pods:
        out.append("  pods:")
        out += _columns([("NAME", "IP", "IFACE", "HOST VETH", "NETNS", "CONTAINER")] + [
            (p.name, ",".join(p.ips) or "-", p.ifname or "-", p.host_veth, p.netns or "-",
             p.container_id or "-") for p in node.pods])
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
    if node.host_addresses:
        out.append(f"  on lo:    {', '.join(node.host_addresses)}")
    out += [f"  problem:  {p}" for p in node.problems]
    return out


def table(cluster: ClusterStatus) -> str:
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
    for node in cluster.nodes:
        lines.append("")
        lines += node_lines(node)
    return "\n".join(lines) + "\n"


# -- diagram ----------------------------------------------------------------------------------

def _html(title: str, *lines: str, bold_title: bool = True) -> str:
    """A Graphviz HTML-like label: a bold title and smaller lines below it."""
    head = f"<B>{escape(title)}</B>" if bold_title else escape(title)
    rest = "".join(f'<BR/><FONT POINT-SIZE="10">{escape(x)}</FONT>' for x in lines if x)
    return f"<{head}{rest}>"


def _box(g: graphviz.Digraph, name: str, label: str, colors: tuple[str, str],
         shape: str = "box", **attrs: str) -> None:
    fill, border = colors
    g.node(name, label, shape=shape, style="rounded,filled", fillcolor=fill, color=border,
           penwidth="1.5", **attrs)


def _pod_id(node: str, veth: str) -> str:
    return f"{node}/pod/{veth}"


def _dev_id(node: str, dev: str) -> str:
    return f"{node}/{dev}"


def _short(name: str, prefix: str) -> str:
    return name[len(prefix):] if prefix and name.startswith(prefix) and name != prefix else name


def _draw_node(g: graphviz.Digraph, node: NodeStatus, strip: str) -> None:
    with g.subgraph(name=f"cluster_{node.name}") as c:
        pod_cidr = ", ".join(node.pod_cidrs) or "no pod CIDR"
        c.attr(label=_html(f"node {node.name}", f"pod subnet {pod_cidr}"
                           + (f"  ·  netns {node.netns}" if node.netns else "")),
               style="rounded,filled", fillcolor=NODE_BG, color=UNDERLAY[1], penwidth="2",
               fontname=FONT, margin="14")
        bridge = node.bridge
        if bridge:
            gw = ", ".join(bridge.addresses) or "no address"
            # ordering=in: the pods left to right in the order of their veth edges
            # (invisible edges between the pods would do it too, but crash dot 2.43
            # together with the flat edges between clusters).
            _box(c, _dev_id(node.name, bridge.name),
                 _html(f"{bridge.name}  (Linux bridge)", f"{gw}: the pods' default gateway",
                       f"mtu {bridge.mtu}"), BRIDGE, ordering="in")
        # One row (they all lead into the bridge).  Declared last to first: dot
        # places them right to left, so the row reads in the pods' order.
        for pod in reversed(node.pods):
            _box(c, _pod_id(node.name, pod.host_veth),
                 _html(f"pod {_short(pod.name, strip)}",
                       f"{pod.ifname or '?'}  {', '.join(pod.ips) or 'no address'}",
                       f"netns {pod.netns}" if pod.netns else
                       f"container {pod.container_id or '?'}"), POD)
        for pod in reversed(node.pods):
            if bridge:
                c.edge(_pod_id(node.name, pod.host_veth), _dev_id(node.name, bridge.name),
                       label=f"veth pair\n{pod.ifname or '?'} ⇄ {pod.host_veth}", dir="both",
                       arrowhead="none", arrowtail="none", color=POD[1], penwidth="1.5")
        vx = node.vxlan
        if vx:
            _box(c, _dev_id(node.name, vx.name),
                 _html(f"{vx.name}  (VXLAN device)", f"VNI {vx.vni}  ·  UDP {vx.port}",
                       f"VTEP {', '.join(a.split('/')[0] for a in vx.addresses) or '-'}"
                       f"  ·  mac {vx.mac}",
                       "routes: " + (", ".join(
                           f"{p.pod_cidr} ({p.node or p.underlay_ip or '?'})"
                           for p in node.peers) or "none yet")), VXLAN)
            if bridge:
                c.edge(_dev_id(node.name, bridge.name), _dev_id(node.name, vx.name),
                       label="to other\nnodes' pods", color=VXLAN[1], fontsize="9")
        ul = node.underlay
        if ul:
            _box(c, _dev_id(node.name, ul.name),
                 _html(f"{ul.name}  (node's uplink)", ", ".join(ul.addresses) or "no address"),
                 UNDERLAY)
            if vx:
                c.edge(_dev_id(node.name, vx.name), _dev_id(node.name, ul.name),
                       label="packets wrapped\nin UDP", color=VXLAN[1], fontsize="9")
            elif bridge:
                c.edge(_dev_id(node.name, bridge.name), _dev_id(node.name, ul.name),
                       color=UNDERLAY[1])


def _align(g: graphviz.Digraph, cluster: ClusterStatus) -> None:
    """Bridges, VXLAN devices and uplinks on one level across nodes, nodes in order
    left to right (invisible edges inside a rank keep their order).  The VXLAN row
    gets no invisible edges: an invisible edge beside a tunnel between the same two
    devices makes dot 2.43 abort (merge_chain assertion, or "lost edge")."""
    layers: list[list[str]] = [[], [], []]
    for node in cluster.nodes:
        for layer, iface in zip(layers, (node.bridge, node.vxlan, node.underlay), strict=True):
            if iface is not None:
                layer.append(_dev_id(node.name, iface.name))
    for i, layer in enumerate(layers):
        with g.subgraph(name=f"layer{i}") as row:
            row.attr(rank="same")
            if i == 1:
                for name in layer:
                    row.node(name)
                continue
            for left, right in zip(layer, layer[1:], strict=False):
                row.edge(left, right, style="invis")


def _tunnels(g: graphviz.Digraph, cluster: ClusterStatus) -> None:
    """One dashed edge per pair of VTEPs; a tunnel only one side has is drawn
    one-way in red, because that is a broken overlay.  Tunnels between nodes that
    are not side by side arch over the others: their text goes in the tooltip (SVG)
    only, or it would sit on top of the labels inside the nodes."""
    by_name = {n.name: n for n in cluster.nodes}
    position = {n.name: i for i, n in enumerate(cluster.nodes)}
    drawn: set[frozenset[str]] = set()
    for node in cluster.nodes:
        if not node.vxlan:
            continue
        for peer in node.peers:
            other = by_name.get(peer.node or "")
            if other is None:
                _remote(g, node, peer)
                continue
            pair = frozenset((node.name, other.name))
            if pair in drawn or other.vxlan is None:
                continue
            drawn.add(pair)
            both = any(p.node == node.name for p in other.peers)
            text = (f"VXLAN tunnel {_ip(node)} ⇄ {peer.underlay_ip}"
                    if both else f"one-way tunnel!\n{other.name} has no route back")
            adjacent = abs(position[node.name] - position[other.name]) == 1
            color = VXLAN[1] if both else SESSION_DOWN
            g.edge(_dev_id(node.name, node.vxlan.name), _dev_id(other.name, other.vxlan.name),
                   label=text if adjacent or not both else "", tooltip=text, style="dashed",
                   color=color, fontcolor=color, penwidth="2.5",
                   dir="both" if both else "forward")


def _ip(node: NodeStatus) -> str:
    if node.vxlan and node.vxlan.local:
        return node.vxlan.local
    if node.underlay and node.underlay.addresses:
        return node.underlay.addresses[0].split("/")[0]
    return "?"


def _remote(g: graphviz.Digraph, node: NodeStatus, peer: Peer) -> None:
    """A peer that was not collected (status of one node): a dashed box for it."""
    assert node.vxlan is not None
    rid = f"remote/{peer.underlay_ip or peer.vtep_ip}"
    g.node(rid, _html(f"node at {peer.underlay_ip or '?'}", f"pod subnet {peer.pod_cidr}",
                      f"VTEP {peer.vtep_ip}  ·  mac {peer.vtep_mac or '?'}"),
           shape="box", style="rounded,dashed", color=UNDERLAY[1])
    g.edge(_dev_id(node.name, node.vxlan.name), rid, label=f"VXLAN tunnel VNI {node.vxlan.vni}",
           style="dashed", color=VXLAN[1], fontcolor=VXLAN[1], penwidth="2.5")


def _underlay_net(cluster: ClusterStatus) -> str:
    nets = {str(ipaddress.ip_interface(a).network) for n in cluster.nodes if n.underlay
            for a in n.underlay.addresses}
    return ", ".join(sorted(nets)) or "?"


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


def _addresses(g: graphviz.Digraph, cluster: ClusterStatus, addresses: Iterable[AddressView],
               router_ids: Sequence[str]) -> None:
    """L2: an edge from the one node answering ARP/NDP.  BGP: an edge from each
    router (which forwards to every announcing node: ECMP); the announcing itself
    is on the session edges (see _routers)."""
    by_name = {n.name: n for n in cluster.nodes}
    for a in addresses:
        aid = f"lb/{a.address}/{a.mode}"
        services = ", ".join(a.services) or "no Service"
        if a.mode == BGP:
            how = ("ECMP to " if len(a.nodes) > 1 else "to ") + ", ".join(a.nodes)
            title, kind = range_of(cluster, a)
            _box(g, aid, _html(title, f"{kind} · BGP", services if a.services else "",
                               f"router forwards {how}"), LB_BGP)
            for rid in router_ids:
                g.edge(rid, aid, label="route learnt\nover BGP", color=LB_BGP[1],
                       fontcolor=LB_BGP[1], fontsize="9", penwidth="2")
            if not router_ids:
                for name in a.nodes:
                    node = by_name.get(name)
                    if node and node.underlay:
                        g.edge(_dev_id(name, node.underlay.name), aid, label="announces",
                               color=LB_BGP[1], fontcolor=LB_BGP[1], fontsize="9")
        else:
            owner = ", ".join(a.nodes)
            _box(g, aid, _html(a.address, f"LoadBalancer · {a.mode.upper()} (ARP/NDP)",
                               services, f"answered by {owner}"), LB_L2)
            for name in a.nodes:
                node = by_name.get(name)
                if node and node.underlay:
                    g.edge(_dev_id(name, node.underlay.name), aid,
                           label=f"{name} answers\nARP/NDP for it", color=LB_L2[1],
                           fontcolor=LB_L2[1], fontsize="9", penwidth="2")


def _routers(g: graphviz.Digraph, cluster: ClusterStatus, routers: Sequence[Router]) -> list[str]:
    """A router box on the underlay; one edge per session, labelled with its state
    and the LoadBalancer prefixes the node announces over it."""
    ids = []
    by_name = {n.name: n for n in cluster.nodes}
    for r in routers:
        rid = f"router/{r.address}"
        ids.append(rid)
        _box(g, rid, _html("BGP router", f"{r.address}  ·  AS {r.asn}",
                           "outside the cluster"), ROUTER)
        g.edge("underlay", rid, arrowhead="none", color=UNDERLAY[1], penwidth="2")
        for name, state in r.sessions:
            node = by_name.get(name)
            if not (node and node.underlay):
                continue
            up = state == "Established"
            views = {(v.address, v.mode): v for v in cluster.addresses()}
            sent = [range_of(cluster, views[(a.address, a.mode)])[0]
                    for a in node.speaker.announcements if a.mode == BGP] if node.speaker else []
            label = f"BGP {state}" + (f"\nannounces {', '.join(sent)}" if sent else "")
            color = SESSION_UP if up else SESSION_DOWN
            g.edge(_dev_id(name, node.underlay.name), rid, label=label, color=color,
                   fontcolor=color, fontsize="9", style="bold" if up else "dotted",
                   constraint="false")
    return ids


def _legend(g: graphviz.Digraph, cluster: ClusterStatus) -> None:
    rows = [
        (POD[0], "pod: its own network namespace, one end of a veth pair"),
        (BRIDGE[0], "cni0: the node's bridge; every pod's veth is plugged into it"),
        (VXLAN[0], "VXLAN device: wraps packets for other nodes' pods in UDP"),
        (UNDERLAY[0], "the node's own interface on the real network"),
        (LB_L2[0], "LoadBalancer address, L2: one node answers ARP/NDP for it"),
        (LB_BGP[0], "LoadBalancer address, BGP: the router sends it to every node announcing it"),
        (ROUTER[0], "external router, fed by the nodes' BGP sessions"),
    ]
    services = ", ".join(cluster.service_cidrs) or "unknown (pass --service-cidr)"
    cells = "".join(f'<TR><TD BGCOLOR="{c}" WIDTH="18"> </TD><TD ALIGN="LEFT">{escape(t)}</TD>'
                    "</TR>" for c, t in rows)
    notes = [
        f"pod network {', '.join(cluster.cluster_cidrs) or '?'}: each node one subnet of it",
        f"ClusterIP services: {services} (virtual, programmed by kube-proxy)",
        "NodePort: a port on every node's uplink address;  dashed orange: a VXLAN tunnel",
    ]
    cells += "".join(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><I>{escape(n)}</I></TD></TR>'
                     for n in notes)
    g.node("legend", f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2"><TR><TD COLSPAN="2">'
           f'<B>Legend</B></TD></TR>{cells}</TABLE>>', shape="box", style="rounded",
           color="#9ca3af", fontsize="10")


def _common_prefix(cluster: ClusterStatus) -> str:
    """What every node and pod namespace name starts with (a lab's tag: noise in a
    label), or ''."""
    names = [p.name for n in cluster.nodes for p in n.pods]
    names += [n.netns for n in cluster.nodes if n.netns]
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(names)
    return prefix if len(prefix) >= 3 and all(len(n) > len(prefix) for n in names) else ""


def diagram(cluster: ClusterStatus, title: str = "") -> graphviz.Digraph:
    g = graphviz.Digraph("skein", engine="dot")
    g.attr(rankdir="TB", newrank="true", compound="true", nodesep="0.45", ranksep="0.6",
           fontname=FONT, labelloc="t", fontsize="18", bgcolor="white", pad="0.3",
           label=title or f"Skein network: {_network_kind(cluster)}")
    g.attr("node", fontname=FONT, fontsize="12")
    g.attr("edge", fontname=FONT, fontsize="10")
    strip = _common_prefix(cluster)
    underlay = any(n.underlay for n in cluster.nodes)
    if underlay:
        # Declared before the nodes: otherwise dot's
        # crossing minimisation happily puts node2 left of node1.
        _box(g, "underlay", _html("underlay network", _underlay_net(cluster),
                                  "the machines' own L2 segment"), UNDERLAY)
    for node in cluster.nodes:
        _draw_node(g, node, strip)
    _align(g, cluster)
    _tunnels(g, cluster)
    for node in cluster.nodes:
        if node.underlay:
            g.edge(_dev_id(node.name, node.underlay.name), "underlay", dir="none",
                   color=UNDERLAY[1], penwidth="2")
    router_ids = _routers(g, cluster, cluster.routers())
    _addresses(g, cluster, cluster.addresses(), router_ids)
    _legend(g, cluster)
    return g
