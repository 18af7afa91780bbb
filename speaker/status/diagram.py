"""ClusterStatus as a picture: what a packet meets, layer by layer, with real names.

The picture is for someone learning how a Kubernetes network is put together.  Four
layers, each labelled with the names and addresses the kernel and the API hold:

- the pod network: per node (one box each, side by side) the pods, their veth pairs
  into cni0, the VXLAN device skein.1 and the uplink; one VXLAN tunnel per pair of
  nodes, labelled with both underlay endpoints;
- Services: one box per Service of the API (ClusterIP, NodePort, LoadBalancer,
  endpoints) and, per node, the DNAT rules kube-proxy programmed there;
- LoadBalancer addresses: the node answering ARP/NDP for an L2 address, the BGP
  router with its sessions and its (ECMP) routes to a BGP address;
- the outside client, where it sits and how it gets in.

Every colour and line style comes from one table (`FILLS`, `LINES`) and the legend
lists exactly those the picture uses.

How it is laid out (this module builds the parts, pure; speaker/status/layout.py
puts them together): Graphviz's dot keeps neither the order of clusters nor edges
between boxes of one row in different clusters (2.43 reorders the nodes, or aborts).
So each node is a part of its own (its column: one cluster, laid out by dot alone),
and what the nodes share (the underlay, the router, the addresses, the client, the
Services, the legend) is the bottom part, laid out by dot with a stand-in for each
node's uplink in one ordered row, the gaps between them as wide as the columns
need.  Pass 2 puts each column on its stand-in, draws the tunnels and the legend's
line samples, and `neato -n2` renders it all with every position as given.
"""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape

from speaker.status.fonts import text_width
from speaker.status.model import (
    BGP,
    ClusterStatus,
    NodeStatus,
    Peer,
    ProxyRule,
    ServiceView,
)
from speaker.status.render import network_kind, range_of
from speaker.status.services import programmed

FONT = "Helvetica"
NODE_BG = "#f8fafc"

# Fill / border pairs: pale fills keep black text readable, borders carry the hue.
# key -> (fill, border, what the legend says)
FILLS: dict[str, tuple[str, str, str]] = {
    "node": (NODE_BG, "#374151", "a node (a machine; in a lab, a network namespace)"),
    "pod": ("#d8f3dc", "#2d6a4f", "pod: its own network namespace"),
    "bridge": ("#dbeafe", "#1d4ed8", "cni0: the node's bridge, every pod's gateway"),
    "vxlan": ("#ffedd5", "#c2410c", "skein.1: the VXLAN device, routes to other nodes' pods"),
    "underlay": ("#e5e7eb", "#374151", "the machines' own network: uplinks, the segment"),
    "service": ("#cffafe", "#0e7490", "Service (API) and kube-proxy's DNAT rules for it"),
    "lb_l2": ("#ede9fe", "#6d28d9", "LoadBalancer address, L2: one node answers ARP/NDP"),
    "lb_bgp": ("#fce7f3", "#be185d", "LoadBalancer address, BGP: routed to every announcer"),
    "router": ("#fef9c3", "#a16207", "external BGP router, fed by the nodes' sessions"),
    "client": ("#f1f5f9", "#1e3a8a", "a client outside the cluster"),
    "remote": ("#ffffff", "#374151", "a node not read here (the far end of a tunnel)"),
}


@dataclass(frozen=True)
class Line:
    color: str
    style: str  # solid, dashed, dotted
    width: float
    text: str
    arrow: bool = False

    def attrs(self) -> dict[str, str]:
        return {"color": self.color, "style": self.style, "penwidth": f"{self.width:g}",
                "fontcolor": self.color}


