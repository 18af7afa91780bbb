"""Entry point of `skein-ipam`: wiring only, the behaviour is in ipam.plugin.

Kept tiny and free of third-party imports because a runtime execs it for every
pod ADD and DEL (and `skein` execs it through CNI_PATH): its start-up time is
part of every pod's start-up time.
"""

from __future__ import annotations

from foundation.cni import skel
from ipam.plugin import HostLocalIpam


def main() -> None:
    skel.run(HostLocalIpam())


if __name__ == "__main__":
    main()
