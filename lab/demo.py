"""The one-machine lab: a three-node Kubernetes-shaped network, end to end.

    client ── BIRD router ──┬── node1 ── cni0 ── pods      skein-agent  (VXLAN overlay)
                            ├── node2 ── cni0 ── pods      skein-speaker (ARP/NDP + BGP)
                            └── node3 ── cni0 ── pods      skein-controller (LB addresses)

What it builds, in network namespaces only (every name carries a random tag):
an underlay segment, three nodes running skein-agent and skein-speaker, pods
wired by the real `skein` CNI plugin, skein-controller assigning LoadBalancer
addresses from MetalLB-shaped pools, a BIRD router peering with the speakers,
and a client behind the router.  Two Services, each with a ClusterIP, a NodePort and a
LoadBalancer address: one announced on layer 2 (ARP), one over BGP; kube-proxy's
rules for them on every node (lab/kubeproxy.py).  Then it checks everything with
real traffic and prints a table: pod to pod across nodes, a pod to each ClusterIP,
the client to each NodePort and each LoadBalancer address (who owns it, which pod
answered), and BIRD's routes; and it draws the picture (`--diagram`).

Everything is removed on exit, on Ctrl-C and on SIGTERM; with `--keep` the lab is
left running, to explore (`skeinctl status`, `skeinctl diagram`, traffic from the
client), until `skein-lab down` removes it.

Run as root: `skein-lab demo [--keep] [--report FILE.json] [--diagram FILE.svg]`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from foundation.files import write_atomically
from lab import kubeproxy
from lab.cluster import Lab, LabError, Node, Pod, leftovers, scripts_dir
from lab.netns import Netns
from lab.router import NODES_ASN, ROUTER_ASN, BirdRouter
from lab.speakers import poll
from lab.traffic import ping, start_name_server, tcp_read, tcp_source_seen

L2_POOL = "10.99.0.200-10.99.0.209"  # on the underlay segment: answered by ARP
BGP_POOL = "10.77.77.0/28"  # elsewhere: reached through the router
SERVICE_CIDR = "10.96.0.0/16"  # the ClusterIPs (an API server's --service-cluster-ip-range)
SERVICES = {  # name: (pool, ClusterIP, NodePort)
    "web-l2": ("l2-pool", "10.96.0.20", 30080),
    "web-bgp": ("bgp-pool", "10.96.0.21", 30081),
}
SERVICE_PORT = 80
POD_PORT = 8080
KEPT = Path("/var/tmp/skein-lab/demo")  # where a lab left running (--keep) is described


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


def cluster_objects(pods: list[Pod] | None = None) -> list[dict[str, Any]]:
    """Pools, advertisements, the BGP peer and two Services, as a MetalLB user writes
    them; the Services' ClusterIPs and NodePorts and the ServiceCIDR as the API server
    would fill them in, and, once there are pods, the EndpointSlices the
    EndpointSlice controller would write (each node's first pod serves both)."""
    meta = {"namespace": "metallb-system"}

    def service(name: str, pool: str, cluster_ip: str, node_port: int) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default",
                             "annotations": {"metallb.universe.tf/address-pool": pool}},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                         "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                         "ports": [{"name": "http", "port": SERVICE_PORT,
                                    "targetPort": POD_PORT, "nodePort": node_port,
                                    "protocol": "TCP"}]}}

    def endpoints(name: str) -> dict[str, Any]:
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-lab", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [p.address()], "nodeName": p.node.name,
                               "conditions": {"ready": True}}
                              for p in pods or () if p.name == "p1"],
                "ports": [{"name": "http", "port": POD_PORT, "protocol": "TCP"}]}

    objects = [
        {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
         "metadata": {"name": "kubernetes"}, "spec": {"cidrs": [SERVICE_CIDR]}},
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
    ]
    objects += [service(name, pool, ip, port) for name, (pool, ip, port) in SERVICES.items()]
    if pods:
        objects += [endpoints(name) for name in SERVICES]
    return objects


def service_ports(lab: Lab, addresses: dict[str, str]) -> list[kubeproxy.ServicePort]:
    """What kube-proxy makes of the two Services (every node's p1 an endpoint)."""
    endpoints = tuple((n.pods["p1"].address(), n.name) for n in lab.nodes.values())
    return [kubeproxy.ServicePort("default", name, "http", SERVICE_PORT, POD_PORT, ip, port,
                                  (addresses[name],), endpoints)
            for name, (_, ip, port) in SERVICES.items()]


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