BROKEN = "#dc2626"
LINES: dict[str, Line] = {
    "veth": Line("#2d6a4f", "solid", 1.5, "veth pair: a pod's eth0 and its host end on cni0"),
    "overlay": Line("#c2410c", "solid", 1.2,
                    "to another node's pod: routed into skein.1, sent on in UDP"),
    "tunnel": Line("#c2410c", "dashed", 2.5,
                   "VXLAN tunnel, one per node pair: UDP between the two uplinks"),
    "tunnel_broken": Line(BROKEN, "dashed", 2.5,
                          "one-way tunnel: the far node has no route back (broken)", True),
    "link": Line("#374151", "solid", 2, "a link on the machines' own network"),
    "bgp_up": Line("#15803d", "solid", 2.5, "BGP session, Established"),
    "bgp_down": Line(BROKEN, "dotted", 2, "BGP session, not Established"),
    "l2_owner": Line("#6d28d9", "solid", 2, "answers ARP/NDP for an L2 address (its owner)"),
    "bgp_route": Line("#be185d", "solid", 2, "the router's route to a BGP address"),
    "dnat": Line("#0e7490", "solid", 1.5, "kube-proxy: DNAT to the Service's endpoints"),
}

MARGIN = 8.64  # points between a box's border and its text, left and right
# Room for pass 2: a non-adjacent tunnel's label line, and the gap to the next.
TUNNEL_FONT = 9.0
TUNNEL_PITCH = 22.0



@dataclass
class Part:
    """A graph dot lays out on its own: nodes and edges with their Graphviz
    attributes, the rows that must stay level (`rank=same`), and at most one cluster
    (a node's frame) holding the nodes named in `members`."""

    name: str
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    cluster: dict[str, str] | None = None
    members: list[str] = field(default_factory=list)

    def node(self, name: str, **attrs: str) -> None:
        self.nodes[name] = attrs

    def edge(self, tail: str, head: str, **attrs: str) -> None:
        self.edges.append((tail, head, attrs))

    def source(self, graph_attrs: dict[str, str]) -> str:
        """The DOT text of this part, for dot."""
        lines = ["digraph part {", f"\tgraph [{attr_list(graph_attrs)}];",
                 f"\tnode [{attr_list(NODE_DEFAULTS)}];",
                 f"\tedge [{attr_list(EDGE_DEFAULTS)}];"]
        inside = set(self.members)
        if self.cluster is not None:
            lines.append(f"\tsubgraph {quote('cluster_' + self.name)} {{")
            lines.append(f"\t\tgraph [{attr_list(self.cluster)}];")
            lines += [f"\t\t{quote(n)} [{attr_list(self.nodes[n])}];" for n in self.members]
            lines.append("\t}")
        lines += [f"\t{quote(n)} [{attr_list(a)}];" for n, a in self.nodes.items()
                  if n not in inside]
        for row in self.rows:
            lines.append("\t{ rank=same; " + " ".join(quote(n) for n in row) + " }")
        lines += [f"\t{quote(t)} -> {quote(h)} [{attr_list(a)}];" for t, h, a in self.edges]
        lines.append("}")
        return "\n".join(lines) + "\n"


