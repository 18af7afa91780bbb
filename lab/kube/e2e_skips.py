"""The one list of upstream e2e tests that `skein-lab kube e2e` skips, each with its reason.

Only tests that need something this machine cannot have (a cloud load balancer, an external
DNS name, the internet, a kernel feature it lacks) belong here; a test that fails on Skein
or on the lab is fixed, never listed.  Each name is a spec's full text exactly as
`e2e.test -list-tests` prints it (after the file:line); `applies` says whether the reason
holds on the machine at hand, so a machine that has the missing thing runs the test.
README.md ("Conformance") repeats this list; tests/kube_lab/test_e2e.py keeps the two equal
and checks that every name is one of the suite's tests.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass


def kernel_lacks_sctp() -> bool:
    """True when the kernel has no SCTP (no module on this machine's kernel)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return True
    return False


def always() -> bool:
    return True


@dataclass(frozen=True)
class Skip:
    name: str
    reason: str
    applies: Callable[[], bool] = always


NO_SCTP = ("this machine's kernel has no SCTP (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) "
           "fails with EPROTONOSUPPORT and there is no module to load), so no pod can open "
           "an SCTP socket whatever the CNI")

SKIPS: tuple[Skip, ...] = (
    Skip("[sig-network] Networking Granular Checks: Pods should function for intra-pod "
         "communication: sctp [LinuxOnly] [Feature:SCTPConnectivity]", NO_SCTP,
         kernel_lacks_sctp),
    Skip("[sig-network] Networking Granular Checks: Pods should function for node-pod "
         "communication: sctp [LinuxOnly] [Feature:SCTPConnectivity]", NO_SCTP,
         kernel_lacks_sctp),
)


def active(skips: tuple[Skip, ...] = SKIPS) -> list[Skip]:
    """The skips whose reason holds here."""
    return [s for s in skips if s.applies()]
