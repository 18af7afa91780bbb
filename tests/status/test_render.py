"""The pure half of `skeinctl status` / `diagram`, without root: the model's JSON and
cluster-wide summaries, the table, the Graphviz picture (what it draws for healthy,
broken and partial overlays, and that every shape passes the picture checks of
tests/status/picture.py), file output by suffix, and the speaker API conversion."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from speaker.api.peer_status import PeerStatus
from speaker.status import render as text_render
from speaker.status.collect import cni_info, find_conflist
from speaker.status.diagram import draw
from speaker.status.model import (
    ClusterStatus,
    CniInfo,
    Endpoint,
    Interface,
    LbAddress,
    NodeStatus,
    Peer,
    Pod,
    ProxyRule,
    ServicePortView,
    ServiceView,
    SpeakerState,
    Vxlan,
    to_json,
    with_peer_names,
)
from speaker.status.output import diagram_format, laid_out, render, write_diagram
from speaker.status.speaker_state import from_api
from tests.status.picture import layout_problems, svg_problems


def node(i: int, peers: tuple[int, ...], speaker: SpeakerState | None = None,
         pods: int = 1) -> NodeStatus:
    cidr = f"10.244.{i}.0/24"
    return NodeStatus(
        name=f"node{i + 1}", netns=f"labn{i + 1}",
        cni=CniInfo("/etc/cni/net.d/10-skein.conflist", "skein", "1.1.0", ("skein",),
                    pod_cidrs=(cidr,), cluster_cidrs=("10.244.0.0/16",),
                    vxlan_device="skein.1"),
        service_cidrs=("10.96.0.0/12",), service_cidrs_source="--service-cidr",
        underlay=Interface("eth0", 2, f"02:00:00:00:00:{i:02x}", 1500, True,
                           (f"10.99.0.{11 + i}/24",)),
        bridge=Interface("cni0", 4, "02:00:00:00:01:00", 1450, True, (f"10.244.{i}.1/24",)),
        pods=tuple(Pod(f"veth{i}{j}", 10 + j, "eth0", (f"10.244.{i}.{2 + j}",), None,
                       f"labe{i + 1}p{j}", f"cid-{i}-{j}", f"labe{i + 1}p{j}")
                   for j in range(pods)),
        vxlan=Vxlan("skein.1", 3, 1, 8472, f"10.99.0.{11 + i}", "eth0",
                    f"0e:4b:0a:63:00:{11 + i:02x}", 1450, (f"10.244.{i}.0/32",)),
        peers=tuple(Peer(f"10.244.{p}.0/24", f"10.244.{p}.0", f"0e:4b:0a:63:00:{11 + p:02x}",
                         f"10.99.0.{11 + p}") for p in peers),
        speaker=speaker)


def speaker(*announcements: LbAddress, state: str = "Established") -> SpeakerState:
    return SpeakerState("test", announcements=announcements,
                        sessions=(PeerStatus("bgp", "10.99.0.1", state, 61.0, 65112, 64512,
                                             prefixes_advertised=1),))


L2 = LbAddress("10.99.0.200", "l2", ("default/web",))
BGP = LbAddress("198.51.100.10", "bgp", ("default/api",))
SERVICES = (
    ServiceView("default", "api", "LoadBalancer", ("10.96.0.21",),
                (ServicePortView(80, "TCP", "http", 30081, "8080"),), ("198.51.100.10",), (),
                "Cluster", (Endpoint("10.244.0.2", "node1", True, "default/api-1"),)),
    ServiceView("default", "web", "LoadBalancer", ("10.96.0.20",),
                (ServicePortView(80, "TCP", "http", 30080, "8080"),), ("10.99.0.200",), (),
                "Local", (Endpoint("10.244.0.2", "node1"), Endpoint("10.244.1.2", "node2"))),
    ServiceView("kube-system", "kube-dns", "ClusterIP", ("10.96.0.10",),
                (ServicePortView(53, "UDP", "dns"),)),
)


def proxied(i: int) -> tuple[ProxyRule, ...]:
    """What kube-proxy programmed on node i for SERVICES."""
    return (ProxyRule("default/web:http", "cluster IP", "10.96.0.20", 80, "TCP",
                      ("10.244.0.2:8080", "10.244.1.2:8080")),
            ProxyRule("default/web:http", "nodeport", None, 30080, "TCP",
                      (f"10.244.{i}.2:8080",)),
            ProxyRule("default/web:http", "loadbalancer IP", "10.99.0.200", 80, "TCP",
                      (f"10.244.{i}.2:8080",)),
            ProxyRule("kube-system/kube-dns:dns", "cluster IP", "10.96.0.10", 53, "UDP",
                      ("10.244.0.5:53",)))


@pytest.fixture
def cluster() -> ClusterStatus:
    return with_peer_names(ClusterStatus((node(0, (1,), speaker(L2, BGP), pods=2),
                                          node(1, (0,), speaker(BGP)))))


def test_peers_named_after_the_node_holding_their_underlay_address(cluster):
    assert [p.node for n in cluster.nodes for p in n.peers] == ["node2", "node1"]


def test_cluster_summaries(cluster):
    views = {a.address: a for a in cluster.addresses()}
    assert views["10.99.0.200"].nodes == ("node1",) and views["10.99.0.200"].mode == "l2"
    assert views["198.51.100.10"].nodes == ("node1", "node2")
    (router,) = cluster.routers()
    assert router.asn == 65112 and router.sessions == (("node1", "Established"),
                                                       ("node2", "Established"))
    doc = json.loads(json.dumps(to_json(cluster)))
    assert doc["podCIDRs"] == ["10.244.0.0/24", "10.244.1.0/24"]
    assert doc["serviceCIDRs"] == ["10.96.0.0/12"]
    assert doc["nodes"][0]["pods"][1]["ips"] == ["10.244.0.3"]
    assert doc["loadBalancerAddresses"][0] == {"address": "10.99.0.200", "mode": "l2",
                                               "nodes": ["node1"], "services": ["default/web"]}


def test_table(cluster):
    text = text_render.table(cluster)
    assert 'CNI network "skein" (plugins: skein), VXLAN overlay' in text
    assert "service CIDR:  10.96.0.0/12 (from --service-cidr)" in text
    assert "10.99.0.200    l2    node1        default/web" in text
    assert "198.51.100.10  bgp   node1,node2  default/api" in text
    assert "10.99.0.1  65112  node2  Established" in text
    assert "10.244.1.0/24  10.244.1.0  0e:4b:0a:63:00:0c  10.99.0.12  node2" in text
    assert "1m01s" in text


def test_table_without_anything():
    text = text_render.table(ClusterStatus((NodeStatus("lonely", problems=("no CNI here",)),)))
    assert "no CNI configuration found" in text and "service CIDR:  unknown" in text
    assert "problem:  no CNI here" in text and "speaker:  not asked" in text


def test_diagram_draws_the_path_of_a_packet(cluster):
    drawing = draw(cluster)
    source = drawing.sources()
    assert [p.name for p in drawing.columns] == ["node1", "node2"]
    assert "subgraph \"cluster_node1\"" in source and "subgraph \"cluster_node2\"" in source
    for pod in ("node1/pod/veth00", "node1/pod/veth01", "node2/pod/veth10"):
        assert f'"{pod}" -> "{pod.split("/")[0]}/cni0"' in source
    assert '"node1/cni0" -> "node1/skein.1"' in source
    assert '"node1/skein.1" -> "node1/eth0"' in source
    # One tunnel per pair of nodes, both ways, drawn in pass 2.
    (tunnel,) = drawing.tunnels
    assert (tunnel.a, tunnel.b, tunnel.broken) == ("node1/skein.1", "node2/skein.1", False)
    assert tunnel.label == "VXLAN 10.99.0.11 ⇄ 10.99.0.12"
    assert '"node1/eth0" -> "lb/10.99.0.200/l2"' in source
    assert '"router/10.99.0.1" -> "lb/198.51.100.10/bgp"' in source
    assert '"router/10.99.0.1" -> "underlay"' in source
    for name in ("node1", "node2"):
        assert f'"{name}/eth0" -> "router/10.99.0.1" [label="BGP Established"' in source
    assert "ECMP to node1, node2" in source
    assert "pod labe1p0" in source


def test_one_way_tunnel_and_down_session_are_red(cluster):
    n1, n2 = cluster.nodes
    broken = ClusterStatus((n1, dataclasses.replace(n2, peers=(), speaker=speaker(
        state="Active"))))
    drawing = draw(broken)
    (tunnel,) = drawing.tunnels
    assert tunnel.broken and tunnel.label == "one-way tunnel! node2 has no route back"
    assert "tunnel_broken" in drawing.legend_lines and "bgp_down" in drawing.legend_lines
    assert "BGP Active" in drawing.sources()
    svg = render(drawing, "svg")
    assert svg_problems(svg, broken) == []
    assert layout_problems(laid_out(drawing)) == []


def test_a_single_node_draws_its_peers_as_remote_boxes(cluster):
    alone = ClusterStatus((cluster.nodes[0],))
    drawing = draw(alone)
    source = drawing.sources()
    assert '"node1/skein.1" -> "remote/10.99.0.12"' in source
    assert "pod subnet 10.244.1.0/24" in source
    assert drawing.tunnels == []
    assert svg_problems(render(drawing, "svg"), alone) == []


def test_diagram_files(cluster, tmp_path: Path):
    drawing = draw(cluster)
    assert write_diagram(drawing, str(tmp_path / "d.dot")) == "dot"
    text = (tmp_path / "d.dot").read_text()
    assert "laid out by skeinctl" in text and 'pos="' in text
    # The .dot file draws the same picture again.
    svg = subprocess.run(["neato", "-n2", "-Tsvg"], input=text.encode(), check=True,
                         capture_output=True).stdout
    assert svg_problems(svg, cluster) == []
    write_diagram(drawing, str(tmp_path / "d.svg"))
    root = ET.fromstring((tmp_path / "d.svg").read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    write_diagram(drawing, str(tmp_path / "sub" / "d.png"))
    assert (tmp_path / "sub" / "d.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match=r"\.svg, \.png or \.dot"):
        diagram_format("d.jpg")


def test_conflist_found_as_a_runtime_would(tmp_path: Path):
    (tmp_path / "99-other.conflist").write_text('{"name": "other", "plugins": []}')
    (tmp_path / "05-broken.conflist").write_text("{not json")
    (tmp_path / "10-skein.conf").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "single", "type": "bridge", "bridge": "br9",
        "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}))
    path, conf = find_conflist(str(tmp_path))
    info = cni_info(path, conf)
    assert path.endswith("10-skein.conf") and info.plugins == ("bridge",)
    assert info.bridge == "br9" and info.pod_cidrs == ("10.9.0.0/24",)
    assert info.vxlan_device is None
    assert find_conflist(str(tmp_path / "missing")) is None


def test_speaker_api_conversion():
    peers = NS(peers=[
        NS(kind="member", name="node2", state="alive", has_uptime=True, uptime_seconds=3.0,
           peer_asn=0, local_asn=0, prefixes_advertised=0),
        NS(kind="bgp", name="10.99.0.1", state="Established", has_uptime=True, last_error="",
           addresses=[],
           uptime_seconds=12.5, peer_asn=65112, local_asn=64512, prefixes_advertised=2)])
    announcements = NS(announcements=[
        NS(address="10.99.0.201", mode="l2", owner="node2", local=False, services=["a/b"],
           interfaces=[]),
        NS(address="10.99.0.200", mode="l2", owner="node1", local=True, services=["a/web"],
           interfaces=["eth0"]),
        NS(address="198.51.100.10", mode="bgp", owner="", local=True, services=["a/api"],
           interfaces=[])])
    state = from_api("unix:///run/s.sock", peers, announcements)
    assert [a.address for a in state.announcements] == ["198.51.100.10", "10.99.0.200"]
    assert state.announcements[1].interfaces == ("eth0",)
    assert state.sessions == (PeerStatus("bgp", "10.99.0.1", "Established", 12.5, 65112, 64512,
                                         prefixes_advertised=2),)


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("pods", [0, 2])
def test_every_shape_of_cluster_draws_a_clean_picture(nodes: int, pods: int):
    """Every shape a lab makes renders, and its picture passes the checks the README's
    pictures pass: speakers everywhere, nowhere, on the first node only (the others
    unreachable), and with a one-way tunnel; with and without kube-proxy's rules."""
    unreachable = SpeakerState("x", reachable=False)
    for variant in ("none", "all", "first-only", "one-way"):
        shown = []
        for i in range(nodes):
            peers = () if variant == "one-way" and i == nodes - 1 else tuple(
                j for j in range(nodes) if j != i)
            state = {"none": None, "all": speaker(L2, BGP) if i == 0 else speaker(BGP),
                     "first-only": speaker(L2) if i == 0 else unreachable,
                     "one-way": speaker(BGP)}[variant]
            proxy = proxied(i) if variant in ("all", "one-way") else ()
            shown.append(dataclasses.replace(node(i, peers, state, pods=pods), proxy=proxy,
                                             proxy_source="iptables" if proxy else ""))
        cluster = with_peer_names(ClusterStatus(tuple(shown), services=SERVICES
                                                if variant == "all" else ()))
        drawing = draw(cluster)
        assert layout_problems(laid_out(drawing)) == [], (nodes, pods, variant)
        assert svg_problems(render(drawing, "svg"), cluster) == [], (nodes, pods, variant)
        far = [t for t in drawing.tunnels if t.ib - t.ia > 1]
        assert len(drawing.tunnels) == nodes * (nodes - 1) // 2
        assert len(far) == max(0, (nodes - 1) * (nodes - 2) // 2)
