"""The lab's LoadBalancer side: MetalLB-shaped objects, speakers in node namespaces,
and what a client on the segment sees (arping, ndisc6, its neighbour table).

Everything runs inside the lab's namespaces: speakers through
`ip netns exec NODE skein-speaker`, clients through `Lab.add_client`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

from lab import traffic
from lab.cluster import Lab, LabError, Node, scripts_dir
from lab.netns import Netns

_MAC = re.compile(r"([0-9a-f]{2}(?::[0-9a-f]{2}){5})", re.I)


def address_pool(name: str, *addresses: str) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": list(addresses)}}


def l2_advertisement(name: str, pools: Iterable[str] = (), interfaces: Iterable[str] = (),
                     node_selectors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if pools:
        spec["ipAddressPools"] = list(pools)
    if interfaces:
        spec["interfaces"] = list(interfaces)
    if node_selectors:
        spec["nodeSelectors"] = node_selectors
    return {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec}


def bgp_peer(name: str, peer_address: str, peer_asn: int | None, my_asn: int, *,
             version: str = "v1beta2", node_selectors: list[dict[str, Any]] | None = None,
             **spec: Any) -> dict[str, Any]:
    """A MetalLB BGPPeer; other spec fields (holdTime, routerID, password, ...) as keywords
    spelled as in the CRD."""
    body: dict[str, Any] = {"myASN": my_asn, "peerAddress": peer_address, **spec}
    if peer_asn is not None:  # None: spec.dynamicASN instead
        body["peerASN"] = peer_asn
    if node_selectors:
        body["nodeSelectors"] = node_selectors
    return {"apiVersion": f"metallb.io/{version}", "kind": "BGPPeer",
            "metadata": {"name": name, "namespace": "metallb-system"}, "spec": body}


def bgp_advertisement(name: str, pools: Iterable[str] = (), *, peers: Iterable[str] = (),
                      communities: Iterable[str] = (),
                      node_selectors: list[dict[str, Any]] | None = None,
                      **spec: Any) -> dict[str, Any]:
    """A MetalLB BGPAdvertisement; aggregationLength, localPref, ... as keywords."""
    body: dict[str, Any] = dict(spec)
    for key, value in (("ipAddressPools", list(pools)), ("peers", list(peers)),
                       ("communities", list(communities)), ("nodeSelectors", node_selectors)):
        if value:
            body[key] = value
    return {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": {"name": name, "namespace": "metallb-system"}, "spec": body}


def calico_bgp_configuration(*, cluster_ips: Iterable[str] = (),
                             external_ips: Iterable[str] = (),
                             load_balancer_ips: Iterable[str] = ()) -> dict[str, Any]:
    """Calico's cluster-wide BGPConfiguration ("default"), projectcalico.org/v3."""
    spec = {key: [{"cidr": c} for c in cidrs] for key, cidrs in (
        ("serviceClusterIPs", cluster_ips), ("serviceExternalIPs", external_ips),
        ("serviceLoadBalancerIPs", load_balancer_ips)) if cidrs}
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
            "metadata": {"name": "default"}, "spec": spec}


def lb_service(name: str, *ips: str, port: int = 8080, policy: str = "Cluster",
               namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                     "ports": [{"port": port, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def endpoint_slice(service: str, nodes: Iterable[str], namespace: str = "default",
                   ready: bool = True) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-1", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [f"10.244.{i}.10"], "nodeName": n,
                           "conditions": {"ready": ready}} for i, n in enumerate(nodes)],
            "ports": [{"port": 8080, "protocol": "TCP"}]}


def speaker_argv(node: Node, lab: Lab, *extra: str) -> list[str]:
    """The speaker's command line; its API socket in the node's workdir unless
    `extra` names one (the default path is one file per machine, not per node)."""
    api = [] if "--api-socket" in extra else [
        "--api-socket", os.path.join(node.workdir, "speaker.sock")]
    return [os.path.join(scripts_dir(), "skein-speaker"), "--node", node.name,
            "--manifests", lab.manifests_path, *api, *extra]


def start_speaker(lab: Lab, node: Node, *extra: str) -> subprocess.Popen[Any]:
    """skein-speaker in `node`'s namespace, logging to <workdir>/speaker.log."""
    return lab.spawn(node.ns, *speaker_argv(node, lab, *extra),
                     log=os.path.join(node.workdir, "speaker.log"))


def stop_speaker(proc: subprocess.Popen[Any], kill: bool = False, timeout: float = 10) -> int:
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    return proc.wait(timeout=timeout)


def speaker_log(node: Node) -> str:
    try:
        with open(os.path.join(node.workdir, "speaker.log"), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def node_mac(node: Node, ifname: str = "eth0") -> str:
    data = json.loads(node.ns.ip("-j", "link", "show", "dev", ifname).stdout)
    return str(data[0]["address"]).lower()


def arping_macs(client: Netns, address: str, count: int = 2, wait: int = 3) -> list[str]:
    """MACs (lowercase, one per reply) answering ARP who-has `address` from `client`."""
    # -b: every probe broadcast, so a second answering node is seen too.
    proc = client.run("arping", "-b", "-c", str(count), "-w", str(wait), "-I", "eth0",
                      address, check=False, timeout=wait + 10)
    return [m.lower() for line in proc.stdout.splitlines() if "reply from" in line
            for m in _MAC.findall(line)]


def ndisc_macs(client: Netns, address: str, tries: int = 2) -> list[str]:
    """MACs in answers to Neighbor Solicitations for `address` (ndisc6, all answers)."""
    proc = client.run("ndisc6", "-m", "-n", "-r", str(tries), "-w", "500", address, "eth0",
                      check=False, timeout=15)
    return [m.lower() for line in proc.stdout.splitlines() if "link-layer address" in line
            for m in _MAC.findall(line)]


def neighbour_mac(client: Netns, address: str) -> str | None:
    """The client's neighbour-table MAC for `address` (None if absent or incomplete)."""
    family = "-6" if ":" in address else "-4"
    data = json.loads(client.ip(family, "-j", "neigh", "show", "to", address).stdout or "[]")
    for entry in data:
        mac = entry.get("lladdr")
        if mac:
            return str(mac).lower()
    return None


def poll(predicate: Callable[[], Any], timeout: float, what: str,
         interval: float = 0.1) -> Any:
    """The first truthy value of `predicate()` within `timeout` seconds; LabError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def start_name_server(lab: Lab, node: Node, port: int = 8080, listen: str = "::") -> None:
    """A TCP server in `node` answering every connection with the node's name
    (dual-stack on `::`, so it serves whichever LoadBalancer address lands there)."""
    serve_name(lab, node.ns, node.name, port, listen)


def serve_name(lab: Lab, ns: Netns, name: str, port: int = 8080, listen: str = "::") -> None:
    """A TCP server in any of the lab's namespaces (a pod's too) answering with
    `name`; stopped with the lab."""
    try:
        lab.processes.append(traffic.start_name_server(ns, name, port, listen))
    except RuntimeError as exc:
        raise LabError(str(exc)) from None


def tcp_name(client: Netns, address: str, port: int = 8080, timeout: float = 3.0) -> str | None:
    """The name served at address:port, or None if no connection within `timeout`."""
    return traffic.tcp_read(client, address, port, timeout)
