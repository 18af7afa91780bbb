"""`skeinctl status` / `diagram` against a live netns lab: two nodes running
skein-agent, three pods, skein-speaker on both nodes with one L2 and one BGP
LoadBalancer address (BIRD as the router), and Calico's BGPConfiguration naming
the service CIDR.

What is proved: the status lists exactly what the kernel holds, as iproute2 sees
it independently (`ip -j addr/link/route/neigh`, `bridge -j fdb` in each
namespace); the LoadBalancer side agrees with what the router sees (who answered
its ARP, which next hops its BGP route has); kube-proxy's rules (the lab's
kube-proxy, lab/kubeproxy.py) are read back as programmed; and the diagram drawn
from that status names every pod, both nodes, the tunnel and both addresses,
renders, and passes the picture checks (tests/status/picture.py).

Everything lives in the lab's tagged namespaces and is removed at teardown, on
failure too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from lab import kubeproxy
from lab.cluster import Lab, Node, leftovers, scripts_dir
from lab.router import BirdRouter
from lab.speakers import (
    address_pool,
    arping_macs,
    bgp_advertisement,
    bgp_peer,
    calico_bgp_configuration,
    l2_advertisement,
    lb_service,
    node_mac,
    poll,
    speaker_log,
    start_speaker,
)
from lab.traffic import ping
from speaker.status.diagram import draw
from speaker.status.model import from_json
from speaker.status.output import laid_out
from tests.status.picture import layout_problems, svg_problems

L2_ADDRESS, BGP_ADDRESS = "10.99.0.200", "198.51.100.10"
SERVICE_CIDR = "10.96.0.0/16"
ROUTER_ASN, NODES_ASN = 65112, 64512


def objects() -> list[dict[str, Any]]:
    return [
        address_pool("l2-pool", "10.99.0.200-10.99.0.209"),
        address_pool("bgp-pool", "198.51.100.0/26"),
        l2_advertisement("l2", pools=["l2-pool"]),
        bgp_peer("router", "10.99.0.1", ROUTER_ASN, NODES_ASN),
        bgp_advertisement("bgp", pools=["bgp-pool"]),
        calico_bgp_configuration(cluster_ips=[SERVICE_CIDR]),
        lb_service("web-l2", L2_ADDRESS),
        lb_service("web-bgp", BGP_ADDRESS),
    ]


class Cluster:
    def __init__(self, lab: Lab, router: BirdRouter) -> None:
        self.lab, self.router = lab, router

    def skeinctl(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([os.path.join(scripts_dir(), "skeinctl"), *argv],
                              capture_output=True, text=True, timeout=120, check=False)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def lab_args(self) -> list[str]:
        return ["--lab-manifests", self.lab.manifests_path, "--cni-conf-dir",
                os.path.join(self.lab.workdir, "{node}", "net.d")]

    def bgp_next_hops(self) -> list[str]:
        by_ip = {n.underlay_ip: n.name for n in self.lab.nodes.values()}
        route = self.router.kernel_route(BGP_ADDRESS)
        return sorted(by_ip[w] for w in route.split() if w in by_ip)

    def l2_owner_by_arp(self) -> str:
        """The node whose MAC answers the router's ARP requests for the L2 address
        ("?" for none, "several" when more than one node answers)."""
        macs = set(arping_macs(self.router.ns, L2_ADDRESS))
        if len(macs) > 1:
            return "several"
        return next((n.name for n in self.lab.nodes.values() if node_mac(n) in macs), "?")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Lab(nodes=2) as lab:
        tag = lab.tag
        router = BirdRouter(lab, router_asn=ROUTER_ASN, nodes_asn=NODES_ASN)
        router.start()
        lab.write_manifests(extra=objects())
        lab.start_agents()
        lab.add_pod(lab.nodes["node1"], "p1")
        lab.add_pod(lab.nodes["node1"], "p2")
        lab.add_pod(lab.nodes["node2"], "p1")
        ports = [kubeproxy.ServicePort(
            "default", "web-l2", "", 8080, 8080, "10.96.0.20", 30080, (L2_ADDRESS,),
            tuple((n.pods["p1"].address(), n.name) for n in lab.nodes.values()))]
        for node in lab.nodes.values():
            kubeproxy.program(node, ports)
        for node in lab.nodes.values():
            start_speaker(lab, node, "--assign-to-lo", "--api-socket",
                          os.path.join(node.workdir, "speaker.sock"))
        c = Cluster(lab, router)
        try:
            poll(lambda: c.bgp_next_hops() == ["node1", "node2"], 30,
                 "the router's ECMP route for the BGP address over both nodes")
            poll(lambda: ping(lab.nodes["node1"].pods["p1"].ns,
                              lab.nodes["node2"].pods["p1"].address()), 20,
                 "the overlay between the nodes")
            poll(lambda: c.l2_owner_by_arp() != "?", 20, "an answer for the L2 address")
        except Exception:
            for node in lab.nodes.values():
                print(f"--- {node.name}\n{speaker_log(node)}", file=sys.stderr)
            raise
        yield c
    assert leftovers(tag) == []


# -- what iproute2 says, independently of speaker.status ------------------------------------

def ip_json(node: Node, *args: str) -> Any:
    return json.loads(node.ns.ip("-j", *args).stdout or "[]")


def global_addresses(entries: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{a['local']}/{a['prefixlen']}" for e in entries for a in e["addr_info"]
                  if a.get("scope") == "global")


def kernel_view(node: Node) -> dict[str, Any]:
    """The node as iproute2 shows it, in the shape of the status JSON's fields."""
    ports = {link["ifindex"]: link["ifname"] for link in ip_json(node, "link", "show",
                                                                  "master", "cni0")}
    pods = []
    for pod in node.pods.values():
        eth0 = json.loads(pod.ns.ip("-j", "link", "show", "dev", "eth0").stdout)[0]
        addrs = json.loads(pod.ns.ip("-j", "addr", "show", "dev", "eth0").stdout)
        pods.append({"netns": pod.ns.name, "ifname": "eth0", "mac": eth0["address"],
                     "ips": [a.split("/")[0] for a in global_addresses(addrs)],
                     "host_veth": ports[eth0["link_index"]],
                     "container_id": pod.container_id})
    vx = ip_json(node, "-d", "link", "show", "dev", "skein.1")[0]
    info = vx["linkinfo"]["info_data"]
    neigh = {e["dst"]: e["lladdr"] for e in ip_json(node, "neigh", "show", "dev", "skein.1")
             if e.get("lladdr")}
    fdb = {e["mac"]: e["dst"] for e in json.loads(node.ns.run(
        "bridge", "-j", "fdb", "show", "dev", "skein.1").stdout) if e.get("dst")}
    peers = [{"pod_cidr": r["dst"], "vtep_ip": r["gateway"], "vtep_mac": neigh[r["gateway"]],
              "underlay_ip": fdb[neigh[r["gateway"]]]}
             for r in ip_json(node, "route", "show", "proto", "83")]
    return {
        "bridge": global_addresses(ip_json(node, "addr", "show", "dev", "cni0")),
        "ports": sorted(ports.values()),
        "pods": sorted(pods, key=lambda p: p["netns"]),
        "vxlan": {"vni": info["id"], "port": info["port"], "local": info["local"],
                  "mac": vx["address"], "mtu": vx["mtu"],
                  "addresses": global_addresses(ip_json(node, "addr", "show", "dev",
                                                        "skein.1"))},
        "peers": sorted(peers, key=lambda p: p["pod_cidr"]),
        "underlay": global_addresses(ip_json(node, "addr", "show", "dev", "eth0")),
        "lo": [a for a in global_addresses(ip_json(node, "addr", "show", "dev", "lo"))
               if not a.startswith("127.")],
    }