def quote(value: str) -> str:
    """A DOT ID: HTML-like labels (<...>) as they are, anything else quoted."""
    if value.startswith("<") and value.endswith(">"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def attr_list(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}={quote(str(v))}" for k, v in attrs.items())


GRAPH_DEFAULTS = {"rankdir": "TB", "newrank": "true", "nodesep": "0.35", "ranksep": "0.5",
                  "fontname": FONT}
NODE_DEFAULTS = {"fontname": FONT, "fontsize": "12"}
EDGE_DEFAULTS = {"fontname": FONT, "fontsize": "9"}


@dataclass(frozen=True)
class Tunnel:
    """A tunnel for pass 2: between the VXLAN devices `a` and `b` (node ids) of the
    columns `ia` < `ib`.  `broken`: one-way, drawn from `a` to `b` when `forward`,
    else from `b` to `a`."""

    a: str
    b: str
    ia: int
    ib: int
    label: str
    broken: bool = False
    forward: bool = True

    @property
    def key(self) -> str:
        return "tunnel_broken" if self.broken else "tunnel"

    @property
    def room_label(self) -> str:
        """The label between adjacent nodes, on narrower lines."""
        if self.broken:
            return self.label.replace("! ", "!\n")
        return self.label.replace(" ⇄ ", "\n⇄ ")


@dataclass
class Drawing:
    """The parts of the picture and what pass 2 adds to them."""

    title: str
    columns: list[Part] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)  # per column: its box in the bottom row
    bottom: Part = field(default_factory=lambda: Part("bottom"))
    tunnels: list[Tunnel] = field(default_factory=list)
    band: str | None = None  # the bottom part's invisible box keeping the band's room
    legend_lines: list[str] = field(default_factory=list)  # LINES keys, in legend order
    legend: str = "legend"

    def sources(self) -> str:
        """Every part's DOT text (what dot is given), for reading and tests."""
        return "".join(p.source(GRAPH_DEFAULTS) for p in (*self.columns, self.bottom))


class _Used:
    """What the picture uses, for the legend."""

    def __init__(self) -> None:
        self.fills: list[str] = []
        self.lines: list[str] = []

    def fill(self, key: str) -> tuple[str, str]:
        if key not in self.fills:
            self.fills.append(key)
        return FILLS[key][0], FILLS[key][1]

    def line(self, key: str) -> dict[str, str]:
        if key not in self.lines:
            self.lines.append(key)
        return LINES[key].attrs()


# -- small helpers ----------------------------------------------------------------------------

class Html(str):
    """A Graphviz HTML-like label, and how wide its text really is (fonts.py)."""

    width: float = 0.0


def _html(title: str, *lines: str, size: int = 10, title_size: int = 12) -> Html:
    """A Graphviz HTML-like label: a bold title and smaller lines below it."""
    rest = "".join(f'<BR/><FONT POINT-SIZE="{size}">{escape(x)}</FONT>' for x in lines if x)
    label = Html(f"<<B>{escape(title)}</B>{rest}>")
    label.width = max([text_width(title, title_size, bold=True),
                       *(text_width(x, size) for x in lines if x)])
    return label


def _wrap(items: Sequence[str], width: int = 46, head: str = "") -> list[str]:
    """`head` and the comma-separated items in lines of about `width` characters."""
    text = head + ", ".join(items)
    return textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False) or [head]


def _pod_id(node: str, veth: str) -> str:
    return f"{node}/pod/{veth}"


def _dev_id(node: str, dev: str) -> str:
    return f"{node}/{dev}"


def _ip(node: NodeStatus) -> str:
    if node.vxlan and node.vxlan.local:
        return node.vxlan.local
    if node.underlay and node.underlay.addresses:
        return node.underlay.addresses[0].split("/")[0]
    return "?"


def _underlay_net(cluster: ClusterStatus) -> str:
    nets = {str(ipaddress.ip_interface(a).network) for n in cluster.nodes if n.underlay
            for a in n.underlay.addresses}
    return ", ".join(sorted(nets)) or "?"


