"""Our speaker against a real BIRD 2, all inside tagged namespaces.

The router holds the bridge and runs BIRD with a dynamic neighbour range (it stays
passive); three node namespaces run `python -m speaker.bgp.runner`.  Assertions
read BIRD's own view (`birdc`, its log) and the router's kernel routing table.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from tests.bgp.lab import (
    ROUTER_V4,
    ROUTER_V6,
    Bird,
    Lab,
    SpeakerProc,
    bird_config,
    node_v4,
    node_v6,
    speaker_config,
    wait_for,
)

V4_PEER = {"peer_address": ROUTER_V4, "peer_asn": 65112, "my_asn": 64512}
V6_PEER = {"peer_address": ROUTER_V6, "peer_asn": 65112, "my_asn": 64512}


def kernel_next_hops(lab: Lab, prefix: str) -> set[str]:
    """Gateways of the router's kernel route for `prefix` (one, or ECMP nexthops)."""
    family = "-6" if ":" in prefix else "-4"
    routes = json.loads(lab.router.ip(family, "-j", "route", "show", prefix).stdout)
    hops: set[str] = set()
    for route in routes:
        if "gateway" in route:
            hops.add(route["gateway"])
        hops.update(nh["gateway"] for nh in route.get("nexthops", []))
    return hops


