"""Our speaker against a real GoBGP, all inside tagged namespaces.

GoBGP is a second, independent implementation: where BIRD is lenient GoBGP is
strict, it reports End-of-RIB receipt per family, and it can be the active side,
which exercises our listener.  Assertions use `gobgp ... -j` JSON.
"""

from __future__ import annotations

from typing import Any

from tests.bgp.lab import (
    ROUTER_V4,
    GoBgp,
    Lab,
    SpeakerProc,
    gobgp_config,
    node_v4,
    node_v6,
    speaker_config,
    wait_for,
)

ESTABLISHED = 6  # GoBGP's session_state enum


def paths(gobgp: GoBgp, prefix: str) -> dict[str, dict[str, Any]]:
    """neighbor address -> {next_hop, as_path, communities} for one prefix."""
    family = "ipv6" if ":" in prefix else "ipv4"
    out = {}
    for path in gobgp.rib(family).get(prefix, []):
        info: dict[str, Any] = {}
        for attr in path["attrs"]:
            if attr["type"] == 2:
                info["as_path"] = [a for seg in attr["as_paths"] for a in seg["asns"]]
            elif attr["type"] in (3, 14):
                info["next_hop"] = attr["nexthop"]
            elif attr["type"] == 8:
                info["communities"] = attr["communities"]
        out[path["neighbor-ip"]] = info
    return out


def established(gobgp: GoBgp) -> set[str]:
    return {addr for addr, n in gobgp.neighbors().items()
            if n["state"].get("session_state") == ESTABLISHED}


def end_of_rib_received(gobgp: GoBgp, address: str) -> list[int]:
    """AFIs for which GoBGP got our End-of-RIB marker."""
    neighbor = gobgp.neighbors()[address]
    return sorted(f["config"]["family"]["afi"] for f in neighbor["afi_safis"]
                  if f.get("mp_graceful_restart", {}).get("state", {}).get("end_of_rib_received"))


def test_three_nodes_four_octet_ipv4_ipv6_withdraw_shutdown(lab: Lab) -> None:
    asns = [4200000001, 4200000002, 64512]
    gobgp = GoBgp(lab, gobgp_config([(node_v4(i), asns[i], None) for i in range(3)], ipv6=True))
    speakers = [
        SpeakerProc(lab, node, speaker_config(i, [{
            "peer_address": ROUTER_V4, "peer_asn": 65112, "my_asn": asns[i],
            # IPv6 routes over an IPv4 session need an IPv6 next hop from config.
            "next_hop_ipv6": node_v6(i)}]), f"n{i}")
        for i, node in enumerate(lab.nodes)]
    wait_for(lambda: established(gobgp) == {node_v4(i) for i in range(3)},
             what="3 sessions Established at GoBGP")
    wait_for(lambda: all(end_of_rib_received(gobgp, node_v4(i)) == [1, 2] for i in range(3)),
             what="End-of-RIB for IPv4 and IPv6 from every node")
    for sp in speakers:
        sp.cmd(cmd="announce", prefixes=["10.200.0.1/32", "fd00:200::1/128"],
               attrs={"communities": ["65000:100"]})
    v4 = wait_for(lambda: len(p := paths(gobgp, "10.200.0.1/32")) == 3 and p, what="IPv4 paths")
    v6 = wait_for(lambda: len(p := paths(gobgp, "fd00:200::1/128")) == 3 and p,
                  what="IPv6 paths")
    for i in range(3):
        assert v4[node_v4(i)] == {"as_path": [asns[i]], "next_hop": node_v4(i),
                                  "communities": [65000 << 16 | 100]}
        assert v6[node_v4(i)]["next_hop"] == node_v6(i)
        assert v6[node_v4(i)]["as_path"] == [asns[i]]

    speakers[1].cmd(cmd="withdraw", prefixes=["10.200.0.1/32"])
    wait_for(lambda: set(paths(gobgp, "10.200.0.1/32")) == {node_v4(0), node_v4(2)},
             what="node 1's withdrawal")
    speakers[0].cmd(cmd="shutdown", reason="bye")
    wait_for(lambda: set(paths(gobgp, "fd00:200::1/128")) == {node_v4(1), node_v4(2)},
             what="node 0's routes dropped after Cease")
    assert established(gobgp) == {node_v4(1), node_v4(2)}


def test_gobgp_active_to_our_listener_and_bad_opens(lab: Lab) -> None:
    gobgp = GoBgp(lab, gobgp_config([
        (node_v4(0), 64512, None),  # fine: GoBGP connects to our listener, with TCP MD5
        (node_v4(1), 64512, 2),     # offers hold time 2: Unacceptable Hold Time
        (node_v4(2), 64512, None),  # our side expects another AS: Bad Peer AS
    ], passive=False, passwords={node_v4(0): "md5-on-the-listener"}))
    peer = {"peer_address": ROUTER_V4, "peer_asn": 65112, "my_asn": 64512, "passive": True}
    configs = [dict(peer, password="md5-on-the-listener"), peer, dict(peer, peer_asn=65999)]
    speakers = [SpeakerProc(lab, node, speaker_config(i, [configs[i]], listen=["0.0.0.0"]),
                            f"n{i}") for i, node in enumerate(lab.nodes)]
    wait_for(lambda: "Unacceptable Hold Time" in speakers[1].logs(), what="hold time refused")
    wait_for(lambda: "Bad Peer AS" in speakers[2].logs(), what="peer AS refused")
    wait_for(lambda: established(gobgp) == {node_v4(0)}, what="node 0 Established")
    assert "sent NOTIFICATION OPEN Message Error / Unacceptable Hold Time: hold time 2" \
        in speakers[1].logs()
    assert "sent NOTIFICATION OPEN Message Error / Bad Peer AS: peer says AS 65112, " \
        "configured 65999" in speakers[2].logs()
    speakers[0].cmd(cmd="announce", prefixes=["10.200.0.2/32"])
    wait_for(lambda: set(paths(gobgp, "10.200.0.2/32")) == {node_v4(0)}, what="route")
    status = speakers[0].status()[ROUTER_V4]
    assert status["state"] == "Established" and status["local_address"] == node_v4(0)