class _Picture:
    def __init__(self, cluster: ClusterStatus, title: str) -> None:
        self.cluster = cluster
        self.used = _Used()
        self.by_name = {n.name: n for n in cluster.nodes}
        self.drawing = Drawing(title or f"Skein network: {network_kind(cluster)}")
        self.bottom = self.drawing.bottom
        self.anchor: dict[str, str] = {}  # node name -> its box in the bottom row

    # -- drawing primitives -----------------------------------------------------------
    def box(self, part: Part, name: str, label: str, key: str, **attrs: str) -> None:
        fill, border = self.used.fill(key)
        style = "rounded,dashed" if key == "remote" else "rounded,filled"
        if isinstance(label, Html) and "width" not in attrs:
            # Graphviz would make it as wide as it measures the text: too narrow.
            attrs["width"] = f"{(label.width + 2 * MARGIN + 4) / 72:.3f}"
        part.node(name, label=label, shape="box", style=style, fillcolor=fill, color=border,
                  penwidth="1.5", margin=f"{MARGIN / 72:.2f},0.06", **attrs)

    def edge(self, part: Part, a: str, b: str, key: str, label: str = "",
             **attrs: str) -> None:
        line = LINES[key]
        arrows = {} if line.arrow else {"dir": "none"}
        part.edge(a, b, label=label, **self.used.line(key), **arrows, **attrs)

    # -- the pod network: one column per node -----------------------------------------
    def column(self, node: NodeStatus) -> Part:
        part = Part(node.name)
        fill, border = self.used.fill("node")
        pod_cidr = ", ".join(node.pod_cidrs) or "no pod CIDR"
        part.cluster = {
            "label": _html(f"node {node.name}", f"pod subnet {pod_cidr}"
                           + (f"  ·  netns {node.netns}" if node.netns else ""), size=11),
            "style": "rounded,filled", "fillcolor": fill, "color": border, "penwidth": "2",
            "fontname": FONT, "fontsize": "16", "margin": "12"}
        bridge, vx, ul = node.bridge, node.vxlan, node.underlay
        if bridge:
            gw = ", ".join(bridge.addresses) or "no address"
            # ordering=in: the pods left to right in the order of their veth edges.
            self.box(part, _dev_id(node.name, bridge.name),
                     _html(f"{bridge.name}  (Linux bridge)", f"{gw}: the pods' gateway",
                           f"mtu {bridge.mtu}"), "bridge", ordering="in")
        for pod in node.pods:
            self.box(part, _pod_id(node.name, pod.host_veth),
                     _html(f"pod {pod.name}",
                           f"{pod.ifname or '?'}  {', '.join(pod.ips) or 'no address'}",
                           f"netns {pod.netns}" if pod.netns and pod.netns != pod.name else
                           "" if pod.netns else
                           f"container {(pod.container_id or '?')[:12]}"), "pod")
            if bridge:
                self.edge(part, _pod_id(node.name, pod.host_veth),
                          _dev_id(node.name, bridge.name), "veth",
                          label=f"{pod.ifname or '?'} ⇄ {pod.host_veth}")
        if len(node.pods) > 1:
            part.rows.append([_pod_id(node.name, p.host_veth) for p in node.pods])
            for left, right in zip(node.pods, node.pods[1:], strict=False):
                part.edge(_pod_id(node.name, left.host_veth),
                          _pod_id(node.name, right.host_veth), style="invis")
        if vx:
            routes = [f"{p.pod_cidr} → {p.node or p.underlay_ip or '?'}" for p in node.peers]
            self.box(part, _dev_id(node.name, vx.name),
                     _html(f"{vx.name}  (VXLAN device)",
                           f"VNI {vx.vni}  ·  UDP {vx.port}  ·  mtu {vx.mtu}",
                           f"VTEP {', '.join(a.split('/')[0] for a in vx.addresses) or '-'}"
                           f"  ·  {vx.mac}",
                           *(_wrap(routes, 40, "routes: ") if routes else ["routes: none yet"])),
                     "vxlan")
            if bridge:
                self.edge(part, _dev_id(node.name, bridge.name), _dev_id(node.name, vx.name),
                          "overlay", label="other nodes'\npods")
        if ul:
            self.box(part, _dev_id(node.name, ul.name),
                     _html(f"{ul.name}  (uplink)", ", ".join(ul.addresses) or "no address"),
                     "underlay")
            if vx:
                self.edge(part, _dev_id(node.name, vx.name), _dev_id(node.name, ul.name),
                          "overlay", label="in UDP")
            elif bridge:
                self.edge(part, _dev_id(node.name, bridge.name), _dev_id(node.name, ul.name),
                          "overlay")
        if node.proxy_source:
            pid = _dev_id(node.name, "kube-proxy")
            self.box(part, pid, _html(f"kube-proxy ({node.proxy_source})",
                                      *_proxy_lines(node.proxy)), "service")
            if bridge:
                # Beside the bridge: Service traffic, DNATed, goes to a pod through it.
                part.rows.append([_dev_id(node.name, bridge.name), pid])
                self.edge(part, pid, _dev_id(node.name, bridge.name), "dnat", label="DNAT")
        part.members = list(part.nodes)
        anchor = ul or vx or bridge
        if anchor is None:
            part.node(_dev_id(node.name, "empty"), label="", shape="point", style="invis")
            part.members.append(_dev_id(node.name, "empty"))
            self.anchor[node.name] = _dev_id(node.name, "empty")
        else:
            self.anchor[node.name] = _dev_id(node.name, anchor.name)
        return part

    def tunnels(self) -> None:
        """One tunnel per pair of nodes that both have a VXLAN device, at least one of
        which routes to the other; one-way is broken.  Pass 2 draws them."""
        order = [n for n in self.cluster.nodes if n.vxlan]
        position = {n.name: i for i, n in enumerate(self.cluster.nodes)}
        for node in order:
            assert node.vxlan is not None
            i = position[node.name]
            for peer in node.peers:
                other = self.by_name.get(peer.node or "")
                if other is None:
                    self.remote(node, peer)
                    continue
                if other.vxlan is None:
                    continue
                j = position[other.name]
                back = any(p.node == node.name for p in other.peers)
                if back and j < i:
                    continue  # drawn from the other end
                a, b = (node, other) if i < j else (other, node)
                assert a.vxlan is not None and b.vxlan is not None
                broken = not back
                label = (f"VXLAN {_ip(a)} ⇄ {_ip(b)}" if not broken else
                         f"one-way tunnel! {other.name} has no route back")
                self.used.line("tunnel_broken" if broken else "tunnel")
                self.drawing.tunnels.append(Tunnel(
                    _dev_id(a.name, a.vxlan.name), _dev_id(b.name, b.vxlan.name),
                    min(i, j), max(i, j), label, broken, forward=node is a))

    def remote(self, node: NodeStatus, peer: Peer) -> None:
        """A peer that was not collected (the status of one node): a dashed box in the
        node's own part, beside its frame."""
        assert node.vxlan is not None
        part = next(p for p in self.drawing.columns if p.name == node.name)
        rid = f"remote/{peer.underlay_ip or peer.vtep_ip}"
        self.box(part, rid, _html(f"node at {peer.underlay_ip or '?'}",
                                  f"pod subnet {peer.pod_cidr}",
                                  f"VTEP {peer.vtep_ip}  ·  {peer.vtep_mac or '?'}"), "remote")
        self.edge(part, _dev_id(node.name, node.vxlan.name), rid, "tunnel",
                  label=f"VXLAN {_ip(node)} ⇄ {peer.underlay_ip or '?'}")

    # -- the bottom part ----------------------------------------------------------------
    def stand_ins(self) -> None:
        """The columns' anchors in one ordered row (sizes and gaps: pass 2)."""
        anchors = [self.anchor[n.name] for n in self.cluster.nodes]
        self.drawing.anchors = anchors
        row = []
        for i, name in enumerate(anchors):
            self.bottom.node(name, shape="box", style="invis", fixedsize="true", label="")
            row.append(name)
            if i + 1 < len(anchors):
                gap = f"gap/{i}"
                self.bottom.node(gap, shape="box", style="invis", fixedsize="true", label="",
                                 height="0.1")
                row.append(gap)
        if len(row) > 1:
            self.bottom.rows.append(row)
            for left, right in zip(row, row[1:], strict=False):
                self.bottom.edge(left, right, style="invis")

    def band(self) -> None:
        """Room under the nodes for the tunnels between non-adjacent nodes."""
        far = [t for t in self.drawing.tunnels if t.ib - t.ia > 1]
        if not far:
            return
        name = "tunnel/band"
        height = (len(far) * TUNNEL_PITCH + 10) / 72
        self.bottom.node(name, label="", shape="box", style="invis", width="0.1",
                         height=f"{height:.2f}")
        self.drawing.band = name
        for anchor in self.drawing.anchors:
            self.bottom.edge(anchor, name, style="invis")

    @property
    def minlen(self) -> str:
        return "2" if self.drawing.band else "1"

    def uplink(self, node: NodeStatus) -> str | None:
        """The node's uplink box, when it has one (edges to the shared part start there)."""
        return _dev_id(node.name, node.underlay.name) if node.underlay else None

    def underlay(self) -> bool:
        if not any(n.underlay for n in self.cluster.nodes):
            return False
        self.box(self.bottom, "underlay", _html("underlay network", _underlay_net(self.cluster),
                                                "the machines' own L2 segment"), "underlay")
        for node in self.cluster.nodes:
            uplink = self.uplink(node)
            if uplink:
                # Heavy: the underlay right under the nodes, its links short.
                self.edge(self.bottom, uplink, "underlay", "link", minlen=self.minlen,
                          weight="4")
        return True

    def routers(self, has_underlay: bool) -> list[str]:
        """A router box on the underlay; one edge per session, labelled with its state;
        its routes (its own table when the caller read it, else what the nodes
        announce to it)."""
        ids = []
        tables = {r.address: r for r in self.cluster.router_routes}
        owner = {a.split("/")[0]: n.name for n in self.cluster.nodes if n.underlay
                 for a in n.underlay.addresses}
        for r in self.cluster.routers():
            rid = f"router/{r.address}"
            ids.append(rid)
            table = tables.get(r.address)
            lines = [f"{r.address}  ·  AS {r.asn}  ·  outside the cluster"]
            if table is not None:
                for prefix, hops in table.routes:
                    lines += _wrap([owner.get(h, h) for h in hops], 44, f"{prefix} via ")
            else:
                for v in self.cluster.addresses():
                    if v.mode == BGP:
                        lines += _wrap(list(v.nodes), 44, f"{range_of(self.cluster, v)[0]} via ")
            self.box(self.bottom, rid, _html(table.name if table else "BGP router", *lines),
                     "router")
            if has_underlay:
                # Level with the underlay it is plugged into.
                self.bottom.rows.append([rid, "underlay"])
                self.edge(self.bottom, rid, "underlay", "link")
            for name, state in r.sessions:
                node = self.by_name.get(name)
                uplink = self.uplink(node) if node else None
                if uplink is None:
                    continue
                up = state == "Established"
                self.edge(self.bottom, uplink, rid, "bgp_up" if up else "bgp_down",
                          label=f"BGP {state}", minlen=self.minlen)
        return ids

    def addresses(self, router_ids: Sequence[str]) -> dict[str, str]:
        """L2: an edge from the one node answering ARP/NDP.  BGP: an edge from each
        router (which forwards to every announcing node).  Returns address -> box id."""
        ids: dict[str, str] = {}
        for a in self.cluster.addresses():
            aid = f"lb/{a.address}/{a.mode}"
            ids[a.address] = aid
            services = ", ".join(a.services)
            if a.mode == BGP:
                title, kind = range_of(self.cluster, a)
                how = ("ECMP to " if len(a.nodes) > 1 else "to ") + ", ".join(a.nodes)
                self.box(self.bottom, aid, _html(title, f"{kind} · BGP", services,
                                                 *_wrap([how], 40, "routed ")), "lb_bgp")
                for rid in router_ids:
                    self.edge(self.bottom, rid, aid, "bgp_route", label="route")
                if not router_ids:
                    for name in a.nodes:
                        node = self.by_name.get(name)
                        uplink = self.uplink(node) if node else None
                        if uplink:
                            self.edge(self.bottom, uplink, aid, "bgp_route",
                                      label="announces", minlen=self.minlen)
            else:
                owner = ", ".join(a.nodes)
                self.box(self.bottom, aid, _html(a.address, "LoadBalancer · L2 (ARP/NDP)",
                                                 services or "no Service",
                                                 f"answered by {owner}"), "lb_l2")
                for name in a.nodes:
                    node = self.by_name.get(name)
                    uplink = self.uplink(node) if node else None
                    if uplink:
                        self.edge(self.bottom, uplink, aid, "l2_owner",
                                  label=f"{name} answers\nARP/NDP", minlen=self.minlen)
        return ids

    def services(self, lb_ids: dict[str, str], anchor: str | None) -> list[str]:
        ids = []
        for svc in self.cluster.services:
            sid = f"service/{svc.key}"
            ids.append(sid)
            self.box(self.bottom, sid, _html(f"Service {svc.key}  ({svc.type})",
                                             *_service_lines(svc, self.cluster)), "service")
            fed = [lb_ids[ip] for ip in (*svc.ingress, *svc.external_ips) if ip in lb_ids]
            for aid in fed:
                self.edge(self.bottom, aid, sid, "dnat", label="DNAT")
            if not fed and anchor:
                self.bottom.edge(anchor, sid, style="invis")
        return ids

    def clients(self, router_ids: Sequence[str], has_underlay: bool) -> None:
        clients = list(self.cluster.clients)
        if not clients:
            if not self.cluster.addresses() or not (router_ids or has_underlay):
                return
            self.box(self.bottom, "client", _html("a client outside the cluster",
                                                  "L2 addresses: on the segment;",
                                                  "BGP addresses: through the router"),
                     "client")
            self.edge(self.bottom, router_ids[0] if router_ids else "underlay", "client", "link")
            return
        for c in clients:
            cid = f"client/{c.address}"
            where = (f"behind the router {c.via_router}" if c.via_router
                     else "on the underlay segment")
            self.box(self.bottom, cid, _html(c.name, f"{c.address}  ·  {where}",
                                             f"netns {c.netns}" if c.netns else ""), "client")
            rid = f"router/{c.via_router}" if c.via_router else None
            if rid and rid in router_ids:
                self.edge(self.bottom, rid, cid, "link")
            elif has_underlay:
                self.edge(self.bottom, "underlay", cid, "link")

    # -- the legend ---------------------------------------------------------------------
    def legend(self, anchor: str | None) -> None:
        swatch = 'WIDTH="40" HEIGHT="16" FIXEDSIZE="TRUE"'
        dashed = ' STYLE="dashed"'
        def cell(text: str, italic: bool = False, span: str = "") -> str:
            # As wide as the text really is (Graphviz measures it narrower: fonts.py).
            width = round(text_width(text, 10) + 4)
            body = f"<I>{escape(text)}</I>" if italic else escape(text)
            return f'<TD{span} ALIGN="LEFT" WIDTH="{width}">{body}</TD>'

        rows = [f'<TR><TD {swatch} BGCOLOR="{FILLS[k][0]}" COLOR="{FILLS[k][1]}" BORDER="1"'
                f'{dashed if k == "remote" else ""}></TD>{cell(FILLS[k][2])}</TR>'
                for k in FILLS if k in self.used.fills]
        lines = [k for k in LINES if k in self.used.lines]
        rows += [f"<TR><TD {swatch}></TD>{cell(LINES[k].text)}</TR>" for k in lines]
        self.drawing.legend_lines = lines
        notes = [f"pod network {', '.join(self.cluster.cluster_cidrs) or '?'}: "
                 "each node one subnet of it"]
        if self.cluster.service_cidrs:
            notes.append(f"Service CIDR {', '.join(self.cluster.service_cidrs)}: virtual, "
                         "made real by kube-proxy's rules")
        wide = ' COLSPAN="2"'
        rows += [f"<TR>{cell(n, italic=True, span=wide)}</TR>" for n in notes]
        self.bottom.node(self.drawing.legend,
                         label='<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" '
                         'CELLPADDING="1"><TR><TD COLSPAN="2"><B>Legend</B></TD></TR>'
                         + "".join(rows) + "</TABLE>>",
                         shape="box", style="rounded", color="#9ca3af", fontsize="10",
                         margin="0.1")
        if anchor:
            self.bottom.edge(anchor, self.drawing.legend, style="invis")

    def draw(self) -> Drawing:
        for node in self.cluster.nodes:
            self.drawing.columns.append(self.column(node))
        self.tunnels()
        self.stand_ins()
        self.band()
        has_underlay = self.underlay()
        router_ids = self.routers(has_underlay)
        lb_ids = self.addresses(router_ids)
        self.clients(router_ids, has_underlay)
        anchor = "underlay" if has_underlay else next(iter(self.drawing.anchors), None)
        service_ids = self.services(lb_ids, anchor)
        # The legend last: it lists what everything above used.
        self.legend(anchor)
        self.bottom.rows.append([*service_ids, self.drawing.legend])
        return self.drawing