def run_demo(report_path: str | None, diagram_path: str | None, pods_per_node: int,
             keep: bool = False) -> int:
    progress = Progress(total=11)
    report: dict[str, Any] = {}
    if keep:
        kept = kept_lab()
        if kept is not None:
            raise LabError(f"a demo lab kept earlier still runs (tag {kept['tag']}); "
                           "`skein-lab down` removes it")
        shutil.rmtree(KEPT, ignore_errors=True)
        KEPT.mkdir(parents=True)
    lab = Lab(nodes=3, workdir=str(KEPT) if keep else None)
    kept_ok = False
    try:
        lab.start()
        if keep:
            remember(lab)
        with progress.step(f"lab {lab.tag}: underlay bridge and 3 node namespaces"):
            pass  # built by Lab.start
        with progress.step("BIRD router (AS 65112) and a client behind it"):
            router = BirdRouter(lab)
            router.start()
            client = router.add_client()
            if keep:
                remember(lab)
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
                    if keep:
                        remember(lab)
            lab.write_manifests(extra=cluster_objects(pods))
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
        with progress.step("kube-proxy's rules on every node (ClusterIP, NodePort, LB)"):
            for node in lab.nodes.values():
                kubeproxy.program(node, service_ports(lab, addresses))
        with progress.step("waiting for BGP sessions and routes on the router"):
            poll(lambda: router.established() >= 3, 30, "3 BGP sessions at BIRD")
            poll(lambda: len(bgp_next_hops(lab, router, addresses["web-bgp"])) == 3, 30,
                 "an ECMP route over 3 nodes for web-bgp")
        with progress.step("pod to pod across nodes (ping and TCP, source address kept)"):
            report["pod_to_pod"] = pod_matrix(pods)
        with progress.step("a pod to each ClusterIP, the client to each NodePort"):
            report["cluster_ips"] = cluster_ip_rows(lab)
            report["node_ports"] = node_port_rows(lab, client)
        with progress.step("client to each LoadBalancer address through the router"):
            report["services"] = service_rows(lab, router, client, addresses)
            report["bird_routes"] = router.birdc("show route")
        report["pods"] = [{"node": p.node.name, "pod": p.name, "ip": p.address(),
                           "veth": p.result["interfaces"][1]["name"]} for p in pods]
        if diagram_path:
            from lab.status import router_routes, write_lab_diagram
            from speaker.status.model import Client, to_json

            shown = write_lab_diagram(
                lab, diagram_path,
                clients=[Client("client (outside the cluster)", "10.98.0.2",
                                via_router=router.ip, netns=client.name)],
                routers=[router_routes(router.ns, router.ip, f"BIRD (AS {ROUTER_ASN})")])
            report["diagram"] = diagram_path
            report["status"] = to_json(shown)  # what the picture shows
        tag = lab.tag
        kept_ok = keep
        if keep:
            remember(lab, client=client, router=router, addresses=addresses)
    except BaseException:
        # Interrupted or failed: nothing half-built is left behind, kept or not.
        lab.close()
        if keep:
            shutil.rmtree(KEPT, ignore_errors=True)
        raise
    if not kept_ok:
        lab.close()
    report["kept"] = kept_ok
    report["leftover_namespaces"] = [] if kept_ok else leftovers(tag)
    print_report(report)
    if kept_ok:
        print(explore_text())
    if report_path:
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    ok = (all(r["ok"] for r in report["pod_to_pod"])
          and all(r["ok"] for r in report["services"])
          and all(r["ok"] for r in report["cluster_ips"] + report["node_ports"])
          and not report["leftover_namespaces"])
    return 0 if ok else 1


def cluster_ip_rows(lab: Lab) -> list[dict[str, Any]]:
    """From node1's p2 (no endpoint itself) to each ClusterIP: kube-proxy picks any
    node's p1."""
    pod = lab.nodes["node1"].pods.get("p2") or lab.nodes["node1"].pods["p1"]
    rows = []
    for name, (_, ip, _) in SERVICES.items():
        answer = poll(functools.partial(tcp_read, pod.ns, ip, SERVICE_PORT), 20,
                      f"node1/{pod.name} to reach {name} at {ip}")
        rows.append({"service": name, "from": f"node1/{pod.name}", "address": ip,
                     "answered_by": answer, "ok": bool(answer)})
    return rows


def node_port_rows(lab: Lab, client: Netns) -> list[dict[str, Any]]:
    """From the client to each NodePort on node2's uplink: externalTrafficPolicy Local,
    so node2's own p1 answers."""
    node = lab.nodes["node2"]
    rows = []
    for name, (_, _, port) in SERVICES.items():
        answer = poll(functools.partial(tcp_read, client, node.underlay_ip, port), 20,
                      f"the client to reach {name} at {node.underlay_ip}:{port}")
        rows.append({"service": name, "address": f"{node.underlay_ip}:{port}",
                     "answered_by": answer, "ok": bool(answer)})
    return rows


# -- a lab left running (--keep) ------------------------------------------------------------

