"""The pure half of `skeinctl status` / `diagram`, without root: the model's JSON and
cluster-wide summaries, the table, the Graphviz picture (what it draws for healthy,
broken and partial overlays), file output by suffix, and the speaker API conversion."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from speaker.api.peer_status import PeerStatus
from speaker.status import render
from speaker.status.collect import cni_info, find_conflist
from speaker.status.model import (
    ClusterStatus,
    CniInfo,
    Interface,
    LbAddress,
    NodeStatus,
    Peer,
    Pod,
    SpeakerState,
    Vxlan,
    to_json,
    with_peer_names,
)
from speaker.status.output import diagram_format, write_diagram
from speaker.status.speaker_state import from_api


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
    text = render.table(cluster)
    assert 'CNI network "skein" (plugins: skein), VXLAN overlay' in text
    assert "service CIDR:  10.96.0.0/12 (from --service-cidr)" in text
    assert "10.99.0.200    l2    node1        default/web" in text
    assert "198.51.100.10  bgp   node1,node2  default/api" in text
    assert "10.99.0.1  65112  node2  Established" in text
    assert "10.244.1.0/24  10.244.1.0  0e:4b:0a:63:00:0c  10.99.0.12  node2" in text
    assert "1m01s" in text


def test_table_without_anything():
    text = render.table(ClusterStatus((NodeStatus("lonely", problems=("no CNI here",)),)))
    assert "no CNI configuration found" in text and "service CIDR:  unknown" in text
    assert "problem:  no CNI here" in text and "speaker:  not asked" in text


def test_diagram_draws_the_path_of_a_packet(cluster):
    source = render.diagram(cluster).source
    assert "subgraph cluster_node1" in source and "subgraph cluster_node2" in source
    for pod in ("node1/pod/veth00", "node1/pod/veth01", "node2/pod/veth10"):
        assert f'"{pod}" -> "{pod.split("/")[0]}/cni0"' in source
    assert '"node1/cni0" -> "node1/skein.1"' in source
    assert '"node1/skein.1" -> "node1/eth0"' in source
    # One tunnel per pair of nodes, both ways.
    tunnels = [line for line in source.splitlines()
               if re.search(r'"node\d/skein.1" -> "node\d/skein.1"', line) and "invis" not in line]
    assert len(tunnels) == 1 and tunnels[0].startswith('\t"node1/skein.1" -> "node2/skein.1"')
    assert "VXLAN tunnel 10.99.0.11 ⇄ 10.99.0.12" in source
    assert '"node1/eth0" -> "lb/10.99.0.200/l2"' in source
    assert '"router/10.99.0.1" -> "lb/198.51.100.10/bgp"' in source
    assert 'underlay -> "router/10.99.0.1"' in source
    for name in ("node1", "node2"):
        assert f'"{name}/eth0" -> "router/10.99.0.1" [label="BGP Established' in source
    assert "ECMP to node1, node2" in source
    # The lab's common name prefix is left out of the pod boxes.
    assert "pod e1p0" in source


def test_one_way_tunnel_and_down_session_are_red(cluster):
    n1, n2 = cluster.nodes
    broken = ClusterStatus((n1, dataclasses.replace(n2, peers=(), speaker=speaker(
        state="Active"))))
    source = render.diagram(broken).source
    assert "one-way tunnel!" in source and "node2 has no route back" in source
    assert "BGP Active" in source and render.SESSION_DOWN in source


def test_a_single_node_draws_its_peers_as_remote_boxes(cluster):
    alone = ClusterStatus((cluster.nodes[0],))
    source = render.diagram(alone).source
    assert '"node1/skein.1" -> "remote/10.99.0.12"' in source
    assert "pod subnet 10.244.1.0/24" in source


def test_diagram_files(cluster, tmp_path: Path):
    g = render.diagram(cluster)
    assert write_diagram(g, str(tmp_path / "d.dot")) == "dot"
    assert (tmp_path / "d.dot").read_text() == g.source
    write_diagram(g, str(tmp_path / "d.svg"))
    root = ET.fromstring((tmp_path / "d.svg").read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    write_diagram(g, str(tmp_path / "sub" / "d.png"))
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


@pytest.mark.parametrize("nodes", [1, 2, 3, 4])
@pytest.mark.parametrize("pods", [0, 1, 2, 3])
def test_dot_lays_out_every_shape_of_cluster(nodes: int, pods: int):
    """dot 2.43 aborts on some combinations of clusters, rank constraints and flat
    edges (it did for the demo: a tunnel beside an invisible ordering edge); every
    shape a lab makes must render: speakers everywhere, nowhere, on the first node
    only (the others unreachable), and with a one-way tunnel."""
    unreachable = SpeakerState("x", reachable=False)
    for variant in ("none", "all", "first-only", "one-way"):
        shown = []
        for i in range(nodes):
            peers = () if variant == "one-way" and i == nodes - 1 else tuple(
                j for j in range(nodes) if j != i)
            state = {"none": None, "all": speaker(L2, BGP) if i == 0 else speaker(BGP),
                     "first-only": speaker(L2) if i == 0 else unreachable,
                     "one-way": speaker(BGP)}[variant]
            shown.append(node(i, peers, state, pods=pods))
        svg = render.diagram(with_peer_names(ClusterStatus(tuple(shown)))).pipe(format="svg")
        assert ET.fromstring(svg).tag.endswith("svg")
