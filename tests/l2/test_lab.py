"""skein-speaker in a three-node netns lab, seen from a client on the same segment:
who answers ARP/NDP, what the client's neighbour table holds, whether TCP to the
LoadBalancer address reaches a server, and what happens when the owner dies.

Every speaker runs inside its node namespace with `--assign-to-lo` (there is no
kube-proxy in the lab); each node runs a TCP server that answers with the
node's name, so a connection says which node the address led to.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.cluster import Lab, LabError, Node
from lab.netns import Netns
from lab.speakers import (
    address_pool,
    arping_macs,
    endpoint_slice,
    l2_advertisement,
    lb_service,
    ndisc_macs,
    neighbour_mac,
    node_mac,
    poll,
    speaker_log,
    start_name_server,
    start_speaker,
    stop_speaker,
    tcp_name,
)

LB4, LB6, UNUSED = "10.99.0.200", "fd99::200", "10.99.0.205"
POOLS = [address_pool("lab", "10.99.0.200-10.99.0.215", "fd99::200/124"),
         l2_advertisement("l2", pools=["lab"])]


class Cluster:
    def __init__(self, lab: Lab, client: Netns) -> None:
        self.lab, self.client = lab, client
        self.speakers: dict[str, Any] = {}
        self.macs = {node_mac(n): n for n in lab.nodes.values()}

    def start(self, *extra: str) -> None:
        """Start every speaker and wait until each has heard every other: a test
        that stops an owner before then tests start-up, not failover."""
        for node in self.lab.nodes.values():
            self.speakers[node.name] = start_speaker(self.lab, node, "--assign-to-lo", *extra)
        names = list(self.lab.nodes)

        def meshed() -> bool:
            return all(f"peer {other} is alive" in speaker_log(self.lab.nodes[name])
                       for name in names for other in names if other != name)

        poll(meshed, 60, "every speaker to hear every other")

    def single_owner(self, address: str) -> Node:
        """The one node answering ARP (or NDP) for `address`; fails if none, or
        if several keep answering.  Speakers started together may both answer
        for the few milliseconds before each has heard of the other (a fresh
        speaker counts only the peers it has heard from), so one lookup with
        two MACs is a convergence still going on, not yet a failure."""
        lookup = ndisc_macs if ":" in address else arping_macs
        seen: list[list[str]] = []

        def settled() -> list[str] | None:
            macs = lookup(self.client, address)
            seen.append(macs)
            return macs if macs and len(set(macs)) == 1 else None

        try:
            macs = poll(settled, 20, f"a single node answering for {address}")
        except LabError:
            pytest.fail(f"{address} never had a single owner; last answers: {seen[-3:]}")
        return self.macs[macs[0]]

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{speaker_log(n)}" for n in self.lab.nodes.values())


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with Lab(nodes=3) as lab:
        client = lab.add_client("cl", 100, address6="fd99::100/64")
        for i, node in enumerate(lab.nodes.values(), start=1):
            node.ns.ip("-6", "addr", "add", f"fd99::1{i}/64", "dev", "eth0", "nodad")
            start_name_server(lab, node)
        c = Cluster(lab, client)
        yield c
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.logs(), file=sys.stderr)


def test_one_owner_answers_and_takes_over_after_kill(cluster: Cluster) -> None:
    cluster.lab.write_manifests(extra=[*POOLS, lb_service("web", LB4)])
    cluster.start()
    owner = cluster.single_owner(LB4)
    assert tcp_name(cluster.client, LB4) == owner.name
    assert neighbour_mac(cluster.client, LB4) == node_mac(owner)
    assert arping_macs(cluster.client, UNUSED, count=1, wait=1) == []  # nobody owns it

    stop_speaker(cluster.speakers[owner.name], kill=True)
    successor = poll(lambda: tcp_name(cluster.client, LB4) not in (None, owner.name)
                     and tcp_name(cluster.client, LB4), 20, "a new owner serving TCP")
    new = cluster.lab.nodes[successor]
    # The gratuitous ARP replaced the client's entry: nobody flushed it.
    poll(lambda: neighbour_mac(cluster.client, LB4) == node_mac(new), 10,
         "the client's neighbour entry to move to the new owner")
    assert cluster.single_owner(LB4) is new


def test_sigterm_hands_over_at_once(cluster: Cluster) -> None:
    cluster.lab.write_manifests(extra=[*POOLS, lb_service("web", LB4)])
    cluster.start()
    owner = cluster.single_owner(LB4)
    assert tcp_name(cluster.client, LB4) == owner.name  # the client now has a neighbour entry
    assert stop_speaker(cluster.speakers[owner.name]) == 0
    assert "stopped announcing 10.99.0.200" in speaker_log(owner)
    new = poll(lambda: (m := neighbour_mac(cluster.client, LB4)) != node_mac(owner) and m, 10,
               "the client's neighbour entry to move")
    successor = cluster.macs[new]
    # Re-elected on the "leaving" message, not on a heartbeat timeout.
    assert f"peer {owner.name} is leaving" in speaker_log(successor)
    assert "considered dead" not in speaker_log(successor)
    assert tcp_name(cluster.client, LB4) == successor.name


def test_ipv6_neighbor_discovery_and_takeover(cluster: Cluster) -> None:
    cluster.lab.write_manifests(extra=[*POOLS, lb_service("web6", LB6)])
    cluster.start()
    owner = cluster.single_owner(LB6)
    assert tcp_name(cluster.client, LB6) == owner.name
    assert neighbour_mac(cluster.client, LB6) == node_mac(owner)

    stop_speaker(cluster.speakers[owner.name], kill=True)
    # The unsolicited Neighbor Advertisement moves the client's existing entry.
    new = poll(lambda: (m := neighbour_mac(cluster.client, LB6)) != node_mac(owner) and m, 20,
               "the client's IPv6 neighbour entry to move")
    assert tcp_name(cluster.client, LB6) == cluster.macs[new].name
    assert cluster.single_owner(LB6) is cluster.macs[new]


def test_local_traffic_policy_only_nodes_with_endpoints_answer(cluster: Cluster) -> None:
    node2, node3 = cluster.lab.nodes["node2"], cluster.lab.nodes["node3"]
    services = [lb_service("local", "10.99.0.201", policy="Local"),
                endpoint_slice("local", ["node2"]), lb_service("cluster", "10.99.0.202")]
    cluster.lab.write_manifests(extra=[*POOLS, *services])
    cluster.start()
    assert cluster.single_owner("10.99.0.201") is node2
    cluster.single_owner("10.99.0.202")
    # The endpoint moves: so does the address.
    services[1] = endpoint_slice("local", ["node3"])
    cluster.lab.write_manifests(extra=[*POOLS, *services])
    poll(lambda: set(arping_macs(cluster.client, "10.99.0.201")) == {node_mac(node3)}, 20,
         "node3 alone to answer for the Local service")


_FLOOD = r"""
import os, random, socket, struct, sys, time
sys.path.insert(0, sys.argv[2])
from speaker.l2 import frames
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
sock.bind(("eth0", 0))
rng = random.Random(7)
fake = bytes.fromhex("02dead000001")
lb = socket.inet_aton(sys.argv[1])
# Malformed first: random tails behind ARP and IPv6 ethertypes, truncations.
for i in range(3000):
    ethertype = (b"\x08\x06", b"\x86\xdd")[i % 2]
    body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
    sock.send(b"\xff" * 6 + fake + ethertype + body)
