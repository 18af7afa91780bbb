"""Last in the session: a node is killed (every process of it, its underlay port
down) and the L2 address it announced moves to another node."""

from __future__ import annotations

import re

from lab.kube.cluster import KubeLab
from lab.netns import Netns
from tests.kube_lab.conftest import client_get, wait_for
from tests.kube_lab.test_cluster import _lb_service, apply, lb_address, whoami_pods


def neighbour_mac(kube: KubeLab, address: str) -> str | None:
    out = kube.client_ns.ip("neigh", "show", address).stdout
    found = re.search(r"lladdr (\S+)", out)
    return found.group(1) if found else None


def test_killing_the_l2_owner_moves_the_address(kube: KubeLab) -> None:
    whoami_pods(kube)
    apply(kube, _lb_service("web-l2", "l2-pool"))
    address = lb_address(kube, "web-l2")
    assert wait_for(lambda: client_get(kube, f"http://{address}/cgi-bin/ip"), 60,
                    "the client reaches the L2 address")
    owner_mac = neighbour_mac(kube, address)
    macs = {Netns(n.netns).ip("-br", "link", "show", "eth0").stdout.split()[2]: n
            for n in kube.node_specs()}
    assert owner_mac in macs, (owner_mac, macs)
    owner = macs[owner_mac]
    kube.kill_node(owner)

    def moved() -> bool:
        mac = neighbour_mac(kube, address)
        return bool(mac and mac != owner_mac and mac in macs
                    and client_get(kube, f"http://{address}/cgi-bin/ip", timeout=2))

    wait_for(moved, 120, f"{address} announced by a node other than {owner.name}", every=0.5)
