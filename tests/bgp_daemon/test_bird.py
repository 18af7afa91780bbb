"""skein-speaker (the daemon, configured by MetalLB BGPPeer / BGPAdvertisement objects
in its manifests) against a real BIRD 2, seen from the router and from a client
behind it: ECMP over the three nodes, TCP to the LoadBalancer address, IPv4 and
IPv6, 4-octet ASNs, withdraw on Service removal, Cease on SIGTERM, re-announce
after a restart, and a wrongly configured peer AS that fails alone.

Latencies (manifests written -> route in / out of the router's kernel table) are
printed for the record (`pytest -s`), never asserted: they include the file
source's 0.2 s poll and the test's own polling.
"""

from __future__ import annotations

import time

from lab.speakers import (
    bgp_peer,
    calico_bgp_configuration,
    lb_service,
    poll,
    serve_name,
    tcp_name,
)
from tests.bgp.lab import Bird
from tests.bgp.test_interop_bird import kernel_next_hops
from tests.bgp_daemon.lab import (
    LB4,
    LB6,
    NODE_AS,
    BgpLab,
    base_objects,
    bird_config,
    bird_next_hops,
    log_lines,
    logged_at,
    neighbor_error,
)

NODES4 = {"10.99.0.11", "10.99.0.12", "10.99.0.13"}
NODES6 = {"fd99::11", "fd99::12", "fd99::13"}
NAMES = {"node1", "node2", "node3"}


def settle(what: str, probe: object, timeout: float = 20) -> float:
    """Poll `probe` until truthy; the seconds it took."""
    start = time.monotonic()
    poll(probe, timeout, what, interval=0.01)  # type: ignore[arg-type]
    return time.monotonic() - start


def test_ecmp_tcp_withdraw_sigterm_restart(lab: BgpLab) -> None:
    bird = Bird(lab.interop, bird_config())
    lab.write(*base_objects(lb_service("web", LB4, LB6)))
    lab.start_all()
    poll(lambda: bird.established() == 3, 30, "3 sessions Established at BIRD")

    # Three paths in BIRD, one multipath route in the router's kernel, both families.
    poll(lambda: bird_next_hops(bird, f"{LB4}/32") == NODES4, 10, "3 BIRD paths for LB4")
    poll(lambda: kernel_next_hops(lab.interop, f"{LB4}/32") == NODES4, 10,
         "a 3-way multipath kernel route for LB4")
    poll(lambda: kernel_next_hops(lab.interop, f"{LB6}/128") == NODES6, 10,
         "a 3-way multipath kernel route for LB6")
    route = bird.birdc(f"show route for {LB4}/32 all")
    assert f"as_path: {NODE_AS}" in route.replace("BGP.as_path: ", "as_path: "), route
    # The client, which only has a default route, reaches a node through the router.
    assert tcp_name(lab.client, LB4) in NAMES
    assert tcp_name(lab.client, LB6) in NAMES

    # A second Service: announced; then removed: withdrawn.  Timed from the file write
    # (includes the file source's 50 ms poll) and from the speakers' decision (log line).
    second = "198.51.100.11"
    written = lab.write(*base_objects(lb_service("web", LB4, LB6), lb_service("api", second)))
    poll(lambda: kernel_next_hops(lab.interop, f"{second}/32") == NODES4, 10,
         "the new Service's route", interval=0.005)
    announce, seen = time.monotonic() - written, time.time()
    decided = max(logged_at(lab.log(n), f"announcing {second}/32") for n in NAMES)
    written = lab.write(*base_objects(lb_service("web", LB4, LB6)))
    poll(lambda: not kernel_next_hops(lab.interop, f"{second}/32"), 10,
         "the removed Service's route to go", interval=0.005)
    withdraw, gone = time.monotonic() - written, time.time()
    dropped = max(logged_at(lab.log(n), f"withdrawing {second}/32") for n in NAMES)
    print(f"\nfile write -> router kernel: announce {announce * 1000:.0f} ms, withdraw "
          f"{withdraw * 1000:.0f} ms; speakers' decision -> router kernel: announce (last "
          f"node) {(seen - decided) * 1000:.0f} ms, withdraw (last node) "
          f"{(gone - dropped) * 1000:.0f} ms")
    assert kernel_next_hops(lab.interop, f"{LB4}/32") == NODES4  # the others stay

    # SIGTERM: Cease, so BIRD drops node1's paths at once (hold time is 30 s).
    assert lab.stop("node1") == 0
    assert bird_next_hops(bird, f"{LB4}/32") == NODES4 - {"10.99.0.11"}
    assert "Administrative shutdown" in neighbor_error(bird, "10.99.0.11")
    assert kernel_next_hops(lab.interop, f"{LB6}/128") == NODES6 - {"fd99::11"}
    assert tcp_name(lab.client, LB4) in NAMES - {"node1"}

    # Restart: the session comes back and the routes with it.
    lab.start("node1")
    poll(lambda: kernel_next_hops(lab.interop, f"{LB4}/32") == NODES4, 30,
         "node1's path back after the restart")
    poll(lambda: kernel_next_hops(lab.interop, f"{LB6}/128") == NODES6, 10,
         "node1's IPv6 path back after the restart")


