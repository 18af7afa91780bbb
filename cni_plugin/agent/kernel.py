"""The agent's thin layer over netlink: read the overlay entries it owns, and
apply the actions plan.py computed.  Replace semantics everywhere, so applying
a plan twice, or after a restart, changes nothing and drops no packet.

This is pyroute2 (neighbour and FDB messages, once per resync in a
long-running daemon, where its import and per-request cost do not matter);
the per-pod path uses foundation/netlink/rtnl.py instead."""

from __future__ import annotations

import errno
import ipaddress
import logging

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cni_plugin.agent.plan import Action, Entries, Fdb, Neigh, Route
from foundation import netlink
from foundation.netlink import RTPROT_SKEIN

log = logging.getLogger(__name__)

NUD_PERMANENT = 0x80
NUD_NOARP = 0x40
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
AF_BRIDGE = 7


def _family(address: str) -> int:
    return netlink.AF_INET if ipaddress.ip_address(address).version == 4 else netlink.AF_INET6


def observe(ipr: IPRoute, device_index: int) -> tuple[Entries, frozenset[Fdb]]:
    """(our neighbour entries and routes, every FDB entry of the device)."""
    neighs = set()
    for family in (netlink.AF_INET, netlink.AF_INET6):
        for msg in ipr.neigh("dump", ifindex=device_index, family=family):
            if msg.get("NDA_PROTOCOL") == RTPROT_SKEIN and msg.get("NDA_LLADDR"):
                neighs.add(Neigh(msg.get("NDA_DST"), msg.get("NDA_LLADDR")))
    fdbs = set()
    for msg in ipr.fdb("dump", ifindex=device_index):
        if msg.get("NDA_DST") and msg.get("NDA_LLADDR") != "00:00:00:00:00:00":
            fdbs.add(Fdb(msg.get("NDA_LLADDR"), msg.get("NDA_DST")))
    routes = set()
    for family in (netlink.AF_INET, netlink.AF_INET6):
        for msg in ipr.route("dump", family=family):
            if msg["proto"] != RTPROT_SKEIN or msg.get("RTA_TABLE") != 254:
                continue
            routes.add(Route(f"{msg.get('RTA_DST')}/{msg['dst_len']}", msg.get("RTA_GATEWAY")))
    return Entries(frozenset(neighs), frozenset(), frozenset(routes)), frozenset(fdbs)


def apply(ipr: IPRoute, device_index: int, actions: list[Action]) -> list[str]:
    """Apply each action; a failing one is reported and the rest still applied."""
    failures = []
    for action in actions:
        try:
            _apply_one(ipr, device_index, action)
        except NetlinkError as exc:
            failures.append(f"{action.op} {action.entry}: {exc}")
    return failures


def _apply_one(ipr: IPRoute, index: int, action: Action) -> None:
    entry = action.entry
    missing_ok = (errno.ENOENT, errno.ESRCH, errno.ENODEV)
    try:
        if isinstance(entry, Neigh):
            if action.op == "add":
                ipr.neigh("replace", ifindex=index, dst=entry.address, lladdr=entry.mac,
                          state=NUD_PERMANENT, family=_family(entry.address),
                          NDA_PROTOCOL=RTPROT_SKEIN)
            else:
                ipr.neigh("del", ifindex=index, dst=entry.address, family=_family(entry.address))
        elif isinstance(entry, Fdb):
            if action.op == "add":
                ipr.fdb("replace", ifindex=index, lladdr=entry.mac, dst=entry.dst,
                        state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
            else:
                ipr.fdb("del", ifindex=index, lladdr=entry.mac, dst=entry.dst, flags=NTF_SELF)
        else:
            family = _family(entry.via)
            if action.op == "add":
                ipr.route("replace", dst=entry.dst, gateway=entry.via, oif=index,
                          proto=RTPROT_SKEIN, flags=RTNH_F_ONLINK, family=family)
            else:
                ipr.route("del", dst=entry.dst, gateway=entry.via, oif=index,
                          proto=RTPROT_SKEIN, family=family)
    except NetlinkError as exc:
        if action.op == "del" and exc.code in missing_ok:
            return
        raise