good = frames.arp_request(fake, socket.inet_aton("10.99.0.66"), lb)
for cut in range(len(good)):
    sock.send(good[:cut].ljust(14, b"\0"))
sock.setblocking(False)
start = time.monotonic()
replies = 0
for i in range(20000):
    sock.send(good)
    try:
        while True:
            frame = sock.recv(2048)
            replies += frame[:6] == fake and frame[20:22] == b"\x00\x02"
    except BlockingIOError:
        pass
elapsed = time.monotonic() - start
end = time.monotonic() + 0.5
while time.monotonic() < end:
    try:
        frame = sock.recv(2048)
        replies += frame[:6] == fake and frame[20:22] == b"\x00\x02"
    except BlockingIOError:
        time.sleep(0.01)
print(replies, elapsed + 0.5)
"""


def test_malformed_frames_and_floods(cluster: Cluster) -> None:
    cluster.lab.write_manifests(extra=[*POOLS, lb_service("web", LB4)])
    cluster.start()
    owner = cluster.single_owner(LB4)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = cluster.client.run(sys.executable, "-c", _FLOOD, LB4, root, timeout=120).stdout
    replies, seconds = int(out.split()[0]), float(out.split()[1])
    # The responder's per-source bucket: a burst of 20, then 50 a second.
    assert replies <= 20 + 50 * seconds + 5, (replies, seconds)
    assert replies >= 1  # it was answered before the limit, so the flood reached it
    assert all(p.poll() is None for p in cluster.speakers.values()), cluster.logs()
    assert "rate-limiting" in speaker_log(owner)
    # A real client is still answered, by the same single owner.
    assert cluster.single_owner(LB4) is owner
    assert tcp_name(cluster.client, LB4) == owner.name


def _partition(node: Node, on: bool) -> None:
    """Cut `node`'s speaker off from the others' heartbeats (UDP 7946 both ways),
    while it still reaches the segment and the client; or heal that."""
    if on:
        node.ns.run("nft", "-f", "-", input=(
            "table inet skpart {\n"
            "  chain in { type filter hook input priority 0; udp dport 7946 drop; }\n"
            "  chain out { type filter hook output priority 0; udp dport 7946 drop; }\n"
            "}\n"))
    else:
        node.ns.run("nft", "delete", "table", "inet", "skpart")


def test_healed_partition_leaves_one_owner_and_moves_the_client(cluster: Cluster) -> None:
    """During a partition both sides own the address (each thinks the other is
    dead); once it heals, one owner remains, and the client's neighbour entry
    follows it at once (the winner reasserts), not after its cache ages out."""
    cluster.lab.write_manifests(extra=[*POOLS, lb_service("web", LB4)])
    cluster.start()
    owner = cluster.single_owner(LB4)
    assert tcp_name(cluster.client, LB4) == owner.name
    _partition(owner, True)
    # The others elect one of themselves; its gratuitous ARP moves the client.
    other = poll(lambda: (m := neighbour_mac(cluster.client, LB4)) != node_mac(owner) and m,
                 10, "the client's neighbour entry to move to the other side")
    assert cluster.macs[other] is not owner
    assert f"peer {owner.name}" in speaker_log(cluster.macs[other])  # considered dead
    # A partition that lasts: the neighbour's locktime (1 s) has passed, so
    # only a new ARP from the owner could move the client back.
    time.sleep(2)
    assert neighbour_mac(cluster.client, LB4) == other
    _partition(owner, False)
    # The same members elect the same owner again (the election is a hash, no
    # history): the other side steps down...
    poll(lambda: "stopped announcing 10.99.0.200" in speaker_log(cluster.macs[other]), 10,
         "the other side to step down")
    # ...and the client, which followed the other side, is moved back by the
    # owner's reassertion alone: nothing here sends it an ARP request meanwhile
    # (a reply to one would move the entry too), and its cache would keep the
    # stale MAC for tens of seconds.
    poll(lambda: neighbour_mac(cluster.client, LB4) == node_mac(owner), 5,
         "the client's neighbour entry to move back to the owner")
    assert tcp_name(cluster.client, LB4) == owner.name
    # Still one owner a while later: every broadcast probe answered by it alone.
    answers = arping_macs(cluster.client, LB4)
    assert answers and set(answers) == {node_mac(owner)}, answers
