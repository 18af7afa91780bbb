"""The BGP lab: three node namespaces running `skein-speaker` (the daemon, not the
BGP runner), a router namespace on their segment running BIRD 2 or GoBGP, and a
client namespace behind the router that knows nothing but its default route.

    client (172.31.0.2, fd98::2) ─veth─ router (10.99.0.1, fd99::1; 172.31.0.1)
                                          │ underlay bridge (in its own netns)
                      node1 10.99.0.11 ── node2 10.99.0.12 ── node3 10.99.0.13

The nodes' default routes already point to the router (10.99.0.1, fd99::1), so
replies from a LoadBalancer address go back through it.  There is no kube-proxy:
each speaker runs with `--assign-to-lo`, so every node that announces an address
over BGP also holds it on `lo` (the same mechanism as in L2 mode, but on every
announcing node, since BGP gives the router one path per node), and each node
runs a TCP server that answers with the node's name.  The router forwards; BIRD
installs the learnt routes into its kernel table with `merge paths on`, so an
address announced by three nodes becomes one route with three next hops.

Everything lives in the lab's tagged namespaces and is removed by `Lab.close()`,
on failure too: no BGP, ARP or route outside them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from lab.cluster import Lab
from lab.netns import Netns, veth_between
from lab.speakers import (
    address_pool,
    bgp_advertisement,
    bgp_peer,
    poll,
    speaker_log,
    start_name_server,
    start_speaker,
    stop_speaker,
)
from tests.bgp import lab as interop

ROUTER_AS = 4200000000  # 4-octet, on both routers
NODE_AS = 4200000001
ROUTER4, ROUTER6 = "10.99.0.1", "fd99::1"
CLIENT4, CLIENT6 = "172.31.0.2", "fd98::2"
POOL4, POOL6 = "198.51.100.0/26", "2001:db8:99::/120"
LB4, LB6 = "198.51.100.10", "2001:db8:99::10"


def node_v6(index: int) -> str:
    return f"fd99::1{index}"


def node_doc(lab: Lab, name: str) -> dict[str, Any]:
    """The lab's Node object with an IPv6 InternalIP too (the next hop of IPv6 routes
    sent over the IPv4 session)."""
    node = lab.nodes[name]
    doc = lab.node_object(node)
    index = list(lab.nodes).index(name) + 1
    doc["status"]["addresses"].insert(1, {"type": "InternalIP", "address": node_v6(index)})
    return doc


def bird_config(extra: str = "") -> str:
    """BIRD as a passive router for the whole node range, IPv4 and IPv6 routes on the
    one IPv4 session (multiprotocol), both installed into the kernel with ECMP."""
    return f"""
log stderr all;
router id {ROUTER4};
protocol device {{ }}
protocol kernel k4 {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol kernel k6 {{ ipv6 {{ import none; export all; }}; merge paths on; }}
protocol bgp nodes {{
  local {ROUTER4} as {ROUTER_AS}; neighbor range 10.99.0.0/24 as {NODE_AS};
  ipv4 {{ import all; export none; }};
  ipv6 {{ import all; export none; }};
}}
{extra}
"""


def dad_done(ns: Netns) -> bool:
    return not ns.ip("-6", "addr", "show", "tentative").stdout.strip()


@dataclass
class BgpLab:
    lab: Lab
    router: Netns
    client: Netns
    speakers: dict[str, Any] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interop(self) -> interop.Lab:
        """The same namespaces in tests.bgp's shape, for its BIRD/GoBGP helpers;
        their processes join the lab's, so Lab.close() stops them."""
        return interop.Lab(self.router, [n.ns for n in self.lab.nodes.values()],
                           Path(self.lab.workdir), self.lab.processes)

    def write(self, *objects: dict[str, Any]) -> float:
        """Replace the manifests with the nodes plus `objects`; returns the time written."""
        self.objects = list(objects)
        self.lab.write_manifests(nodes=[], extra=[
            *(node_doc(self.lab, n) for n in self.lab.nodes), *objects])
        return time.monotonic()

    def start(self, name: str, *extra: str) -> None:
        self.speakers[name] = start_speaker(self.lab, self.lab.nodes[name], "--assign-to-lo",
                                            *extra)

    def start_all(self, *extra: str) -> None:
        for name in self.lab.nodes:
            self.start(name, *extra)

    def stop(self, name: str) -> int:
        return stop_speaker(self.speakers.pop(name))

    def log(self, name: str) -> str:
        return speaker_log(self.lab.nodes[name])

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)}" for n in self.lab.nodes)


def base_objects(*services: dict[str, Any], **advertisement: Any) -> list[dict[str, Any]]:
    return [address_pool("bgp", POOL4, POOL6),
            bgp_peer("router", ROUTER4, ROUTER_AS, NODE_AS, holdTime="30s",
                     dualStackAddressFamily=True),
            bgp_advertisement("bgp", ["bgp"], **advertisement), *services]


@contextmanager
def bgp_lab() -> Iterator[BgpLab]:
    with Lab(nodes=3) as lab:
        router = lab.add_client("r", 1, address6=f"{ROUTER6}/64")
        router.sysctl("net.ipv4.ip_forward", "1")
        router.sysctl("net.ipv6.conf.all.forwarding", "1")
        client = lab.add_namespace("cl")
        veth_between(router, "rcl", client, "eth0")
        router.ip("addr", "add", "172.31.0.1/24", "dev", "rcl")
        router.ip("-6", "addr", "add", "fd98::1/64", "dev", "rcl", "nodad")
        client.ip("addr", "add", f"{CLIENT4}/24", "dev", "eth0")
        client.ip("-6", "addr", "add", f"{CLIENT6}/64", "dev", "eth0", "nodad")
        client.ip("route", "add", "default", "via", "172.31.0.1")
        client.ip("-6", "route", "add", "default", "via", "fd98::1")
        for i, node in enumerate(lab.nodes.values(), start=1):
            node.ns.ip("-6", "addr", "add", f"{node_v6(i)}/64", "dev", "eth0", "nodad")
            node.ns.ip("-6", "route", "add", "default", "via", ROUTER6)
            start_name_server(lab, node)
        # IPv6 through a link whose link-local address is still in duplicate address
        # detection fails at once (seen as a refused first connection): wait it out.
        for ns in (router, client, *(n.ns for n in lab.nodes.values())):
            poll(partial(dad_done, ns), 10, f"IPv6 DAD to finish in {ns.name}")
        yield BgpLab(lab, router, client)


# --- what the routers see -------------------------------------------------------------------

def bird_next_hops(bird: interop.Bird, prefix: str) -> set[str]:
    """Next hops BIRD holds for `prefix` (one per path), from `show route all`."""
    text = bird.birdc(f"show route for {prefix} all")
    if "Network not found" in text:
        return set()
    return set(re.findall(r"BGP\.next_hop: (\S+)", text))


def neighbor_error(bird: interop.Bird, neighbor: str) -> str:
    """BIRD's "Last error" of the protocol it spawned for `neighbor`."""
    protocol = ""
    for block in bird.birdc("show protocols all").split("\n\n"):
        if f"Neighbor address: {neighbor}" in block:
            protocol = block
    match = re.search(r"Last error:\s+(.*)", protocol)
    return match.group(1).strip() if match else ""


def log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def logged_at(text: str, needle: str) -> float:
    """Wall-clock time of the last log line containing `needle` (logging's asctime)."""
    line = log_lines(text, needle)[-1]
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()
