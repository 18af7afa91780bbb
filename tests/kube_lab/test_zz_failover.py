"""Last in the session: a node is killed (every process of it, its underlay port
down) and the L2 address it announced moves to another node: the client's TCP
connects again through the new owner's MAC, the surviving speakers say the
heartbeats (the shipped default, speaker.membership.combined) found the node
dead, and the new owner's ServiceL2Status and nodeAssigned Event name it."""

from __future__ import annotations

from lab.kube.cluster import SKEIN_NAMESPACE, KubeLab
from lab.netns import Netns
from tests.kube_lab.conftest import client_get, wait_for
from tests.kube_lab.test_cluster import _lb_service, apply, lb_address, whoami_pods
from tests.kube_lab.test_status_objects import (
    ensure_status_crds,
    neighbour_mac,
    node_assigned,
    speaker_pods,
    statuses,
)


def test_killing_the_l2_owner_moves_the_address(kube: KubeLab) -> None:
    ensure_status_crds(kube)
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
    wait_for(lambda: [s["status"].get("node") for s in
                      statuses(kube, "servicel2statuses", "web-l2")] == [owner.name], 90,
             f"the ServiceL2Status naming {owner.name}")
    survivors = {n: p["metadata"]["name"] for n, p in speaker_pods(kube).items()
                 if n != owner.name}
    kube.kill_node(owner)

    def moved() -> str | None:
        mac = neighbour_mac(kube, address)
        if mac and mac != owner_mac and mac in macs and client_get(
                kube, f"http://{address}/cgi-bin/ip", timeout=2):
            return macs[mac].name
        return None

    successor = wait_for(moved, 120, f"{address} announced by a node other than {owner.name}",
                         every=0.5)
    assert successor in survivors
    # The heartbeats decided, not the Lease (which the dead node's speaker left behind).
    for node, pod in survivors.items():
        log = kube.kubectl("-n", SKEIN_NAMESPACE, "logs", pod).stdout
        assert (f"member {owner.name}: dead (heartbeats stopped, Lease not renewed since)"
                in log), (node, log[-2000:])
    # The new owner says so, and cleared the dead node's status (nobody else could).
    wait_for(lambda: [s["status"].get("node") for s in
                      statuses(kube, "servicel2statuses", "web-l2")] == [successor], 90,
             f"the ServiceL2Status naming {successor} only")
    message = f'announcing from node "{successor}" with protocol "layer2"'
    wait_for(lambda: message in node_assigned(kube, "web-l2"), 60,
             f"the nodeAssigned event from {successor}")