def _proxy_lines(rules: Iterable[ProxyRule]) -> list[str]:
    rules = list(rules)
    if not rules:
        return ["no Service rules"]
    cluster = sorted({f"{r.address}" for r in rules if r.kind == "cluster IP"})
    node_ports = sorted({str(r.port) for r in rules if r.kind == "nodeport"}, key=int)
    lbs = sorted({f"{r.address}" for r in rules if r.kind in ("loadbalancer IP",
                                                                "external IP")})
    services = {r.service.split(":", 1)[0] for r in rules}
    out = [f"DNAT for {len(services)} Service{'s' if len(services) != 1 else ''}:"]
    if cluster:
        out += _wrap(cluster, 40, "ClusterIP ")
    if node_ports:
        out += _wrap(node_ports, 40, "NodePort ")
    if lbs:
        out += _wrap(lbs, 40, "LoadBalancer ")
    return out


def _service_lines(svc: ServiceView, cluster: ClusterStatus) -> list[str]:
    out: list[str] = []
    ports = [f":{p.port}/{p.protocol}" + (f" → {p.target_port}" if p.target_port and
                                           p.target_port != str(p.port) else "")
             for p in svc.ports]
    if svc.cluster_ips:
        out += _wrap(ports, 46, f"ClusterIP {', '.join(svc.cluster_ips)} ")
    node_ports = [str(p.node_port) for p in svc.ports if p.node_port]
    if node_ports:
        out += _wrap(node_ports, 46, "NodePort on every node: ")
    lbs = [*svc.ingress, *svc.external_ips]
    if svc.type == "LoadBalancer" or lbs:
        out.append(f"LoadBalancer {', '.join(lbs) or 'pending'}"
                   + ("  (traffic policy Local)" if svc.external_traffic_policy == "Local"
                      else ""))
    pods = [f"{e.pod or e.address}" + (f" on {e.node}" if e.node else "")
            + ("" if e.ready else " (not ready)") for e in svc.endpoints]
    out += _wrap(pods, 46, "endpoints: ") if pods else ["endpoints: none"]
    readable = [n for n in cluster.nodes if n.proxy_source]
    if readable:
        have = [n.name for n in readable if programmed(n.proxy, svc.key)]
        missing = [n.name for n in readable if n.name not in have]
        if not missing:
            out.append(f"kube-proxy rules on {', '.join(have)}")
        else:
            out.append(f"kube-proxy rules MISSING on {', '.join(missing)}")
    return out


def draw(cluster: ClusterStatus, title: str = "") -> Drawing:
    """Pass 1 of the picture of `cluster` (see the module doc)."""
    return _Picture(cluster, title).draw()

