"""skein-ipam next to the reference plugins of /usr/lib/cni (CNI plugins v1.1.1).

host-local shares the data directory with us (same network, same leases, same
lock); the reference bridge delegates to us through CNI_PATH and its pods must
really talk.  The reference speaks CNI up to 1.0.0, so that is what we use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from foundation.cni.spec import ERR_IPAM_FAILED
from ipam.store import DiskStore
from lab.traffic import ping
from tests.conftest import CniRunner
from tests.ipam.helpers import HOST_LOCAL, SCRIPTS_DIR, call, lease_files, net_config, spawn

DUAL = [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]


def host_local(command: str, conf: dict[str, Any], cid: str = "", ifname: str = "eth0"
               ) -> Any:
    return call(command, conf, cid, ifname, binary=HOST_LOCAL)


def test_leases_are_interchangeable_with_host_local(tmp_path: Path) -> None:
    conf = net_config(tmp_path, DUAL, version="1.0.0")
    # host-local first; we continue its round robin and respect its leases...
    assert host_local("ADD", conf, "h1").ips() == ["10.1.0.2", "fd00:1::2"]
    assert call("ADD", conf, "s1").ips() == ["10.1.0.3", "fd00:1::3"]
    # ...and it continues ours.
    assert host_local("ADD", conf, "h2").ips() == ["10.1.0.4", "fd00:1::4"]
    net = tmp_path / "mynet"
    assert lease_files(tmp_path) == {
        "10.1.0.2": "h1\r\neth0", "fd00:1::2": "h1\r\neth0",
        "10.1.0.3": "s1\r\neth0", "fd00:1::3": "s1\r\neth0",
        "10.1.0.4": "h2\r\neth0", "fd00:1::4": "h2\r\neth0"}
    assert (os.stat(net / "10.1.0.2").st_mode == os.stat(net / "10.1.0.3").st_mode)
    assert (net / "last_reserved_ip.1").read_text() == "fd00:1::4"

    # Each one sees the other's leases.
    assert call("CHECK", conf, "h1").code == 0
    assert host_local("CHECK", conf, "s1").code == 0
    assert call("ADD", conf, "h1").error()[0] == ERR_IPAM_FAILED
    assert host_local("ADD", conf, "s1").code != 0

    # Each one releases the other's leases, and only those.
    assert call("DEL", conf, "h1").code == 0
    assert host_local("DEL", conf, "s1").code == 0
    assert set(lease_files(tmp_path)) == {"10.1.0.4", "fd00:1::4"}
    assert call("DEL", conf, "h2").code == 0
    assert lease_files(tmp_path) == {}
    assert host_local("CHECK", conf, "h2").code != 0


def test_legacy_host_local_lease_is_released_by_host_local_and_us(tmp_path: Path) -> None:
    conf = net_config(tmp_path, version="1.0.0")
    call("DEL", conf, "x")
    for cid, address in (("old1", "10.1.0.20"), ("old2", "10.1.0.21")):
        (tmp_path / "mynet" / address).write_text(cid)
    assert host_local("DEL", conf, "old1").code == 0
    assert call("DEL", conf, "old2").code == 0
    assert lease_files(tmp_path) == {}


def _waiters_on(path: Path) -> int:
    """Blocked flock requests on `path`'s inode ('->' lines of /proc/locks)."""
    st = os.stat(path)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return sum(1 for line in f if "->" in line and inode in line)


def test_host_local_waits_for_our_lock(tmp_path: Path) -> None:
    conf = net_config(tmp_path, version="1.0.0")
    call("DEL", conf, "x")
    with DiskStore.open(str(tmp_path), "mynet"):
        proc = spawn("ADD", conf, "h1", binary=HOST_LOCAL)
        # Rather than sleeping, wait until the kernel shows a process blocked on our lock.
        lock = tmp_path / "mynet" / "lock"
        while _waiters_on(lock) == 0 and proc.poll() is None:
            time.sleep(0.002)
        assert proc.poll() is None and lease_files(tmp_path) == {}
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert lease_files(tmp_path) == {"10.1.0.2": "h1\r\neth0"}


def test_reference_bridge_with_skein_ipam_gives_pods_that_talk(
        netns_factory: Any, tmp_path: Path, tag: str) -> None:
    node, pod1, pod2 = netns_factory("n"), netns_factory("a"), netns_factory("b")
    cni = CniRunner(node, f"{SCRIPTS_DIR}:/usr/lib/cni")
    conf = {
        "cniVersion": "1.0.0", "name": f"sk{tag}", "type": "bridge", "bridge": f"skb{tag}",
        "isGateway": True,
        "ipam": {"type": "skein-ipam", "dataDir": str(tmp_path),
                 "ranges": [[{"subnet": "10.77.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }
    addresses = []
    for pod in (pod1, pod2):
        out = cni.call("bridge", "ADD", conf, container_id=pod.name, netns=pod.path)
        assert out.code == 0, out.stdout + out.stderr
        addresses.append(out.json["ips"][0]["address"].split("/")[0])
    assert addresses == ["10.77.0.2", "10.77.0.3"]
    assert lease_files(tmp_path, f"sk{tag}") == {
        "10.77.0.2": f"{pod1.name}\r\neth0", "10.77.0.3": f"{pod2.name}\r\neth0"}
    assert ping(pod1, addresses[1]) and ping(pod2, addresses[0])
    for pod in (pod1, pod2):
        out = cni.call("bridge", "DEL", conf, container_id=pod.name, netns=pod.path)
        assert out.code == 0, out.stdout + out.stderr
    assert lease_files(tmp_path, f"sk{tag}") == {}