def holds_for(seconds: float, probe: Callable[[], bool]) -> None:
    """A negative check: `probe()` must stay true for `seconds` (no speed asserted)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), "condition stopped holding"
        time.sleep(0.2)


def protocol_of(bird: Bird, neighbor: str) -> str:
    """The dynamic protocol BIRD spawned for a neighbour address."""
    text = bird.birdc("show protocols all")
    name = ""
    for line in text.splitlines():
        head = re.match(r"^(\S+)\s+BGP\s", line)
        if head:
            name = head.group(1)
        if f"Neighbor address: {neighbor}" in line and name:
            return name
    return ""


def import_updates(bird: Bird, protocol: str) -> int:
    text = bird.birdc(f"show protocols all {protocol}")
    match = re.search(r"Import updates:\s+(\d+)", text)
    return int(match.group(1)) if match else -1


def test_three_nodes_ecmp_ipv4_ipv6_refresh_withdraw_shutdown(lab: Lab) -> None:
    bird = Bird(lab, bird_config(ipv6=True))
    speakers = [SpeakerProc(lab, node, speaker_config(i, [V4_PEER, V6_PEER]), f"n{i}")
                for i, node in enumerate(lab.nodes)]
    wait_for(lambda: bird.established() == 6, what="6 sessions Established at BIRD")
    bulk = [f"10.201.{i >> 8}.{i & 255}/32" for i in range(1000)]
    for sp in speakers:
        sp.cmd(cmd="announce", prefixes=["10.200.0.1/32", "fd00:200::1/128"],
               attrs={"communities": ["65000:100"]})
        sp.cmd(cmd="announce", prefixes=bulk)
    nodes4 = {node_v4(i) for i in range(3)}
    nodes6 = {node_v6(i) for i in range(3)}
    wait_for(lambda: kernel_next_hops(lab, "10.200.0.1/32") == nodes4, what="IPv4 ECMP")
    wait_for(lambda: kernel_next_hops(lab, "fd00:200::1/128") == nodes6, what="IPv6 ECMP")
    wait_for(lambda: bird.route_count() >= 1001 * 3, what="all IPv4 paths at BIRD")
    detail = bird.birdc("show route 10.200.0.1/32 all")
    assert detail.count("BGP.as_path: 64512") == 3
    assert detail.count("(65000,100)") == 3
    assert kernel_next_hops(lab, "10.201.3.231/32") == nodes4

    # ROUTE-REFRESH: BIRD asks node 1 for its table again and gets all of it.
    proto = protocol_of(bird, node_v4(1))
    before = import_updates(bird, proto)
    assert before >= 1001
    assert "reload" in bird.birdc(f"reload in {proto}").lower()
    wait_for(lambda: import_updates(bird, proto) >= before + 1001, what="refreshed table")

    for sp in speakers:
        sp.cmd(cmd="withdraw", prefixes=["10.200.0.1/32"])
    wait_for(lambda: not kernel_next_hops(lab, "10.200.0.1/32"), what="withdrawal")
    assert kernel_next_hops(lab, "fd00:200::1/128") == nodes6

    speakers[0].cmd(cmd="shutdown", reason="drain node 0")
    wait_for(lambda: kernel_next_hops(lab, "fd00:200::1/128") == nodes6 - {node_v6(0)},
             what="node 0's paths gone")
    wait_for(lambda: kernel_next_hops(lab, "10.201.0.9/32") == nodes4 - {node_v4(0)},
             what="node 0's IPv4 paths gone")
    assert bird.established() == 4
    log = (lab.tmp / "bird.log").read_text()
    assert "Received: Administrative shutdown" in log, log


def test_four_octet_asn_and_source_address(lab: Lab) -> None:
    bird = Bird(lab, bird_config(node_as=4200000001))
    source = "10.99.0.12"  # a second address on node 0: the session must come from it
    lab.nodes[0].ip("addr", "add", f"{source}/24", "dev", "eth0")
    peer = dict(V4_PEER, my_asn=4200000001, source_address=source)
    speaker = SpeakerProc(lab, lab.nodes[0], speaker_config(0, [peer]), "n0")
    wait_for(lambda: bird.established() == 1, what="session with a 4-octet ASN")
    speaker.cmd(cmd="announce", prefixes=["10.200.0.7/32"])
    route = wait_for(lambda: "BGP.as_path: 4200000001" in (
        text := bird.birdc("show route 10.200.0.7/32 all")) and text,
        what="route with AS_PATH 4200000001")
    assert f"BGP.next_hop: {source}" in route  # next hop self = the session's source
    assert f"Neighbor address: {source}" in bird.birdc("show protocols all")
    status = speaker.status()[ROUTER_V4]
    assert status["state"] == "Established" and status["local_address"] == source


def test_wrong_peer_as_both_ways_with_md5(lab: Lab) -> None:
    bird = Bird(lab, bird_config(password="s3cret"))
    configs = [
        dict(V4_PEER, peer_asn=65999, password="s3cret"),  # we reject BIRD's AS
        dict(V4_PEER, password="s3cret"),                  # correct
        dict(V4_PEER, my_asn=64999, password="s3cret"),    # BIRD rejects ours
    ]
    speakers = [SpeakerProc(lab, node, speaker_config(i, [configs[i]]), f"n{i}")
                for i, node in enumerate(lab.nodes)]
    log_path = lab.tmp / "bird.log"
    wait_for(lambda: "Received: Bad peer AS" in log_path.read_text()
             and "Error: Bad peer AS: 64999" in log_path.read_text(),
             what="both Bad Peer AS notifications at BIRD")
    wait_for(lambda: speakers[1].status()[ROUTER_V4]["state"] == "Established",
             what="the correct node Established (over TCP MD5)")
    assert "sent NOTIFICATION OPEN Message Error / Bad Peer AS" in speakers[0].logs()
    assert "received NOTIFICATION OPEN Message Error / Bad Peer AS" in speakers[2].logs()
    speakers[1].cmd(cmd="announce", prefixes=["10.200.0.9/32"])
    wait_for(lambda: kernel_next_hops(lab, "10.200.0.9/32") == {node_v4(1)}, what="route")
    holds_for(2.0, lambda: speakers[1].status()[ROUTER_V4]["state"] == "Established"
              and bird.established() == 1)


def test_md5_mismatch_never_establishes(lab: Lab) -> None:
    bird = Bird(lab, bird_config(password="right"))
    configs = [dict(V4_PEER, password="right"),
               dict(V4_PEER, password="wrong", connect_retry_time=1),
               dict(V4_PEER, connect_retry_time=1)]
    speakers = [SpeakerProc(lab, node, speaker_config(i, [configs[i]]), f"n{i}")
                for i, node in enumerate(lab.nodes)]
    wait_for(lambda: speakers[0].status()[ROUTER_V4]["state"] == "Established",
             what="MD5 session")
    holds_for(3.0, lambda: bird.established() == 1)
    for sp in speakers[1:]:
        assert sp.status()[ROUTER_V4]["state"] in ("Connect", "Active", "Idle")


def test_unacceptable_hold_time(lab: Lab) -> None:
    bird = Bird(lab, bird_config(hold=9))
    configs = [dict(V4_PEER, min_hold_time=30), V4_PEER]
    speakers = [SpeakerProc(lab, lab.nodes[i], speaker_config(i, [configs[i]]), f"n{i}")
                for i in range(2)]
    log_path = lab.tmp / "bird.log"
    wait_for(lambda: "Received: Unacceptable hold time" in log_path.read_text(),
             what="Unacceptable Hold Time at BIRD")
    status = wait_for(lambda: (s := speakers[1].status()[ROUTER_V4])["state"] == "Established"
                      and s, what="the other node Established")
    assert (status["hold_time"], status["keepalive_time"]) == (9, 3)
    assert bird.established() == 1
    assert "OPEN Message Error / Unacceptable Hold Time" in speakers[0].logs()
