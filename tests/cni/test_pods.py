"""A pod gets its network from `skein` on a real kernel, in every CNI version,
with our IPAM and with the reference host-local; traffic proves it works."""

from __future__ import annotations

import json

import pytest

from lab.traffic import ping, tcp_source_seen
from tests.cni.helpers import (
    ALL_VERSIONS,
    REFERENCE_VERSIONS,
    host_veths,
    lease_files,
    netconf,
    pod_address,
)

CASES = [("skein-ipam", v) for v in ALL_VERSIONS] + [("host-local", v)
                                                      for v in REFERENCE_VERSIONS]


@pytest.mark.parametrize(("ipam", "version"), CASES)
def test_two_pods_on_one_bridge(ipam, version, cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path), version=version, ipam_type=ipam)
    pods = [netns_factory(f"p{i}") for i in range(2)]
    results = []
    for i, pod in enumerate(pods):
        res = cni.call("skein", "ADD", conf, container_id=f"ctr{i}", netns=pod.path)
        assert res.code == 0, res.stdout + res.stderr
        assert res.stderr == ""
        results.append(res.json)

    first = results[0]
    assert first["cniVersion"] == version
    names = [i["name"] for i in first["interfaces"]]
    assert names[0] == "cni0" and names[2] == "eth0" and names[1].startswith("veth")
    assert first["interfaces"][2]["sandbox"] == pods[0].path
    ip = first["ips"][0]
    assert ip["interface"] == 2 and ip["gateway"] == "10.77.0.1"
    assert ("version" in ip) == (version < "1.0.0")
    assert {"dst": "0.0.0.0/0", "gw": "10.77.0.1"} in first["routes"]

    # What the result says is what the kernel holds.
    pod_links = {link["ifname"]: link for link in
                 json.loads(pods[0].ip("-j", "link", "show", "eth0").stdout)}
    assert pod_links["eth0"]["address"] == first["interfaces"][2]["mac"]

    a, b = (pod_address(r) for r in results)
    assert a != b
    assert ping(pods[0], "10.77.0.1")
    assert ping(pods[0], b) and ping(pods[1], a)
    assert tcp_source_seen(pods[1], b, pods[0], b) == a

    for i, pod in enumerate(pods):
        res = cni.call("skein", "DEL", conf, container_id=f"ctr{i}", netns=pod.path)
        assert res.code == 0, res.stdout
        assert res.stdout == ""
        assert cni.call("skein", "DEL", conf, container_id=f"ctr{i}",
                        netns=pod.path).code == 0  # idempotent
    assert lease_files(str(tmp_path)) == []
    assert host_veths(cni.node) == []
    assert "eth0" not in pods[0].ip("link").stdout


def test_dual_stack(cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path), subnet6="fd77::/64")
    pods = [netns_factory(f"p{i}") for i in range(2)]
    results = [cni.call("skein", "ADD", conf, container_id=f"c{i}", netns=p.path).json
               for i, p in enumerate(pods)]
    for r in results:
        assert len(r["ips"]) == 2, r
        assert {"dst": "::/0", "gw": "fd77::1"} in r["routes"]
    b6 = pod_address(results[1], 6)
    assert ping(pods[0], b6)
    assert ping(pods[0], "fd77::1")
    assert tcp_source_seen(pods[1], b6, pods[0], b6) == pod_address(results[0], 6)
    bridge_addrs = cni.node.ip("-j", "addr", "show", "cni0").stdout
    assert "fd77::1" in bridge_addrs and "10.77.0.1" in bridge_addrs
    # The node ends make no IPv6 address of their own (nothing of theirs is
    # flooded to the bridge's other ports); the pods' IPv6 works, above.
    for name in host_veths(cni.node):
        [link] = json.loads(cni.node.ip("-j", "-d", "link", "show", "dev", name).stdout)
        assert link["inet6_addr_gen_mode"] == "none"
        [addrs] = json.loads(cni.node.ip("-j", "addr", "show", "dev", name).stdout)
        assert [a for a in addrs["addr_info"] if a["family"] == "inet6"] == []


