"""The agent's thin layer over its VXLAN device: read the overlay entries it
owns, and apply the actions plan.py computed.  Replace semantics everywhere,
so applying a plan twice, or after a restart, changes nothing and drops no
packet.  The device (cni_plugin/vxlan.py: `VxlanDevice`) does the netlink,
over the same standard-library socket as the plugin's per-pod work."""

from __future__ import annotations

import logging

from cni_plugin.agent.plan import Action, Entries, Fdb, Neigh, Route
from cni_plugin.vxlan import VxlanDevice
from foundation.netlink import NetlinkError

log = logging.getLogger(__name__)


def observe(device: VxlanDevice) -> tuple[Entries, frozenset[Fdb]]:
    """(our neighbour entries and routes, every FDB entry of the device)."""
    neighs = frozenset(Neigh(n.address, n.mac) for n in device.neighbours())
    fdbs = frozenset(Fdb(f.mac, f.address) for f in device.fdb())
    routes = frozenset(Route(r.dst, r.gateway) for r in device.routes() if r.gateway)
    return Entries(neighs, frozenset(), routes), fdbs


def apply(device: VxlanDevice, actions: list[Action]) -> list[tuple[Action, str]]:
    """Apply each action; a failing one is reported (with why) and the rest
    still applied."""
    failures = []
    for action in actions:
        try:
            _apply_one(device, action)
        except NetlinkError as exc:
            failures.append((action, str(exc)))
    return failures


def _apply_one(device: VxlanDevice, action: Action) -> None:
    entry = action.entry
    add = action.op == "add"
    if isinstance(entry, Neigh):
        if add:
            device.set_neighbour(entry.address, entry.mac)
        else:
            device.delete_neighbour(entry.address)
    elif isinstance(entry, Fdb):
        if add:
            device.set_fdb(entry.mac, entry.dst)
        else:
            device.delete_fdb(entry.mac, entry.dst)
    elif add:
        device.set_route(entry.dst, entry.via)
    else:
        device.delete_route(entry.dst, entry.via)
