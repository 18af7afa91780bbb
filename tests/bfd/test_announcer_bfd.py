"""The BGP announcer's BFD life cycle without a network: a BGPPeer's BFDProfile
changed, cleared and set again changes the BFD session beside a BGP session that
stays the same object throughout (the wire side is tests/bgp_daemon/test_bfd_daemon).

Passive BGP and passive BFD towards a TEST-NET address: nothing is sent (checked)."""

from __future__ import annotations

import asyncio
import dataclasses

from foundation.kube.model.metallb import BFDProfile
from speaker.bgp.peer import PeerConfig
from speaker.bgp_announcer import BgpAnnouncer
from speaker.bgp_plan import BgpSession

PEER = "192.0.2.1"
SLOW = BFDProfile(namespace="metallb-system", name="slow", receive_interval_ms=500,
                  transmit_interval_ms=500, passive_mode=True)
FAST = dataclasses.replace(SLOW, transmit_interval_ms=100, receive_interval_ms=100,
                           detect_multiplier=5)


def session(bfd: BFDProfile | None, **config: object) -> BgpSession:
    cfg = PeerConfig(peer_address=PEER, peer_asn=65112, my_asn=64512, router_id="10.0.0.1",
                     passive=True)
    return BgpSession("tor", dataclasses.replace(cfg, **config), bfd)  # type: ignore[arg-type]


def test_profile_change_clear_and_set_keep_the_bgp_session() -> None:
    async def scenario() -> None:
        announcer = BgpAnnouncer()
        speaker = announcer.speaker
        try:
            await announcer.set_sessions([session(SLOW)])
            peer, bfd = speaker.peers[PEER], speaker.bfd_sessions[PEER]
            assert bfd.config.params.desired_min_tx_us == 500_000

            # New values: the same BFD session takes them (renegotiated in place).
            await announcer.set_sessions([session(FAST)])
            assert speaker.peers[PEER] is peer and speaker.bfd_sessions[PEER] is bfd
            assert (bfd.vars.params.desired_min_tx_us, bfd.vars.params.detect_mult) == (
                100_000, 5)

            # No profile any more: BFD stops, the BGP session does not.
            await announcer.set_sessions([session(None)])
            assert speaker.peers[PEER] is peer and speaker.bfd_sessions == {}
            assert speaker.bfd.sessions == {}

            # A profile again: a new BFD session beside the same BGP session.
            await announcer.set_sessions([session(SLOW)])
            again = speaker.bfd_sessions[PEER]
            assert speaker.peers[PEER] is peer and again is not bfd

            # Anything else about the peer changed: the BGP session is replaced.
            await announcer.set_sessions([session(SLOW, hold_time=30)])
            assert speaker.peers[PEER] is not peer
            assert speaker.bfd_sessions[PEER] is not again
            await asyncio.sleep(0.05)
            assert all(s.packets_out == 0 for s in (bfd, again, speaker.bfd_sessions[PEER]))
        finally:
            await announcer.close()

    asyncio.run(scenario())
