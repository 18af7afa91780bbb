"""Item 7: a foreign claim to a LoadBalancer address is answered at once,
logged once with the foreign MAC, counted, and shown by `skeinctl events`.

Before: a gratuitous ARP (or an unsolicited Neighbor Advertisement) from
another MAC moved the clients' neighbour entries to it until the speaker's
next periodic announcement (up to --garp-refresh, 10 s), and nothing said so:
the speaker's socket filter did not even let ARP replies and advertisements in.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.cluster import Lab, Node
from lab.netns import Netns
from lab.speakers import (
    address_pool,
    arping_macs,
    l2_advertisement,
    lb_service,
    ndisc_macs,
    neighbour_mac,
    node_mac,
    poll,
    speaker_log,
    start_speaker,
)
from lab.traffic import ping
from speaker.l2.announcer import DEFAULT_BURST
from tests.api.test_api_lab import _lines, _next_event, metric, skeinctl_argv

LB4, LB6 = "10.99.0.200", "fd99::200"
ATTACKER_MAC = "02:de:ad:00:00:01"
METRICS_PORT = 9472  # tests.api.test_api_lab.scrape's
BACK_WITHIN = 5.0

# Sent from the attacker's namespace: gratuitous ARPs (both forms) or an
# unsolicited Override NA claiming the address for ATTACKER_MAC.
_CLAIM = r"""
import ipaddress, socket, sys
sys.path.insert(0, sys.argv[1])
from speaker.l2 import frames
from foundation.netlink.mac import mac_bytes
mac, address = mac_bytes(sys.argv[2]), ipaddress.ip_address(sys.argv[3])
count = int(sys.argv[4])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(("eth0", 0))
for _ in range(count):
    if address.version == 4:
        for frame in frames.gratuitous_arps(mac, address.packed):
            sock.send(frame)
    else:
        sock.send(frames.unsolicited_advertisement(mac, address.packed))
"""


class Segment:
    def __init__(self, lab: Lab, client: Netns, attacker: Netns) -> None:
        self.lab, self.client, self.attacker = lab, client, attacker
        self.node = lab.nodes["node1"]

    def claim(self, address: str, count: int = 1) -> None:
        root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
        self.attacker.run(sys.executable, "-c", _CLAIM, root, ATTACKER_MAC, address, str(count))

    def after_the_takeover_burst(self) -> None:
        """Past the speaker's own gratuitous announcements after it took the
        address (--garp-burst, up to 2 s): from here only the periodic refresh
        (60 s here, 10 s by default) would have moved a neighbour back before."""
        time.sleep(DEFAULT_BURST[-1] + 0.5)

    def reach(self, address: str) -> bool:
        """A ping from the client: answered by the node (the address is on its
        lo), through the client's neighbour entry for it."""
        return ping(self.client, address)

    def ctl(self, *args: str) -> list[str]:
        return skeinctl_argv("--socket", f"{self.node.workdir}/speaker.sock", *args)


@pytest.fixture
def segment(request: pytest.FixtureRequest) -> Iterator[Segment]:
    with Lab(nodes=1) as lab:
        client = lab.add_client("cl", 100, address6="fd99::100/64")
        attacker = lab.add_client("at", 66)
        attacker.ip("link", "set", "eth0", "address", ATTACKER_MAC)
        node = lab.nodes["node1"]
        node.ns.ip("-6", "addr", "add", "fd99::11/64", "dev", "eth0", "nodad")
        lab.write_manifests(extra=[address_pool("lab", "10.99.0.200-10.99.0.210", "fd99::200/124"),
                                   l2_advertisement("l2", pools=["lab"]),
                                   lb_service("web", LB4, LB6)])
        # The periodic refresh far away: only an answer to the claim can move
        # the client back within the test's bound.
        start_speaker(lab, node, "--assign-to-lo", "--garp-refresh", "60", "--metrics-address",
                      f"127.0.0.1:{METRICS_PORT}")
        yield Segment(lab, client, attacker)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(speaker_log(node), file=sys.stderr)


def scrape(node: Node) -> str:
    code = ("import sys, urllib.request\n"
            f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics',"
            " timeout=5).read().decode())\n")
    return node.ns.run(sys.executable, "-c", code).stdout


def wait_back(segment: Segment, address: str, within: float) -> None:
    """Until the client's neighbour entry for `address` is the node's again
    (polled every 20 ms); fails after `within` seconds."""
    ours = node_mac(segment.node)
    poll(lambda: neighbour_mac(segment.client, address) == ours, within,
         f"the client's entry for {address} to come back", interval=0.02)


def test_a_gratuitous_arp_from_a_foreign_mac_is_answered_at_once(segment: Segment) -> None:
    node, ours = segment.node, node_mac(segment.node)
    assert set(poll(lambda: arping_macs(segment.client, LB4), 20, "an owner")) == {ours}
    segment.after_the_takeover_burst()
    assert segment.reach(LB4)
    assert neighbour_mac(segment.client, LB4) == ours
    events = node.ns.popen(*segment.ctl("-o", "json", "events", "--no-initial"),
                           stdout=subprocess.PIPE, text=True)
    segment.lab.processes.append(events)
    lines = _lines(events)
    assert _next_event(lines, "the stream to start")["kind"] == "synced"

    segment.claim(LB4)
    # Before: the attacker held the entry until the next refresh.  The answer
    # takes milliseconds; the bound leaves room for a loaded machine.
    wait_back(segment, LB4, BACK_WITHIN)
    assert segment.reach(LB4)
    event: dict[str, Any] = _next_event(lines, "the conflict event")
    assert {k: event.get(k) for k in ("kind", "address", "mode", "interface", "mac", "node")} == {
        "kind": "conflict", "address": LB4, "mode": "l2", "interface": "eth0",
        "mac": ATTACKER_MAC, "node": "node1"}
    assert event["detail"] == "gratuitous ARP"

    segment.claim(LB4, count=3)  # again: answered again, counted, not logged again
    wait_back(segment, LB4, BACK_WITHIN)
    log = speaker_log(node)
    lines_logged = [line for line in log.splitlines() if "address conflict" in line]
    assert len(lines_logged) == 1, lines_logged
    assert f"{LB4} claimed by {ATTACKER_MAC} (gratuitous ARP)" in lines_logged[0]
    counted = poll(lambda: metric(scrape(node), "skein_speaker_l2_conflicts_total",
                                  interface="eth0", family="ipv4"), 10, "the metric")
    assert counted >= 4 * 2  # each claim is two frames (request and reply forms)
    events.terminate()


def test_an_unsolicited_neighbor_advertisement_is_answered_at_once(segment: Segment) -> None:
    ours = node_mac(segment.node)
    assert set(poll(lambda: ndisc_macs(segment.client, LB6), 20, "an owner")) == {ours}
    segment.after_the_takeover_burst()
    assert segment.reach(LB6)
    assert neighbour_mac(segment.client, LB6) == ours
    segment.claim(LB6)
    wait_back(segment, LB6, BACK_WITHIN)
    line = poll(lambda: next((x for x in speaker_log(segment.node).splitlines()
                              if "address conflict" in x), None), 10, "the log line")
    assert f"{LB6} claimed by {ATTACKER_MAC} (Neighbor Advertisement)" in line
    assert segment.reach(LB6)
