"""Addresses announced by hand through the API: a lab feature, kept apart from the plan.

The daemon merges them into its desired list on every reconcile
(`merge`), once per announcement mechanism it runs: L2 answers ARP/NDP for
them on the interface routing to them, BGP sends a host route to every
BGPPeer of this node.
`add`/`remove` wake the daemon; `wait_applied` returns once a reconcile that
saw the change has finished, so `skeinctl announce` returns when it is true.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from ipaddress import ip_network
from typing import Protocol

from foundation.kube.model.fields import IPAddress
from speaker.plan import BGP, Announcement


class _HasKind(Protocol):
    kind: str


class ManualAddresses:
    def __init__(self, wake: Callable[[], None]) -> None:
        self.addresses: set[IPAddress] = set()
        self._wake = wake
        self._generation = 0  # bumped by every change
        self._seen = 0  # the generation the reconcile in progress merged
        self._applied = 0  # the generation the last finished reconcile merged
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self, address: IPAddress) -> int:
        """Announce `address`; the generation to pass to `wait_applied`."""
        self.addresses.add(address)
        return self._changed()

    def remove(self, address: IPAddress) -> int:
        """Withdraw `address` (KeyError if it was not announced by hand)."""
        self.addresses.remove(address)
        return self._changed()

    def _changed(self) -> int:
        self._generation += 1
        self._wake()
        return self._generation

    async def wait_applied(self, generation: int) -> None:
        if self._applied >= generation:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((generation, future))
        await future

    # -- called by the daemon's reconcile ----------------------------------------------------

    def merge(self, desired: Sequence[Announcement], announcers: Iterable[_HasKind],
              bgp_peers: Sequence[str] = ()) -> tuple[Announcement, ...]:
        """`desired` plus every manual address for each announcer kind that lacks it;
        BGP: a host route to every peer in `bgp_peers` (BGPPeer names), none without."""
        self._seen = self._generation
        if not self.addresses:
            return tuple(desired)
        have = {(a.address, a.kind) for a in desired}
        extra = []
        for kind in dict.fromkeys(a.kind for a in announcers):
            for address in self.addresses:
                if (address, kind) in have:
                    continue
                if kind == BGP:
                    if bgp_peers:
                        extra.append(Announcement(address, kind, prefix=ip_network(address),
                                                  peers=tuple(bgp_peers)))
                else:
                    extra.append(Announcement(address, kind))
        return tuple(sorted((*desired, *extra), key=lambda a: a.sort_key))

    def applied(self) -> None:
        """The reconcile that last called `merge` has finished."""
        self._applied = self._seen
        waiting = []
        for generation, future in self._waiters:
            if generation <= self._applied:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((generation, future))
        self._waiters = waiting
