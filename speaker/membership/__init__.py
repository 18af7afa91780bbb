"""Which speakers are alive: the input the L2 election needs besides cluster state.

Every speaker must agree on the live set for the election to give each address
exactly one owner, so liveness is its own small interface with one job:

    liveness.set_members({name: (InternalIP, ...)})   # from the Node objects
    await liveness.start(on_change)                   # on_change(joined, left)
    liveness.ready                                    # the first view has settled
    liveness.live()                                   # frozenset of names, self included
    await liveness.leave()                            # SIGTERM: peers re-elect at once
    await liveness.close()

`UdpMembership` (speaker.membership.udp) implements it for file mode and for
any cluster whose nodes reach each other by UDP: heartbeats among the speakers
at the Nodes' InternalIPs (failover after `dead_after`, a fraction of a
second by default).  `LeaseLiveness`
(speaker.membership.lease) is the cluster-mode default: members are the nodes
holding a fresh coordination.k8s.io Lease (failover after the lease duration,
seconds).  The daemon does not care which one it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from foundation.kube.model.fields import IPAddress

OnChange = Callable[[frozenset[str], frozenset[str]], None]


class Liveness(Protocol):
    @property
    def ready(self) -> bool:
        """False until the first view is trustworthy (announcing before that would
        make every speaker think itself alone, and all of them answer)."""

    def set_members(self, members: Mapping[str, tuple[IPAddress, ...]]) -> None:
        """The speakers that may exist, by node name, with their addresses."""

    def live(self) -> frozenset[str]:
        """Names of the speakers alive now, this one included."""

    async def start(self, on_change: OnChange) -> None:
        """Begin; `on_change(joined, left)` runs on the event loop on every change."""

    async def leave(self) -> None:
        """Tell the others this speaker is going, so they take over without waiting."""

    async def close(self) -> None:
        """Stop (without telling anyone: that is `leave`)."""