def test_wrong_peer_as_fails_alone(lab: BgpLab) -> None:
    # A second BGP protocol on another router address, whose AS node3 gets wrong.
    lab.router.ip("addr", "add", "10.99.0.2/24", "dev", "eth0")
    second = f"""
protocol bgp second {{ local 10.99.0.2 as 65113; neighbor 10.99.0.13 as {NODE_AS}; passive on;
  ipv4 {{ import all; export none; }}; }}
"""
    bird = Bird(lab.interop, bird_config(second))
    node3 = [{"matchLabels": {"kubernetes.io/hostname": "node3"}}]
    lab.write(*base_objects(lb_service("web", LB4)),
              bgp_peer("wrong", "10.99.0.2", 65999, NODE_AS, node_selectors=node3))
    lab.start_all()
    poll(lambda: "Bad Peer AS" in lab.log("node3"), 30, "node3 to refuse the wrong AS")
    # node3's session to the right router stays up and keeps announcing.
    poll(lambda: bird.established() == 3, 30, "the three good sessions Established")
    poll(lambda: bird_next_hops(bird, f"{LB4}/32") == NODES4, 10, "3 paths despite the error")
    lines = log_lines(lab.log("node3"), "Bad Peer AS")
    print("\n" + "\n".join(lines))
    # One line per attempt, naming the peer, what it said and what was configured.
    assert all("10.99.0.2" in line and "65113" in line and "65999" in line for line in lines)
    # BIRD got the NOTIFICATION (OPEN error / Bad Peer AS) on that session only.
    assert "Received: Bad peer AS" in bird.birdc("show protocols second")
    assert all(p.poll() is None for p in lab.speakers.values()), lab.logs()


def test_pod_cidrs_and_calico_service_ranges(lab: BgpLab) -> None:
    """--advertise-pod-cidr: each node announces its own pod CIDR, so the client
    reaches a pod directly through the router (no overlay, no masquerade); Calico's
    BGPConfiguration ranges come from every node."""
    bird = Bird(lab.interop, bird_config())
    node1 = lab.lab.nodes["node1"]
    lab.lab.write_conflist(node1, ip_masq=False)
    pod = lab.lab.add_pod(node1, "p1")
    serve_name(lab.lab, pod.ns, "pod-p1", listen="0.0.0.0")
    calico = calico_bgp_configuration(cluster_ips=["10.96.0.0/16"],
                                      external_ips=["203.0.113.0/28"])
    lab.write(*base_objects(), calico)
    lab.start_all("--advertise-pod-cidr")
    poll(lambda: bird.established() == 3, 30, "3 sessions Established at BIRD")
    pod_routes = {n.pod_cidr: {n.underlay_ip} for n in lab.lab.nodes.values()}
    poll(lambda: {c: kernel_next_hops(lab.interop, c) for c in pod_routes} == pod_routes, 10,
         f"each pod CIDR via its own node only: {pod_routes}")
    ranges = ("10.96.0.0/16", "203.0.113.0/28")
    poll(lambda: all(bird_next_hops(bird, c) == NODES4 for c in ranges), 10,
         "Calico's ranges from every node")
    assert tcp_name(lab.client, pod.address()) == "pod-p1"
    # Restarted without the flag, node1 sends Calico's ranges but not its pod CIDR
    # (both would come in the same initial table dump).
    lab.stop("node1")
    lab.start("node1")
    poll(lambda: bird_next_hops(bird, "10.96.0.0/16") == NODES4, 30, "node1 back")
    assert kernel_next_hops(lab.interop, node1.pod_cidr) == set()
    assert tcp_name(lab.client, pod.address(), timeout=1) is None
