"""The one-machine lab: a three-node Kubernetes-shaped network, end to end.

    client ── BIRD router ──┬── node1 ── cni0 ── pods      skein-agent  (VXLAN overlay)
                            ├── node2 ── cni0 ── pods      skein-speaker (ARP/NDP + BGP)
                            └── node3 ── cni0 ── pods      skein-controller (LB addresses)

What it builds, in network namespaces only (every name carries a random tag):
an underlay segment, three nodes running skein-agent and skein-speaker, pods
wired by the real `skein` CNI plugin, skein-controller assigning LoadBalancer
addresses from MetalLB-shaped pools, a BIRD router peering with the speakers,
and a client behind the router.  Two Services: one announced on layer 2
(ARP), one over BGP.  Then it checks everything with real traffic and prints a
table: pod to pod across nodes, the client to each LoadBalancer address (who
owns it, which pod answered), and BIRD's routes.  Everything is removed on
exit, on Ctrl-C and on SIGTERM.

Run as root: `python3 -m lab.demo [--report FILE.json] [--diagram FILE.svg]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from lab import kubeproxy
from lab.cluster import Lab, LabError, Node, Pod, leftovers, scripts_dir
from lab.router import NODES_ASN, ROUTER_ASN, BirdRouter
from lab.speakers import poll
from lab.traffic import ping, start_name_server, tcp_read, tcp_source_seen

L2_POOL = "10.99.0.200-10.99.0.209"  # on the underlay segment: answered by ARP
BGP_POOL = "10.77.77.0/28"  # elsewhere: reached through the router
SERVICE_PORT = 80
POD_PORT = 8080


class Progress:
    """Numbered steps with their duration, so a newcomer can follow along."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.n += 1
        print(f"[{self.n:2}/{self.total}] {text} ...", end="", flush=True)
        start = time.monotonic()
        try:
            yield
        except BaseException:
            print(" FAILED", flush=True)
            raise
        print(f" done ({time.monotonic() - start:.1f} s)", flush=True)


def cluster_objects() -> list[dict[str, Any]]:
    """Pools, advertisements, the BGP peer and two Services, as a MetalLB user writes them."""
    meta = {"namespace": "metallb-system"}

    def service(name: str, pool: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default",
                             "annotations": {"metallb.universe.tf/address-pool": pool}},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                         "ports": [{"port": SERVICE_PORT, "targetPort": POD_PORT,
                                    "protocol": "TCP"}]}}

    return [
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": "l2-pool", **meta}, "spec": {"addresses": [L2_POOL]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": "bgp-pool", **meta},
         "spec": {"addresses": [BGP_POOL], "avoidBuggyIPs": True}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
         "metadata": {"name": "l2", **meta}, "spec": {"ipAddressPools": ["l2-pool"]}},
        {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
         "metadata": {"name": "router", **meta},
         "spec": {"myASN": NODES_ASN, "peerASN": ROUTER_ASN, "peerAddress": "10.99.0.1"}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
         "metadata": {"name": "bgp", **meta}, "spec": {"ipAddressPools": ["bgp-pool"]}},
        service("web-l2", "l2-pool"),
        service("web-bgp", "bgp-pool"),
    ]


