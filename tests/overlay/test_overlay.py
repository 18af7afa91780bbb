"""Three node namespaces on one underlay, two pods each, `skein-agent` on every
node: the overlay carries real traffic between every pair of pods without NAT,
follows nodes leaving and coming back, survives an agent restart, and shrugs
off bad peer data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab.cluster import Lab, leftovers, scripts_dir
from lab.netns import Netns
from lab.speakers import poll
from lab.traffic import ping, tcp_source_seen

CONVERGE = 10.0  # generous deadline for polling; the latency itself is in bench/overlay.py


@pytest.fixture
def lab(tag):
    with Lab(nodes=3, tag=tag) as lab:
        lab.start_agents()
        for node in lab.nodes.values():
            for i in range(2):
                lab.add_pod(node, f"p{i}")
        yield lab
    assert leftovers(tag) == []


def all_pods(lab):
    return [pod for node in lab.nodes.values() for pod in node.pods.values()]


def overlay_entries(node) -> dict[str, str]:
    return {
        "routes": node.ns.ip("route", "show", "proto", "83").stdout,
        "neigh": node.ns.ip("neigh", "show", "dev", "skein.1").stdout,
        "fdb": node.ns.run("bridge", "fdb", "show", "dev", "skein.1").stdout,
    }


def wait_until(predicate, timeout=CONVERGE, what="condition"):
    poll(predicate, timeout, what, interval=0.05)


def test_every_pod_reaches_every_other_pod_without_nat(lab):
    pods = all_pods(lab)
    assert len({p.address() for p in pods}) == 6
    for src in pods:
        for dst in pods:
            if src is dst:
                continue
            assert ping(src.ns, dst.address()), f"{src.name}@{src.node.name} -> {dst.name}"
            seen = tcp_source_seen(dst.ns, dst.address(), src.ns, dst.address(), port=7000)
            assert seen == src.address(), f"{dst.node.name} saw {seen}, not {src.address()}"


def test_vxlan_device_and_mtu(lab):
    node = lab.nodes["node1"]
    dev = json.loads(node.ns.ip("-d", "-j", "link", "show", "skein.1").stdout)[0]
    assert dev["linkinfo"]["info_data"]["id"] == 1
    assert dev["linkinfo"]["info_data"]["port"] == 8472
    assert dev["mtu"] == 1500 - 50
    eth0 = json.loads(node.pods["p0"].ns.ip("-j", "link", "show", "eth0").stdout)[0]
    assert eth0["mtu"] == 1450
    conflist = node.conflist()
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": node.pod_cidr}]]


def test_node_removed_and_added_back(lab):
    n1, n2, n3 = (lab.nodes[f"node{i}"] for i in (1, 2, 3))
    target = n3.pods["p0"]
    assert ping(n1.pods["p0"].ns, target.address())
    lab.write_manifests([n1, n2])
    for node in (n1, n2):
        wait_until(lambda node=node: n3.pod_cidr not in overlay_entries(node)["routes"]
                   and n3.underlay_ip not in overlay_entries(node)["fdb"]
                   and n3.pod_cidr.split("/")[0] not in overlay_entries(node)["neigh"],
                   what=f"{n3.name}'s entries to vanish on {node.name}")
    assert not ping(n1.pods["p0"].ns, target.address(), wait=1)
    assert ping(n1.pods["p0"].ns, n2.pods["p0"].address())  # the rest keeps working
    lab.write_manifests()
    wait_until(lambda: ping(n1.pods["p0"].ns, target.address(), wait=1),
               what="traffic to the returning node")


def test_agent_restart_loses_at_most_one_packet(lab):
    n1, n2 = lab.nodes["node1"], lab.nodes["node2"]
    src, dst = n1.pods["p0"], n2.pods["p1"]
    count = 80  # 4 s at 50 ms
    pinger = src.ns.popen("ping", "-n", "-i", "0.05", "-c", str(count), "-W", "1",
                          dst.address(), stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    for node in (n1, n2):
        lab.stop_agent(node, kill=True)
    time.sleep(0.5)
    for node in (n1, n2):
        lab.start_agent(node)
    out, _ = pinger.communicate(timeout=30)
    received = int(re.search(r"(\d+) received", out).group(1))
    assert count - received <= 1, out


def test_bad_peer_data_is_logged_and_skipped(lab):
    n1 = lab.nodes["node1"]
    good = [lab.node_object(n) for n in lab.nodes.values()]
    bad = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "z-overlap"},
         "spec": {"podCIDR": lab.nodes["node2"].pod_cidr},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.66"}]}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "z-mine"},
         "spec": {"podCIDR": n1.pod_cidr},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.67"}]}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "z-noip"},
         "spec": {"podCIDR": "10.244.77.0/24"}, "status": {}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "z-badcidr"},
         "spec": {"podCIDR": "10.244.300.0/24"}},
    ]
    lab.write_manifests([], extra=good + bad)
    log_path = os.path.join(n1.workdir, "agent.log")
    for name in ("z-overlap", "z-mine", "z-noip", "z-badcidr"):
        wait_until(lambda name=name: name in open(log_path).read(), what=f"a log line on {name}")
    # Bad YAML: logged, last good state kept.
    with open(lab.manifests_path, "a") as f:
        f.write("\n---\nkind: [unclosed\n")
    wait_until(lambda: "not valid YAML" in open(log_path).read(), what="the bad YAML log line")
    time.sleep(0.5)
    pods = all_pods(lab)
    for dst in pods[2:]:
        assert ping(pods[0].ns, dst.address()), dst.name
    entries = overlay_entries(n1)
    assert "10.99.0.66" not in entries["fdb"] and "10.244.77.0" not in entries["routes"]
    log = open(log_path).read()
    assert "Traceback" not in log


def test_entries_the_agent_did_not_create_are_left_alone(lab):
    n1 = lab.nodes["node1"]
    n1.ns.ip("route", "add", "192.0.2.0/24", "dev", "skein.1")
    n1.ns.ip("neigh", "add", "192.0.2.9", "lladdr", "02:00:00:00:00:09", "dev", "skein.1",
             "nud", "permanent")
    n1.ns.run("bridge", "fdb", "append", "02:00:00:00:00:09", "dev", "skein.1",
              "dst", "10.99.0.99")
    lab.write_manifests([n1, lab.nodes["node2"]])  # forces a reconcile that removes node3
    wait_until(lambda: lab.nodes["node3"].pod_cidr not in overlay_entries(n1)["routes"],
               what="node3's route to vanish")
    entries = overlay_entries(n1)
    assert "192.0.2.0/24" in n1.ns.ip("route").stdout
    assert "192.0.2.9" in entries["neigh"] and "10.99.0.99" in entries["fdb"]


def nft_tables(node) -> list[str]:
    return node.ns.run("nft", "list", "tables").stdout.splitlines()


def test_the_node_masquerades_what_leaves_the_cluster_past_the_agent(lab):
    """One rule set per node, the agent's (ADD ran no nft: no pod has rules of
    its own); kept true on resync, left in place when the agent stops,
    removed by `skein-agent --uninstall`."""
    n1 = lab.nodes["node1"]
    pod = n1.pods["p0"]
    assert n1.conflist()["plugins"][0]["ipMasq"] is False
    assert nft_tables(n1) == ["table inet skein"]
    rules = n1.ns.run("nft", "list", "table", "inet", "skein").stdout
    cidr = lab.cluster_cidr
    assert f"ip saddr {cidr} ip daddr != {{ {cidr}, 224.0.0.0/4 }} masquerade" in rules
    outside = lab.add_client("out", 200)
    address = lab.host(200)
    assert tcp_source_seen(outside, address, pod.ns, address, port=7200) == n1.underlay_ip
    # Removed by hand: back within a resync.
    n1.ns.run("nft", "flush", "chain", "inet", "skein", "postrouting")
    wait_until(lambda: "masquerade" in n1.ns.run("nft", "list", "table", "inet",
                                                 "skein").stdout,
               what="the masquerade rule to come back")
    lab.stop_agent(n1)
    assert nft_tables(n1) == ["table inet skein"]
    assert tcp_source_seen(outside, address, pod.ns, address, port=7201) == n1.underlay_ip
    agent = os.path.join(scripts_dir(), "skein-agent")
    assert "removed table inet skein" in n1.ns.run(agent, "--uninstall").stdout
    assert nft_tables(n1) == []
    outside.ip("route", "add", str(cidr), "via", n1.underlay_ip)  # answers reach the pod
    assert tcp_source_seen(outside, address, pod.ns, address, port=7202) == pod.address()


def test_add_creates_the_vxlan_device_when_no_agent_runs(tag):
    with Lab(nodes=1, tag=tag) as lab:
        node = lab.nodes["node1"]
        lab.write_conflist(node, vxlan={"vni": 7, "port": 4789, "device": "skein.7"})
        pods = [Netns(f"sk{tag}v{i}").create() for i in range(8)]
        try:
            # Parallel ADDs race to create the device; all must succeed.
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda ip: node.cni("ADD", f"c{ip[0]}", ip[1].path),
                                        enumerate(pods)))
            for res in results:
                assert res.returncode == 0, res.stdout
            dev = json.loads(node.ns.ip("-d", "-j", "link", "show", "skein.7").stdout)[0]
            assert dev["linkinfo"]["info_data"]["id"] == 7 and dev["mtu"] == 1450
            eth0 = json.loads(pods[0].ip("-j", "link", "show", "eth0").stdout)[0]
            assert eth0["mtu"] == 1450
        finally:
            for i, pod in enumerate(pods):
                node.cni("DEL", f"c{i}", pod.path)
                pod.delete()


def test_dual_stack_overlay_keeps_source_addresses(tag):
    """IPv6 pod subnets ride the same (IPv4) VXLAN underlay; with both cluster
    networks passed to the agent, neither family is masqueraded between pods."""
    with Lab(nodes=2, tag=tag, cluster_cidr6="fd44::/48") as lab:
        lab.start_agents()
        a = lab.add_pod(lab.nodes["node1"], "a")
        b = lab.add_pod(lab.nodes["node2"], "b")
        for version in (4, 6):
            assert ping(a.ns, b.address(version)), version
            seen = tcp_source_seen(b.ns, b.address(version), a.ns, b.address(version),
                                   port=7100 + version)
            assert seen == a.address(version), (version, seen)
        routes = lab.nodes["node1"].ns.ip("-6", "route", "show", "proto", "83").stdout
        assert lab.nodes["node2"].pod_cidr6 in routes