def remember(lab: Lab, client: Netns | None = None, router: BirdRouter | None = None,
             addresses: dict[str, str] | None = None) -> None:
    """Write what the kept lab is made of (before each thing is made, so that `skein-lab
    down` finds everything also after a failure) and the env file to explore it."""
    names = [lab.underlay.name, *(n.ns.name for n in lab.nodes.values()),
             *(p.ns.name for n in lab.nodes.values() for p in n.pods.values()),
             *(ns.name for ns in lab.extra_ns)]
    state = {"tag": lab.tag, "workdir": lab.workdir, "netns": names,
             "manifests": lab.manifests_path, "addresses": addresses or {}}
    write_atomically(KEPT / "lab.json", json.dumps(state, indent=2) + "\n")
    env = {
        "LAB_TAG": lab.tag,
        "LAB_MANIFESTS": lab.manifests_path,
        "LAB_CNI_CONF_DIR": os.path.join(lab.workdir, "{node}", "net.d"),
        "NODES": " ".join(lab.nodes),
        "NODE_NETNS": " ".join(n.ns.name for n in lab.nodes.values()),
        "CLIENT_NETNS": client.name if client else "",
        "ROUTER_NETNS": router.ns.name if router else "",
        "BIRD_SOCKET": router.control if router else "",
        "SKEINCTL": os.path.join(scripts_dir(), "skeinctl"),
        **{f"LB_{k.upper().replace('-', '_')}": v for k, v in (addresses or {}).items()},
    }
    (KEPT / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()),
                              encoding="utf-8")


def kept_lab() -> dict[str, Any] | None:
    """The kept lab's description, None when there is none (or it is gone)."""
    try:
        state: dict[str, Any] = json.loads((KEPT / "lab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if any(Netns(n).exists() for n in state.get("netns", [])) else None


def explore_text() -> str:
    """What to type to look at the kept lab, and to remove it."""
    ctl = '"$SKEINCTL"'
    lab = '--lab-manifests "$LAB_MANIFESTS"'
    return f"""
The lab keeps running.  Explore it (as root; traffic only from a lab namespace):
  . {KEPT}/env
  {ctl} status {lab}            # every node: pods, tunnels, Services, speaker
  {ctl} status -o wide {lab}    # and MACs, container IDs, every kube-proxy rule
  {ctl} diagram {lab} lab.svg   # the picture, drawn again from the live kernel
  ip netns exec "$CLIENT_NETNS" bash -c 'cat < /dev/tcp/$LB_WEB_BGP/80'   # which pod answers
  ip netns exec "$ROUTER_NETNS" birdc -s "$BIRD_SOCKET" show route
  set -- $NODE_NETNS; ip netns exec "$1" {ctl} --socket {KEPT}/node1/speaker.sock peers
Remove it:
  skein-lab down
"""


def down(log: Any = print) -> int:
    """Remove the kept lab: its namespaces (and every process in them) and files."""
    state = None
    try:
        state = json.loads((KEPT / "lab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if state is None:
        log(f"no demo lab kept in {KEPT}")
        return 0
    for name in reversed(state.get("netns", [])):
        Netns(name).delete()
    left = leftovers(state["tag"])
    for name in left:
        Netns(name).delete()
    left = leftovers(state["tag"])
    if left:
        log(f"namespaces that remain: {', '.join(left)}")
        return 1
    shutil.rmtree(KEPT, ignore_errors=True)
    log(f"demo lab {state['tag']} removed")
    return 0


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
    print("\nA pod to each ClusterIP (kube-proxy picks any endpoint)")
    for r in report.get("cluster_ips", []):
        print(f"  {r['service']:8} {r['from']:9} -> {r['address']:13} answered by "
              f"{r['answered_by'] or 'NO ANSWER'}")
    print("\nClient to each NodePort (externalTrafficPolicy Local: the node's own pod)")
    for r in report.get("node_ports", []):
        print(f"  {r['service']:8} {r['address']:17} answered by "
              f"{r['answered_by'] or 'NO ANSWER'}")
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
    if "leftover_namespaces" in report and not report.get("kept"):
        print(f"\nCleaned up; leftover namespaces: {report['leftover_namespaces'] or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=2, help="pods per node (default 2)")
    parser.add_argument("--report", help="also write the results as JSON to this file")
    parser.add_argument("--diagram", default="skein-lab.svg",
                        help="write the picture here (.svg, .png or .dot; "
                        "default skein-lab.svg; '' for none)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the lab running to explore it (prints how); "
                        "`skein-lab down` removes it")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces)", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C: the lab is removed, kept or not.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        return run_demo(args.report, args.diagram or None, args.pods, keep=args.keep)
    except (LabError, subprocess.CalledProcessError) as exc:
        print(f"\nlab failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