def status_view(status: dict[str, Any]) -> dict[str, Any]:
    """The same fields, taken from one node of `status -o json`."""
    keys = ("netns", "ifname", "mac", "ips", "host_veth", "container_id")
    vx = status["vxlan"]
    return {
        "bridge": sorted(status["bridge"]["addresses"]),
        "ports": sorted(p["host_veth"] for p in status["pods"]),
        "pods": sorted(({k: p[k] for k in keys} for p in status["pods"]),
                       key=lambda p: p["netns"]),
        "vxlan": {k: vx[k] for k in ("vni", "port", "local", "mac", "mtu")}
        | {"addresses": sorted(vx["addresses"])},
        "peers": sorted(({k: p[k] for k in ("pod_cidr", "vtep_ip", "vtep_mac", "underlay_ip")}
                         for p in status["peers"]), key=lambda p: p["pod_cidr"]),
        "underlay": sorted(status["underlay"]["addresses"]),
        "lo": sorted(status["host_addresses"]),
    }


# -- the tests ------------------------------------------------------------------------------

def test_status_json_is_what_the_kernel_holds(cluster: Cluster) -> None:
    status = json.loads(cluster.skeinctl("status", "-o", "json", *cluster.lab_args()).stdout)
    nodes = {n["name"]: n for n in status["nodes"]}
    assert set(nodes) == {"node1", "node2"}
    for name, node in cluster.lab.nodes.items():
        assert status_view(nodes[name]) == kernel_view(node), name
        assert nodes[name]["netns"] == node.ns.name
        assert nodes[name]["problems"] == []
        cni = nodes[name]["cni"]
        assert cni["path"] == node.conflist_path and cni["plugins"] == ["skein", "portmap"]
        assert cni["pod_cidrs"] == [node.pod_cidr]
    assert len([p for n in nodes.values() for p in n["pods"]]) == 3
    # The far end of each tunnel is named after the node holding its underlay address.
    assert [p["node"] for p in nodes["node1"]["peers"]] == ["node2"]
    assert [p["node"] for p in nodes["node2"]["peers"]] == ["node1"]
    assert status["podCIDRs"] == ["10.244.0.0/24", "10.244.1.0/24"]
    assert status["clusterCIDRs"] == ["10.244.0.0/16"]
    assert status["serviceCIDRs"] == [SERVICE_CIDR]


