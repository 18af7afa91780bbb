"""skein-speaker against GoBGP (passive, in the router namespace): three paths per
LoadBalancer address in `gobgp global rib -j`, IPv4 and IPv6 over the IPv4
sessions, 4-octet ASNs, the advertisement's communities (standard and large),
withdraw on Service removal and Cease on SIGTERM."""

from __future__ import annotations

from typing import Any

from lab.speakers import lb_service, poll
from tests.bgp.lab import GoBgp, gobgp_config
from tests.bgp.test_interop_gobgp import established, paths
from tests.bgp_daemon.lab import (
    LB4,
    LB6,
    NODE_AS,
    ROUTER4,
    ROUTER_AS,
    BgpLab,
    base_objects,
)

NODES4 = {"10.99.0.11", "10.99.0.12", "10.99.0.13"}


def large_communities(gobgp: GoBgp, prefix: str) -> list[Any]:
    family = "ipv6" if ":" in prefix else "ipv4"
    return [attr for path in gobgp.rib(family).get(prefix, []) for attr in path["attrs"]
            if attr["type"] == 32]


def test_three_paths_both_families_communities_withdraw_cease(lab: BgpLab) -> None:
    gobgp = GoBgp(lab.interop, gobgp_config([(a, NODE_AS, None) for a in sorted(NODES4)],
                                            local_as=ROUTER_AS, router_id=ROUTER4, ipv6=True))
    web, api = lb_service("web", LB4, LB6), lb_service("api", "198.51.100.11")
    communities = ["64512:100", "65535:65281", f"large:{NODE_AS}:1:2"]  # 65535:65281: NO_EXPORT
    lab.write(*base_objects(web, api, communities=communities))
    lab.start_all()
    poll(lambda: set(paths(gobgp, f"{LB4}/32")) == NODES4, 30, "3 IPv4 paths at GoBGP")
    poll(lambda: set(paths(gobgp, f"{LB6}/128")) == NODES4, 10, "3 IPv6 paths at GoBGP")
    v4, v6 = paths(gobgp, f"{LB4}/32"), paths(gobgp, f"{LB6}/128")
    for i, address in enumerate(sorted(NODES4), start=1):
        assert v4[address]["as_path"] == [NODE_AS]  # 4-octet, no AS_TRANS
        assert v4[address]["next_hop"] == address
        assert v6[address]["next_hop"] == f"fd99::1{i}"  # the node's IPv6 InternalIP
        assert sorted(v4[address]["communities"]) == [(64512 << 16) | 100, 0xFFFFFF01]
    large = large_communities(gobgp, f"{LB4}/32")
    expected = [{"ASN": NODE_AS, "LocalData1": 1, "LocalData2": 2}]
    assert len(large) == 3 and all(a["value"] == expected for a in large), large

    # The api Service goes: its prefix is withdrawn from every path; web stays.
    lab.write(*base_objects(web, communities=communities))
    poll(lambda: not paths(gobgp, "198.51.100.11/32"), 10, "api withdrawn")
    assert set(paths(gobgp, f"{LB4}/32")) == NODES4

    assert established(gobgp) == NODES4
    # SIGTERM on node2: GoBGP drops its paths on the Cease, not on the hold timer.
    assert lab.stop("node2") == 0
    assert set(paths(gobgp, f"{LB4}/32")) == NODES4 - {"10.99.0.12"}
    assert set(paths(gobgp, f"{LB6}/128")) == NODES4 - {"10.99.0.12"}
    assert established(gobgp) == NODES4 - {"10.99.0.12"}
