"""speaker/loopback.py in a test namespace: the L2 and BGP announcers share
`lo` without stepping on each other or on an operator's address."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

from lab.netns import Netns

SCRIPT = r"""
import asyncio, ipaddress, json, sys
from speaker.loopback import LoopbackAddresses
from speaker.l2.announcer import ADDRESS_PROTO
from speaker.bgp_announcer import LO_ADDRESS_PROTO

steps = json.loads(sys.argv[1])
l2, bgp = LoopbackAddresses(ADDRESS_PROTO), LoopbackAddresses(LO_ADDRESS_PROTO)
for who, addresses in steps:
    asyncio.run((l2 if who == "l2" else bgp).sync({ipaddress.ip_address(a) for a in addresses}))
"""


def lo_addresses(ns: Netns) -> set[str]:
    """The non-loopback addresses on lo.  (Debian's iproute2 6.1 does not show
    IFA_PROTO; which announcer owns what shows in what each one removes.)"""
    out = json.loads(ns.ip("-j", "addr", "show", "dev", "lo").stdout)[0]["addr_info"]
    return {a["local"] for a in out if not ipaddress.ip_address(a["local"]).is_loopback}


def sync(ns: Netns, *steps: tuple[str, list[str]]) -> subprocess.CompletedProcess[str]:
    proc = ns.run(sys.executable, "-c", SCRIPT, json.dumps(steps), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "cannot set" not in proc.stderr, proc.stderr  # every sync went through
    return proc


def test_announcers_share_lo_and_remove_only_their_own(netns_factory):
    ns = netns_factory("lo")
    ns.ip("addr", "add", "10.9.9.9/32", "dev", "lo")  # an operator's
    sync(ns,
         ("bgp", ["10.77.0.1"]),
         # L2 wants the BGP address too (a Service announced both ways), the
         # operator's, and one of its own: all three end up there, no error.
         ("l2", ["10.77.0.1", "10.9.9.9", "10.99.0.200", "fd99::200"]))
    assert lo_addresses(ns) == {"10.9.9.9", "10.77.0.1", "10.99.0.200", "fd99::200"}

    sync(ns, ("l2", []))  # L2 lets go of everything: only its own leave
    assert lo_addresses(ns) == {"10.9.9.9", "10.77.0.1"}
    sync(ns, ("bgp", []))
    assert lo_addresses(ns) == {"10.9.9.9"}
