"""`skein` in a .conflist with Debian's reference plugins: `tuning` and
`bandwidth` chained after it get a usable prevResult; placed after `loopback`
it keeps that plugin's result and adds its own."""

from __future__ import annotations

import json

from lab.traffic import ping
from tests.cni.conflist import add_list, del_list
from tests.cni.helpers import host_veths, ipam_conf, lease_files


def _skein(data_dir: str) -> dict:
    return {"type": "skein", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True,
            "ipam": ipam_conf("skein-ipam", data_dir)}


def test_tuning_and_bandwidth_after_skein(cni, netns_factory, node, tmp_path):
    conflist = {"cniVersion": "1.0.0", "name": "sknet", "plugins": [
        _skein(str(tmp_path)),
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}, "mtu": 1300},
        {"type": "bandwidth", "ingressRate": 8000000, "ingressBurst": 1000000,
         "egressRate": 8000000, "egressBurst": 1000000},
    ]}
    pod = netns_factory("p")
    result = add_list(cni, conflist, "c1", pod.path)
    assert pod.run("sysctl", "-n", "net.ipv4.conf.eth0.arp_notify").stdout.strip() == "1"
    assert json.loads(pod.ip("-j", "link", "show", "eth0").stdout)[0]["mtu"] == 1300
    host_veth = result["interfaces"][1]["name"]
    qdiscs = node.run("tc", "qdisc", "show", "dev", host_veth).stdout
    assert "tbf" in qdiscs  # bandwidth found our host veth through prevResult
    assert ping(pod, "10.77.0.1")
    del_list(cni, conflist, "c1", pod.path, result)
    assert host_veths(node) == []
    assert lease_files(str(tmp_path)) == []


def test_skein_after_loopback_keeps_prev_result(cni, netns_factory, tmp_path):
    conflist = {"cniVersion": "1.0.0", "name": "sknet", "plugins": [
        {"type": "loopback"},
        _skein(str(tmp_path)),
    ]}
    pod = netns_factory("p")
    result = add_list(cni, conflist, "c1", pod.path)
    names = [i["name"] for i in result["interfaces"]]
    assert names[0] == "lo" and names[1:] == ["cni0", names[2], "eth0"]
    by_interface = {ip["address"]: ip["interface"] for ip in result["ips"]}
    assert by_interface["127.0.0.1/8"] == 0
    ours = [address for address, index in by_interface.items() if index == 3]
    assert len(ours) == 1 and ours[0].startswith("10.77.0.")
    assert ping(pod, "127.0.0.1") and ping(pod, "10.77.0.1")
    del_list(cni, conflist, "c1", pod.path, result)
    assert lease_files(str(tmp_path)) == []