def test_status_load_balancer_side_matches_the_router(cluster: Cluster) -> None:
    status = json.loads(cluster.skeinctl("status", "-o", "json", *cluster.lab_args()).stdout)
    by_address = {a["address"]: a for a in status["loadBalancerAddresses"]}
    assert by_address[L2_ADDRESS]["mode"] == "l2"
    assert by_address[L2_ADDRESS]["nodes"] == [cluster.l2_owner_by_arp()]
    assert by_address[L2_ADDRESS]["services"] == ["default/web-l2"]
    assert by_address[BGP_ADDRESS]["mode"] == "bgp"
    assert by_address[BGP_ADDRESS]["nodes"] == cluster.bgp_next_hops()
    # Calico's serviceClusterIPs go to the router as one range route from every node.
    assert by_address["10.96.0.0"]["services"] == []
    assert by_address["10.96.0.0"]["nodes"] == ["node1", "node2"]
    assert len(by_address) == 3
    routers = status["bgpRouters"]
    assert [(r["address"], r["asn"]) for r in routers] == [("10.99.0.1", ROUTER_ASN)]
    assert dict(map(tuple, routers[0]["sessions"])) == {"node1": "Established",
                                                         "node2": "Established"}


def test_table_answers_the_newcomer_questions(cluster: Cluster) -> None:
    out = cluster.skeinctl("status", *cluster.lab_args()).stdout
    assert 'CNI network "skein"' in out
    assert "10.244.0.0/16" in out and SERVICE_CIDR in out
    for node in cluster.lab.nodes.values():
        assert node.conflist_path in out
        for pod in node.pods.values():
            assert pod.address() in out and pod.ns.name in out
    assert L2_ADDRESS in out and BGP_ADDRESS in out and "Established" in out


def test_kube_proxy_rules_are_read_back(cluster: Cluster) -> None:
    """What the lab's kube-proxy programmed (iptables-save in each node), per node:
    the ClusterIP to every endpoint, NodePort and LB address to the node's own."""
    status = json.loads(cluster.skeinctl("status", "-o", "json", *cluster.lab_args()).stdout)
    for node in status["nodes"]:
        assert node["proxy_source"] == "iptables"
        rules = {r["kind"]: r for r in node["proxy"]}
        own = cluster.lab.nodes[node["name"]].pods["p1"].address() + ":8080"
        assert rules["cluster IP"]["address"] == "10.96.0.20"
        assert len(rules["cluster IP"]["endpoints"]) == 2
        assert rules["nodeport"]["port"] == 30080 and rules["nodeport"]["endpoints"] == [own]
        assert rules["loadbalancer IP"]["endpoints"] == [own]
    wide = cluster.skeinctl("status", "-o", "wide", *cluster.lab_args()).stdout
    assert "default/web-l2  nodeport" in wide


