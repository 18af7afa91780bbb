"""Item 1: a second ADD for a running pod's container ID and interface, from
another network namespace, is refused and leaves the running pod alone.

Before: `veth.create_pair` deleted the node end named after (container ID,
ifname) as "its own leftover", the running pod lost eth0 and kept its lease,
and only then did IPAM refuse the duplicate.  The reference `bridge` names its
node ends at random and never meets the first pod's.
"""

from __future__ import annotations

import json
import os
import sys

from foundation.cni.names import host_veth_name
from lab.netns import Netns
from tests.cni.helpers import host_veths, lease_files, netconf, pod_address


def pod_has_eth0_with(pod: Netns, address: str) -> bool:
    proc = pod.ip("-j", "-4", "addr", "show", "dev", "eth0", check=False)
    if proc.returncode != 0:
        return False
    info = json.loads(proc.stdout)
    return bool(info) and address in [a["local"] for a in info[0]["addr_info"]]


def test_duplicate_add_from_another_netns_leaves_the_running_pod_alone(
        cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path / "ipam"))
    running, intruder = netns_factory("pa"), netns_factory("pb")
    first = cni.call("skein", "ADD", conf, container_id="c1", netns=running.path)
    assert first.code == 0, first.stdout
    address = pod_address(first.json)
    node_end = first.json["interfaces"][1]["name"]

    second = cni.call("skein", "ADD", conf, container_id="c1", netns=intruder.path)
    assert second.code != 0, second.stdout

    # The running pod keeps eth0, its address, its node end and its lease; it
    # still answers from the node; the intruder got nothing.
    assert pod_has_eth0_with(running, address), "the running pod lost eth0"
    assert host_veths(cni.node) == [node_end]
    assert lease_files(str(tmp_path / "ipam")) == [address]
    assert cni.node.run("ping", "-c", "1", "-W", "2", address, check=False).returncode == 0
    assert "eth0" not in intruder.ip("link").stdout
    # Refused before anything was made, saying why.
    assert second.json["code"] == 4 and "attached already" in second.json["msg"]

    assert cni.call("skein", "DEL", conf, container_id="c1", netns=running.path).code == 0
    assert host_veths(cni.node) == [] and lease_files(str(tmp_path / "ipam")) == []


def test_a_real_leftover_is_still_replaced(cni, netns_factory, tmp_path):
    """What the leftover rule is for: a node end whose peer is in the pod's own
    namespace under another name (an ADD interrupted, then the pod's interface
    renamed) is this attachment's, and a new ADD replaces it."""
    conf = netconf(str(tmp_path / "ipam"))
    pod = netns_factory("p")
    node_end = host_veth_name("c1", "eth0")
    cni.node.ip("link", "add", node_end, "type", "veth", "peer", "name", "old0",
                "netns", pod.name)
    res = cni.call("skein", "ADD", conf, container_id="c1", netns=pod.path)
    assert res.code == 0, res.stdout
    assert host_veths(cni.node) == [node_end]
    assert "old0" not in pod.ip("link").stdout  # the leftover's pod end went with it
    assert cni.call("skein", "DEL", conf, container_id="c1", netns=pod.path).code == 0


def test_leftover_index_tells_another_pods_node_end(node, netns_factory):
    """The check DEL needs as well (cni_plugin/plugin.py, see the README's
    "Adversarial tier"): a DEL naming the intruder's namespace must not remove
    the running pod's node end."""
    running, other = netns_factory("pa"), netns_factory("pb")
    name = host_veth_name("c1", "eth0")
    node.ip("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", running.name)
    script = (
        "import os, sys\n"
        "from cni_plugin import veth\n"
        "from foundation import netlink\n"
        "from foundation.netlink import netns\n"
        "host = netlink.open_route_socket()\n"
        "for path in sys.argv[2:]:\n"
        "    fd = netns.open_netns(path)\n"
        "    print(veth.leftover_index(host, sys.argv[1], fd) is not None)\n"
        "    os.close(fd)\n"
        "print(veth.leftover_index(host, sys.argv[1], None) is not None)\n")
    out = node.run(sys.executable, "-c", script, name, running.path, other.path,
                   env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout.split()
    # Its own namespace: a leftover; another one: not; none given: DEL speaks for it.
    assert out == ["True", "False", "True"]


def test_del_of_the_refused_duplicate_leaves_the_running_pod_alone(
        node, cni_path, netns_factory, tmp_path):
    from tests.conftest import CniRunner

    cni = CniRunner(node, cni_path)
    conf = netconf(str(tmp_path / "ipam"))
    running, intruder = netns_factory("pa"), netns_factory("pb")
    first = cni.call("skein", "ADD", conf, container_id="c1", netns=running.path)
    assert first.code == 0, first.stdout
    assert cni.call("skein", "ADD", conf, container_id="c1", netns=intruder.path).code != 0
    # A runtime cleans up after a failed ADD with DEL, naming the failed one's namespace.
    cni.call("skein", "DEL", conf, container_id="c1", netns=intruder.path)
    assert host_veths(node) == [first.json["interfaces"][1]["name"]]