def test_pod_without_default_route_and_options(cni, netns_factory, node, tmp_path):
    conf = netconf(str(tmp_path), isDefaultGateway=False, mtu=1400, hairpinMode=True,
                   promiscMode=True)
    pod = netns_factory("p")
    res = cni.call("skein", "ADD", conf, container_id="c1", netns=pod.path)
    assert res.code == 0, res.stdout
    assert not any(r["dst"] == "0.0.0.0/0" for r in res.json.get("routes", []))
    assert "default" not in pod.ip("route").stdout
    eth0 = json.loads(pod.ip("-j", "link", "show", "eth0").stdout)[0]
    assert eth0["mtu"] == 1400
    bridge = json.loads(node.ip("-j", "-d", "link", "show", "cni0").stdout)[0]
    assert bridge["mtu"] == 1400 and bridge["promiscuity"] >= 1
    veth = res.json["interfaces"][1]["name"]
    port = json.loads(node.run("bridge", "-j", "-d", "link", "show", "dev", veth).stdout)[0]
    assert port["hairpin"] is True


def test_check_detects_a_missing_address(cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path))
    pod = netns_factory("p")
    added = cni.call("skein", "ADD", conf, container_id="c1", netns=pod.path).json
    checked = dict(conf, prevResult=added)
    res = cni.call("skein", "CHECK", checked, container_id="c1", netns=pod.path)
    assert res.code == 0, res.stdout
    pod.ip("addr", "flush", "dev", "eth0")
    res = cni.call("skein", "CHECK", checked, container_id="c1", netns=pod.path)
    assert res.code != 0
    assert "missing" in res.json["msg"]


def test_check_is_refused_before_0_4_0(cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path), version="0.3.1")
    pod = netns_factory("p")
    res = cni.call("skein", "CHECK", conf, container_id="c1", netns=pod.path)
    assert res.code == 1 and res.json["code"] == 1


def test_ip_masq_rules_follow_the_pod(cni, netns_factory, node, tmp_path):
    conf = netconf(str(tmp_path), ipMasq=True)
    pods = [netns_factory(f"p{i}") for i in range(2)]
    addrs = [pod_address(cni.call("skein", "ADD", conf, container_id=f"c{i}",
                                  netns=p.path).json) for i, p in enumerate(pods)]
    rules = node.run("nft", "list", "table", "inet", "skein_masq").stdout
    for a in addrs:
        assert f"ip saddr {a} ip daddr != 10.77.0.0/24" in rules
    assert cni.call("skein", "DEL", conf, container_id="c0", netns=pods[0].path).code == 0
    rules = node.run("nft", "list", "table", "inet", "skein_masq").stdout
    assert addrs[0] not in rules and addrs[1] in rules
    # GC with no valid attachment left removes the last rule (and the lease).
    gc = dict(conf, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []})
    assert cni.call("skein", "GC", gc, ifname="").code == 0
    assert addrs[1] not in node.run("nft", "list", "table", "inet", "skein_masq").stdout
    assert lease_files(str(tmp_path)) == []


def test_masquerade_to_the_outside(cni, netns_factory, node, tmp_path):
    """A pod reaching a host beyond the node is seen with the node's address."""
    from lab.netns import veth_between

    outside = netns_factory("o")
    veth_between(node, "up0", outside, "up0")
    node.ip("addr", "add", "192.0.2.1/24", "dev", "up0")
    outside.ip("addr", "add", "192.0.2.2/24", "dev", "up0")
    conf = netconf(str(tmp_path), ipMasq=True)
    pod = netns_factory("p")
    assert cni.call("skein", "ADD", conf, container_id="c1", netns=pod.path).code == 0
    assert tcp_source_seen(outside, "192.0.2.2", pod, "192.0.2.2") == "192.0.2.1"


def test_del_then_add_again_at_once(cni, netns_factory, node, tmp_path):
    """DEL answers once the pair is gone from both namespaces (the kernel's
    acknowledgement may come later): the same attachment can be added again
    right away, and nothing is left behind."""
    conf = netconf(str(tmp_path))
    pod = netns_factory("p")
    for _ in range(3):
        res = cni.call("skein", "ADD", conf, container_id="c1", netns=pod.path)
        assert res.code == 0, res.stdout + res.stderr
        assert cni.call("skein", "DEL", conf, container_id="c1", netns=pod.path).code == 0
        assert "eth0" not in pod.ip("link").stdout
        assert host_veths(node) == []
    assert lease_files(str(tmp_path)) == []


def test_del_removes_an_interface_add_did_not_make(cni, netns_factory, node, tmp_path):
    """A pod interface whose node end has another name than ADD gives it:
    DEL still deletes it, waiting for the kernel as before."""
    conf = netconf(str(tmp_path))
    pod = netns_factory("p")
    node.ip("link", "add", "other0", "type", "veth", "peer", "name", "eth0", "netns", pod.name)
    assert cni.call("skein", "DEL", conf, container_id="c1", netns=pod.path).code == 0
    assert "eth0" not in pod.ip("link").stdout
    assert "other0" not in node.ip("link").stdout