def assigned_addresses(lab: Lab) -> dict[str, str]:
    """Service name -> LoadBalancer address, as the controller wrote it into the file."""
    with open(lab.manifests_path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    out = {}
    for doc in docs:
        if doc.get("kind") == "Service":
            ingress = ((doc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if ingress:
                out[doc["metadata"]["name"]] = ingress[0]["ip"]
    return out


def speaker_socket(node: Node) -> str:
    """Each node's speaker API on its own socket (the default path is per machine)."""
    return os.path.join(node.workdir, "speaker.sock")


def both_assigned(lab: Lab) -> dict[str, str] | None:
    found = assigned_addresses(lab)
    return found if len(found) == 2 else None


def node_of_mac(lab: Lab, mac: str | None) -> str:
    for node in lab.nodes.values():
        link = json.loads(node.ns.ip("-j", "link", "show", "eth0").stdout)[0]
        if mac and link["address"].lower() == mac.lower():
            return node.name
    return "?"


def l2_owner(lab: Lab, router: BirdRouter, address: str) -> str:
    """Who answered the router's ARP for `address` (its neighbour table)."""
    data = json.loads(router.ns.ip("-j", "neigh", "show", "to", address).stdout or "[]")
    return node_of_mac(lab, next((e.get("lladdr") for e in data if e.get("lladdr")), None))


def bgp_next_hops(lab: Lab, router: BirdRouter, address: str) -> list[str]:
    """The nodes the router's kernel route for `address` spreads over (ECMP)."""
    by_ip = {n.underlay_ip: n.name for n in lab.nodes.values()}
    route = router.kernel_route(address)
    return sorted(by_ip[w] for w in route.split() if w in by_ip)


def run_demo(report_path: str | None, diagram_path: str | None, pods_per_node: int) -> int:
    progress = Progress(total=10)
    report: dict[str, Any] = {}
    with Lab(nodes=3) as lab:
        with progress.step(f"lab {lab.tag}: underlay bridge and 3 node namespaces"):
            pass  # built by Lab.__enter__
        with progress.step("BIRD router (AS 65112) and a client behind it"):
            router = BirdRouter(lab)
            router.start()
            client = router.add_client()
        with progress.step("skein-agent on every node: conflist, VXLAN peers"):
            lab.write_manifests(extra=cluster_objects())
            lab.start_agents()
        pods: list[Pod] = []
        with progress.step(f"{pods_per_node} pods per node through the skein CNI plugin"):
            for node in lab.nodes.values():
                for i in range(pods_per_node):
                    pod = lab.add_pod(node, f"p{i + 1}")
                    lab.processes.append(start_name_server(pod.ns, f"{node.name}/{pod.name}",
                                                           POD_PORT))
                    pods.append(pod)
        with progress.step("skein-controller assigns LoadBalancer addresses"):
            lab.spawn(lab.underlay, os.path.join(scripts_dir(), "skein-controller"),
                      "--manifests", lab.manifests_path,
                      log=os.path.join(lab.workdir, "controller.log"))
            addresses = poll(lambda: both_assigned(lab), 30,
                                 "the controller to assign both addresses")
        with progress.step("skein-speaker on every node (ARP for web-l2, BGP for web-bgp)"):
            for node in lab.nodes.values():
                lab.spawn(node.ns, os.path.join(scripts_dir(), "skein-speaker"), "--node",
                          node.name, "--manifests", lab.manifests_path,
                          "--api-socket", speaker_socket(node),
                          log=os.path.join(node.workdir, "speaker.log"))
        with progress.step("lab kube-proxy: LoadBalancer traffic to a local pod"):
            for node in lab.nodes.values():
                first = node.pods["p1"]
                for address in addresses.values():
                    kubeproxy.expose(node, address, SERVICE_PORT, first.address(), POD_PORT)
        with progress.step("waiting for BGP sessions and routes on the router"):
            poll(lambda: router.established() >= 3, 30, "3 BGP sessions at BIRD")
            poll(lambda: len(bgp_next_hops(lab, router, addresses["web-bgp"])) == 3, 30,
                     "an ECMP route over 3 nodes for web-bgp")
        with progress.step("pod to pod across nodes (ping and TCP, source address kept)"):
            report["pod_to_pod"] = pod_matrix(pods)
        with progress.step("client to each LoadBalancer address through the router"):
            report["services"] = service_rows(lab, router, client, addresses)
            report["bird_routes"] = router.birdc("show route")
        report["pods"] = [{"node": p.node.name, "pod": p.name, "ip": p.address(),
                           "veth": p.result["interfaces"][1]["name"]} for p in pods]
        if diagram_path:
            from lab.status import write_lab_diagram

            write_lab_diagram(lab, diagram_path)
            report["diagram"] = diagram_path
        tag = lab.tag
    report["leftover_namespaces"] = leftovers(tag)
    print_report(report)
    if report_path:
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    ok = (all(r["ok"] for r in report["pod_to_pod"])
          and all(r["ok"] for r in report["services"]) and not report["leftover_namespaces"])
    return 0 if ok else 1


def pod_matrix(pods: list[Pod]) -> list[dict[str, Any]]:
    rows = []
    for src in pods:
        for dst in pods:
            if src is dst:
                continue
            pinged = ping(src.ns, dst.address())
            try:
                seen = tcp_source_seen(dst.ns, dst.address(), src.ns, dst.address(), port=7000)
            except RuntimeError:
                seen = None
            rows.append({"from": f"{src.node.name}/{src.name}", "to": f"{dst.node.name}/{dst.name}",
                         "path": "bridge" if src.node is dst.node else "vxlan",
                         "ping": pinged, "source_seen": seen,
                         "ok": pinged and seen == src.address()})
    return rows


def service_rows(lab: Lab, router: BirdRouter, client: Any,
                 addresses: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for name, address in sorted(addresses.items()):
        mode = "L2" if name == "web-l2" else "BGP"
        answer = poll(lambda: tcp_read(client, address, SERVICE_PORT), 20,  # noqa: B023
                          f"the client to reach {name} at {address}")
        owner = (l2_owner(lab, router, address) if mode == "L2"
                 else ", ".join(bgp_next_hops(lab, router, address)))
        rows.append({"service": name, "address": address, "mode": mode, "owner": owner,
                     "answered_by": answer, "ok": bool(answer)})
    return rows


def print_report(report: dict[str, Any]) -> None:
    print("\nPods")
    for p in report["pods"]:
        print(f"  {p['node'] + '/' + p['pod']:12} {p['ip']:14} host veth {p['veth']}")
    matrix = report["pod_to_pod"]
    good = sum(r["ok"] for r in matrix)
    cross = [r for r in matrix if r["path"] == "vxlan"]
    print(f"\nPod to pod: {good}/{len(matrix)} pairs reachable with their own source address "
          f"({sum(r['ok'] for r in cross)}/{len(cross)} across nodes over VXLAN)")
    for r in matrix:
        if not r["ok"]:
            print(f"  FAIL {r['from']} -> {r['to']} ({r['path']}): ping {r['ping']}, "
                  f"source seen {r['source_seen']}")
    print("\nClient (behind the router) to each LoadBalancer address")
    print(f"  {'service':8} {'address':13} {'mode':4} {'announced by':22} answered by")
    for r in report["services"]:
        print(f"  {r['service']:8} {r['address']:13} {r['mode']:4} {r['owner']:22} "
              f"{r['answered_by'] or 'NO ANSWER'}")
    print("\nBIRD's routes")
    for line in report["bird_routes"].splitlines():
        if line.strip():
            print(f"  {line}")
    if report.get("diagram"):
        print(f"\nDiagram: {report['diagram']}")
    print(f"\nCleaned up; leftover namespaces: {report['leftover_namespaces'] or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=2, help="pods per node (default 2)")
    parser.add_argument("--report", help="also write the results as JSON to this file")
    parser.add_argument("--diagram", default="skein-lab.svg",
                        help="write the topology diagram here (.svg, .png or .dot; "
                        "default skein-lab.svg; '' for none)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces)", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, through the Lab's context manager.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        return run_demo(args.report, args.diagram or None, args.pods)
    except (LabError, subprocess.CalledProcessError) as exc:
        print(f"\nlab failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
