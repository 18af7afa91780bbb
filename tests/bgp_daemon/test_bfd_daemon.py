"""BFD through what users run: three `skein-speaker` daemons whose manifests hold a
MetalLB BGPPeer naming a BFDProfile (spec.bfdProfile), against BIRD 2 with
`protocol bfd` and `bfd on` for the whole node range.  A profile that does not
exist means no session; a changed profile is renegotiated with the router (a BFD
Poll Sequence) without touching the BGP session; a node cut off loses its path on
BFD, long before the hold time.

Every check reads BIRD's own view (`birdc show bfd sessions`, its routes and
protocols).  The BGPPeer's hold time is 90 s (MetalLB's default), so a path that
leaves BIRD within the 20 s deadline after its node was cut off was removed by BFD:
no timing is asserted, only the outcome.
"""

from __future__ import annotations

import re
from typing import Any

from lab.speakers import address_pool, bgp_advertisement, bgp_peer, lb_service, poll
from tests.bfd.lab import bird_bfd_sessions
from tests.bgp.lab import Bird
from tests.bgp_daemon.lab import (
    LB4,
    NODE_AS,
    POOL4,
    ROUTER4,
    ROUTER_AS,
    BgpLab,
    bird_config,
    bird_next_hops,
    log_lines,
    neighbor_error,
)

NODES4 = {"10.99.0.11", "10.99.0.12", "10.99.0.13"}
HOLD = "90s"  # MetalLB's default: far beyond the deadline below
DEADLINE = 20  # seconds; only BFD takes a silent node's path away this soon


def bfd_profile(name: str, interval_ms: int = 300, multiplier: int = 3) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"receiveInterval": interval_ms, "transmitInterval": interval_ms,
                     "detectMultiplier": multiplier}}


def objects(profile_name: str, *profiles: dict[str, Any]) -> list[dict[str, Any]]:
    """An IPv4 pool, a BGPPeer naming `profile_name`, a BGPAdvertisement, a Service
    holding LB4, and the BFDProfile objects `profiles`."""
    return [address_pool("bgp", POOL4),
            bgp_peer("router", ROUTER4, ROUTER_AS, NODE_AS, holdTime=HOLD,
                     bfdProfile=profile_name),
            bgp_advertisement("bgp", ["bgp"]), lb_service("web", LB4), *profiles]


def bird_with_bfd(lab: BgpLab) -> Bird:
    """BIRD as in tests/bgp_daemon, plus BFD (300 ms, x3) on every session it spawns."""
    bfd = """
protocol bfd {
  interface "*" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };
}
"""
    config = bird_config(bfd).replace(f"as {NODE_AS};", f"as {NODE_AS}; bfd on;", 1)
    assert "bfd on;" in config
    return Bird(lab.interop, config)


def bfd_timers(bird: Bird) -> dict[str, tuple[str, str]]:
    """Neighbour -> (Interval, Timeout) from `show bfd sessions`: BIRD's transmit
    interval (which follows our Required Min RX) and its detection time (our Detect
    Mult times our Desired Min TX), in seconds as BIRD prints them."""
    out = {}
    for line in bird.birdc("show bfd sessions").splitlines():
        parts = line.split()
        if len(parts) >= 6 and re.match(r"^\d+\.\d+\.\d+\.\d+$", parts[0]):
            out[parts[0]] = (parts[-2], parts[-1])
    return out


def bgp_since(bird: Bird) -> dict[str, str]:
    """Neighbour -> when its BGP protocol last changed state (`show protocols all`)."""
    out = {}
    for block in bird.birdc("show protocols all").split("\n\n"):
        neighbor = re.search(r"Neighbor address: (\S+)", block)
        head = block.strip().splitlines()[0].split() if block.strip() else []
        if neighbor and len(head) >= 5 and head[1] == "BGP":
            out[neighbor.group(1)] = f"{head[3]} {head[4]} {head[5] if len(head) > 5 else ''}"
    return out


def settled_since(bird: Bird) -> dict[str, str]:
    """`bgp_since` once two reads a poll apart agree: BIRD may stamp a session that
    has just come up once more, a millisecond after its first stamp."""
    seen: list[dict[str, str]] = []

    def settled() -> dict[str, str] | None:
        now = bgp_since(bird)
        agreed = now if seen and seen[-1] == now else None
        seen.append(now)
        return agreed

    settled_value: dict[str, str] = poll(settled, 10, "BIRD's session times to settle")
    return settled_value


