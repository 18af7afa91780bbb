"""64 pods added at once against one network; then the same with some plugin
processes killed with SIGKILL mid-way.  No address is ever handed out twice,
and GC with the runtime's list of live attachments reclaims what the killed
ones left."""

from __future__ import annotations

import json
import os
import random
import signal
import time

from lab.traffic import ping
from tests.cni.helpers import host_veths, lease_files, netconf

PODS = 64


def _start_add(cni, conf, container_id, pod):
    return cni.popen("skein", "ADD", conf, container_id=container_id, netns=pod.path)


def _pod_ipv4(pod) -> list[str]:
    data = json.loads(pod.ip("-j", "-4", "addr", "show").stdout)
    return [a["local"] for d in data for a in d["addr_info"] if d["ifname"] != "lo"]


def test_64_parallel_adds_get_64_addresses(cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path), subnet="10.77.0.0/24")
    pods = [netns_factory(f"q{i}") for i in range(PODS)]
    procs = [_start_add(cni, conf, f"c{i}", pod) for i, pod in enumerate(pods)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, out + err
        results.append(json.loads(out))
    addresses = [r["ips"][0]["address"] for r in results]
    assert len(set(addresses)) == PODS
    assert len(lease_files(str(tmp_path))) == PODS
    assert len(host_veths(cni.node)) == PODS
    in_kernel = [a for pod in pods for a in _pod_ipv4(pod)]
    assert sorted(in_kernel) == sorted(a.split("/")[0] for a in addresses)
    for pod in random.sample(pods, 4):
        assert ping(pod, "10.77.0.1")


def test_sigkill_mid_add_never_duplicates_and_gc_reclaims(cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path), subnet="10.77.0.0/24")
    pods = [netns_factory(f"k{i}") for i in range(PODS)]
    procs = [_start_add(cni, conf, f"c{i}", pod) for i, pod in enumerate(pods)]
    victims = set(random.sample(range(PODS), 12))
    time.sleep(0.3)  # let some of them get going before the kill
    cni.agent_calls -= len(victims)  # a killed client may never have reached the agent
    for i in victims:
        try:
            os.kill(procs[i].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    survivors = {}
    for i, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=240)
        if proc.returncode == 0:
            survivors[i] = json.loads(out)["ips"][0]["address"].split("/")[0]
        else:
            assert i in victims, f"pod {i} failed without being killed: {out}"
    # A killed plugin's IPAM child (or the agent) may still be finishing: let it.
    cni.wait_quiet()
    # No address lives in two pods, whatever state the killed ADDs left.
    in_kernel = [a for pod in pods for a in _pod_ipv4(pod)]
    assert len(in_kernel) == len(set(in_kernel))
    assert set(survivors.values()) <= set(lease_files(str(tmp_path)))

    # The runtime's view: only the survivors are attachments. GC drops the rest.
    gc = dict(conf, cniVersion="1.1.0", **{"cni.dev/valid-attachments": [
        {"containerID": f"c{i}", "ifname": "eth0"} for i in survivors]})
    res = cni.call("skein", "GC", gc, ifname="")
    assert res.code == 0, res.stdout
    assert set(lease_files(str(tmp_path))) == set(survivors.values())

    # And the runtime's retry (DEL, then ADD) completes every killed pod.
    for i in sorted(set(range(PODS)) - set(survivors)):
        assert cni.call("skein", "DEL", conf, container_id=f"c{i}", netns=pods[i].path).code == 0
        res = cni.call("skein", "ADD", conf, container_id=f"c{i}", netns=pods[i].path)
        assert res.code == 0, res.stdout
    in_kernel = [a for pod in pods for a in _pod_ipv4(pod)]
    assert len(in_kernel) == PODS == len(set(in_kernel)) == len(lease_files(str(tmp_path)))
    assert len(host_veths(cni.node)) == PODS