def test_diagram_dot_svg_png(cluster: Cluster, tmp_path: Any) -> None:
    dot, svg, png = (tmp_path / f"lab.{ext}" for ext in ("dot", "svg", "png"))
    cluster.skeinctl("diagram", str(dot), *cluster.lab_args())
    cluster.skeinctl("diagram", "--output-file", str(svg), *cluster.lab_args())
    cluster.skeinctl("diagram", "-f", str(png), *cluster.lab_args())
    source = dot.read_text()
    for node in cluster.lab.nodes.values():
        assert f"cluster_{node.name}" in source
        for pod in node.pods.values():
            assert pod.address() in source and f"{node.name}/pod/" in source
            assert pod.ns.name in source
    assert '"node1/skein.1" -> "node2/skein.1"' in source
    assert "VXLAN 10.99.0.11\\n⇄ 10.99.0.12" in source
    assert f"lb/{L2_ADDRESS}/l2" in source and f"lb/{BGP_ADDRESS}/bgp" in source
    assert "router/10.99.0.1" in source
    assert f"{SERVICE_CIDR}</B>" in source and "ClusterIP range · BGP" in source
    root = ET.fromstring(svg.read_bytes())
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert L2_ADDRESS in texts and BGP_ADDRESS in texts
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The picture's checks, on what the lab holds.
    shown = from_json(json.loads(cluster.skeinctl("status", "-o", "json",
                                                  *cluster.lab_args()).stdout))
    assert svg_problems(svg.read_bytes(), shown) == []
    assert layout_problems(laid_out(draw(shown))) == []


def test_lab_diagram_for_the_demo(cluster: Cluster, tmp_path: Any) -> None:
    from lab.status import write_lab_diagram

    path = tmp_path / "demo.svg"
    shown = write_lab_diagram(cluster.lab, str(path))
    assert sorted(p.name for n in shown.nodes for p in n.pods) == ["p1", "p1", "p2"]
    assert {a.address for a in shown.addresses() if a.services} == {L2_ADDRESS, BGP_ADDRESS}
    assert svg_problems(path.read_bytes(), shown) == []


def test_status_of_one_node_from_inside_its_namespace(cluster: Cluster) -> None:
    """As on a real node: `ip netns exec NODE skeinctl --socket S status`, no lab flags."""
    node = cluster.lab.nodes["node2"]
    proc = node.ns.run(os.path.join(scripts_dir(), "skeinctl"), "--socket",
                       os.path.join(node.workdir, "speaker.sock"), "status", "-o", "json",
                       "--node", node.name, "--cni-conf-dir", node.conf_dir,
                       "--service-cidr", SERVICE_CIDR, check=False)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    (only,) = status["nodes"]
    assert only["name"] == "node2" and only["netns"] is None
    assert status_view(only) == kernel_view(node)
    assert status["serviceCIDRs"] == [SERVICE_CIDR]
    assert only["service_cidrs_source"] == "--service-cidr"
    assert only["speaker"]["reachable"]
    assert BGP_ADDRESS in {a["address"] for a in only["speaker"]["announcements"]}
    assert [s["state"] for s in only["speaker"]["sessions"]] == ["Established"]


def test_a_speaker_that_is_not_there_is_said_so(cluster: Cluster, tmp_path: Any) -> None:
    node = cluster.lab.nodes["node1"]
    proc = node.ns.run(os.path.join(scripts_dir(), "skeinctl"), "--socket",
                       str(tmp_path / "nobody.sock"), "status", "--node", node.name,
                       "--cni-conf-dir", node.conf_dir, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "speaker:  unreachable (unix:" in proc.stdout
    assert "service CIDR:  unknown" in proc.stdout
