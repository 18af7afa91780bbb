"""Our speaker's BFD against BIRD 2 (`protocol bfd`, `bfd on`) and FRR (bfdd, a BGP
neighbour with a BFD profile) at once: each node runs BGP + BFD to both routers.

Both routers' own views are read (`birdc show bfd sessions`, `vtysh show bfd peers`,
their BGP tables).  The hold time is 90 s everywhere, so a path that disappears
within the 30 s deadline after its node was cut off was removed by BFD: no timing
is asserted, only the outcome.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.netns import Netns
from tests.bfd.lab import (
    FRR_V4,
    NODE_AS,
    ROUTER_AS,
    Frr,
    add_frr_router,
    bird_bfd_config,
    bird_bfd_sessions,
    bird_next_hops,
    frr_config,
)
from tests.bgp.lab import ROUTER_V4, Bird, Lab, SpeakerProc, node_v4, speaker_config, wait_for

PREFIX = "10.200.0.1/32"
HOLD = 90
DEADLINE = 30  # well below the hold time: only BFD removes a path this soon


def peers(**bfd: Any) -> list[dict[str, Any]]:
    return [{"peer_address": address, "peer_asn": ROUTER_AS, "my_asn": NODE_AS,
             "hold_time": HOLD, "graceful_restart_time": None, "connect_retry_time": 1,
             "families": ["ipv4-unicast"], "bfd": bfd}
            for address in (ROUTER_V4, FRR_V4)]


def bfd_states(speaker: SpeakerProc) -> dict[str, str]:
    return {k: v["state"] for k, v in speaker.cmd(cmd="status")["bfd"].items()}


def test_bfd_up_with_bird_and_frr_and_paths_go_when_a_node_dies(
        lab: Lab, netns_factory: Callable[[str], Netns], frr_dir: Path) -> None:
    nodes = {node_v4(i) for i in range(3)}
    bird = Bird(lab, bird_bfd_config(hold=HOLD))
    frr = Frr(lab, add_frr_router(lab, netns_factory), frr_dir,
              frr_config(sorted(nodes), hold=HOLD))
    speakers = [SpeakerProc(lab, node, speaker_config(i, peers()), f"n{i}")
                for i, node in enumerate(lab.nodes)]
    for sp in speakers:
        sp.cmd(cmd="announce", prefixes=[PREFIX])

    # BFD Up, as each router itself reports it, and on our side too.
    wait_for(lambda: bird_bfd_sessions(bird) == dict.fromkeys(nodes, "Up"),
             what="3 BFD sessions Up at BIRD")
    wait_for(lambda: frr.bfd_peers() == dict.fromkeys(nodes, "up"),
             what="3 BFD peers up at FRR")
    for sp in speakers:
        wait_for(lambda sp=sp: bfd_states(sp) == {ROUTER_V4: "Up", FRR_V4: "Up"},  # type: ignore[misc]
                 what="both BFD sessions Up at the speaker")
    wait_for(lambda: bird_next_hops(bird, PREFIX) == nodes, what="3 paths at BIRD")
    wait_for(lambda: frr.next_hops(PREFIX) == nodes, what="3 paths at FRR")
    detail = frr.vtysh("-c", f"show bfd peer {node_v4(2)}").stdout
    remote = detail.split("Remote timers:")[1]  # what FRR learnt from our packets
    assert all(f in remote for f in ("Detect-multiplier: 3", "Receive interval: 300ms",
                                     "Transmission interval: 300ms",
                                     "Echo receive interval: disabled")), detail

    # node 0's speaker is SIGKILLed: its paths go from both routers.
    speakers[0].proc.send_signal(signal.SIGKILL)
    left = nodes - {node_v4(0)}
    wait_for(lambda: bird_next_hops(bird, PREFIX) == left, DEADLINE, what="BIRD drops node 0")
    wait_for(lambda: frr.next_hops(PREFIX) == left, DEADLINE, what="FRR drops node 0")

    # node 1 is cut off (its only link down): no TCP reset reaches anyone, so only
    # BFD can take its sessions down before the 90 s hold time.
    lab.nodes[1].ip("link", "set", "eth0", "down")
    left -= {node_v4(1)}
    wait_for(lambda: bird_next_hops(bird, PREFIX) == left, DEADLINE, what="BIRD drops node 1")
    wait_for(lambda: frr.next_hops(PREFIX) == left, DEADLINE, what="FRR drops node 1")
    assert bird_bfd_sessions(bird)[node_v4(1)] == "Down"
    assert frr.bfd_peers()[node_v4(1)] == "down"
    assert "BFD session down" in bird.birdc("show protocols all"), \
        bird.birdc("show protocols all")
    assert frr.established() == 1 and bird.established() == 1
    # The remaining node keeps its sessions and its path.
    assert bird_next_hops(bird, PREFIX) == {node_v4(2)}
    assert bfd_states(speakers[2]) == {ROUTER_V4: "Up", FRR_V4: "Up"}


def freeze_while_up(speaker: SpeakerProc, frr: Frr, bfdd: int) -> int:
    """SIGSTOP FRR's bfdd while our BFD session to it is Up, and wait until that session
    times out; returns where in our speaker's log the freeze began.

    A session start may flap once (FRR re-registers its BFD session when BGP comes up):
    a freeze that lands after bfdd sent its Down, or while ours is not Up, shows no
    timeout, so bfdd is thawed and frozen again once both ends are Up."""
    down = f"BFD peer {FRR_V4}: Up -> Down ("
    for _ in range(3):
        wait_for(lambda: frr.bfd_peers() == {node_v4(0): "up"}, DEADLINE, what="BFD up at FRR")
        wait_for(lambda: bfd_states(speaker) == {FRR_V4: "Up"}, DEADLINE, what="BFD Up")
        wait_for(lambda: speaker.status()[FRR_V4]["state"] == "Established", DEADLINE,
                 what="BGP up")
        seen = len(speaker.logs())
        os.kill(bfdd, signal.SIGSTOP)
        try:
            if bfd_states(speaker) == {FRR_V4: "Up"}:
                # Frozen, bfdd sends nothing more: our session goes down now, and only
                # a Down that bfdd sent before the freeze names another reason.
                wait_for(lambda: down in speaker.logs()[seen:], DEADLINE,  # noqa: B023
                         what="our BFD session to go down")
                if f"{down}control detection time expired)" in speaker.logs()[seen:]:
                    return seen
        except BaseException:
            os.kill(bfdd, signal.SIGCONT)
            raise
        os.kill(bfdd, signal.SIGCONT)
    raise AssertionError(f"no freeze of bfdd caught our BFD session Up:\n{speaker.logs()}")


def test_router_bfd_silent_takes_our_bgp_session_down(
        lab: Lab, netns_factory: Callable[[str], Netns], frr_dir: Path) -> None:
    """The other direction: FRR's bfdd frozen (SIGSTOP), its bgpd still up.  Our BFD
    session times out and our speaker drops the BGP session at once with Cease / BFD
    Down (RFC 9384), long before the 90 s hold time, then reconnects."""
    frr = Frr(lab, add_frr_router(lab, netns_factory), frr_dir,
              frr_config([node_v4(0)], hold=HOLD))
    peer = peers()[1]
    speaker = SpeakerProc(lab, lab.nodes[0], speaker_config(0, [peer]), "n0")
    bfdd = int((frr_dir / "bfdd.pid").read_text())
    seen = freeze_while_up(speaker, frr, bfdd)
    try:
        wait_for(lambda: "BFD session down" in speaker.logs()[seen:], DEADLINE,
                 what="our speaker to take the session down on BFD")
        # FRR's bgpd got our NOTIFICATION: Cease / BFD Down.
        wait_for(lambda: "BFD Down" in frr.vtysh("-d", "bgpd", "-c",  # bfdd is frozen
                                                 f"show bgp neighbors {node_v4(0)}"
                                                 ).stdout, DEADLINE,
                 what="FRR to report the Cease / BFD Down it received")
    finally:
        os.kill(bfdd, signal.SIGCONT)
    # Once bfdd runs again, BFD and BGP come back.
    wait_for(lambda: bfd_states(speaker) == {FRR_V4: "Up"}, DEADLINE, what="BFD Up again")
    wait_for(lambda: speaker.status()[FRR_V4]["state"] == "Established", DEADLINE,
             what="BGP Established again")