def all_up(bird: Bird) -> bool:
    return (bird.established() == 3
            and bird_bfd_sessions(bird) == dict.fromkeys(NODES4, "Up")
            and bird_next_hops(bird, f"{LB4}/32") == NODES4)


def test_missing_profile_no_session_then_bfd_up_and_profile_change(lab: BgpLab) -> None:
    bird = bird_with_bfd(lab)
    # The BGPPeer names a BFDProfile the manifests lack: no session, one clear line.
    lab.write(*objects("fast"))
    lab.start_all()
    for name in lab.lab.nodes:
        poll(lambda name=name: log_lines(lab.log(name), "spec.bfdProfile"), 30,  # type: ignore[misc]
             f"{name} to name spec.bfdProfile in its log")
    for name in lab.lab.nodes:
        lines = log_lines(lab.log(name), "spec.bfdProfile")
        assert all("BGPPeer metallb-system/router" in line and "'fast'" in line
                   for line in lines), lines
        assert not log_lines(lab.log(name), f"BGP peer {ROUTER4} (BGPPeer"), lab.log(name)
    assert bird.established() == 0
    assert bird_bfd_sessions(bird) == {}

    # The BFDProfile appears: every node opens its session with BFD beside it.
    lab.write(*objects("fast", bfd_profile("fast")))
    poll(lambda: all_up(bird), 30, "3 sessions, 3 BFD sessions Up and 3 paths at BIRD")
    assert bfd_timers(bird) == dict.fromkeys(NODES4, ("0.300", "0.900")), \
        bird.birdc("show bfd sessions")
    for name in lab.lab.nodes:
        assert log_lines(lab.log(name), f"BGP peer {ROUTER4}: BFD with BFDProfile fast")

    # The profile's intervals change: BIRD learns the new ones (its transmit interval
    # follows our Required Min RX, its detection time our Detect Mult x Desired Min
    # TX) and the BGP sessions stay up, paths and all.
    since = settled_since(bird)
    assert set(since) == NODES4, bird.birdc("show protocols all")
    lab.write(*objects("fast", bfd_profile("fast", interval_ms=500, multiplier=5)))
    poll(lambda: bfd_timers(bird) == dict.fromkeys(NODES4, ("0.500", "2.500")), 20,
         "BIRD to see 500 ms x 5 from every node")
    assert bgp_since(bird) == since, (since, bird.birdc("show protocols all"))
    assert all_up(bird)
    for name in lab.lab.nodes:
        assert not log_lines(lab.log(name), "closing the session"), lab.log(name)
        assert log_lines(lab.log(name), "BFDProfile fast changed; renegotiating BFD")


def test_cut_node_path_goes_on_bfd_long_before_hold_time(lab: BgpLab) -> None:
    bird = bird_with_bfd(lab)
    lab.write(*objects("default", bfd_profile("default")))  # MetalLB's defaults
    lab.start_all()
    poll(lambda: all_up(bird), 30, "3 sessions, 3 BFD sessions Up and 3 paths at BIRD")
    assert bfd_timers(bird) == dict.fromkeys(NODES4, ("0.300", "0.900"))

    # node1's only link goes down inside its namespace: no FIN, no RST, no
    # NOTIFICATION reaches BIRD; with a 90 s hold time only BFD explains a quick drop.
    lab.lab.nodes["node1"].ns.ip("link", "set", "eth0", "down")
    left = NODES4 - {"10.99.0.11"}
    poll(lambda: bird_next_hops(bird, f"{LB4}/32") == left, DEADLINE,
         "BIRD to drop node1's path", interval=0.05)
    assert bird_bfd_sessions(bird)["10.99.0.11"] == "Down"
    assert "BFD session down" in neighbor_error(bird, "10.99.0.11"), \
        bird.birdc("show protocols all")
    # The other two keep their sessions, BFD and paths.
    assert bird.established() == 2
    assert {k: v for k, v in bird_bfd_sessions(bird).items() if k in left} == \
        dict.fromkeys(left, "Up")
    # node1 itself saw BFD go down and dropped its side of the session.
    poll(lambda: "BFD session down" in lab.log("node1"), DEADLINE,
         "node1's speaker to drop the session on BFD")
    assert all(p.poll() is None for p in lab.speakers.values()), lab.logs()
