"""skein-ipam exec'd as a runtime execs it: CNI_* environment, network config on stdin."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.cni import spec
from tests.ipam.helpers import SKEIN_IPAM, call, lease_files, net_config

V4_29 = [[{"subnet": "10.1.0.0/29", "rangeStart": "10.1.0.2", "rangeEnd": "10.1.0.6"}]]
DUAL = [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]


def test_version() -> None:
    out = call("VERSION", "")
    assert out.code == 0 and out.json == spec.version_info()


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_add_renders_every_version(tmp_path: Path, version: str) -> None:
    conf = net_config(tmp_path, DUAL, version=version,
                      routes=[{"dst": "0.0.0.0/0"}, {"dst": "fd00::/8", "gw": "fd00:1::1"}])
    out = call("ADD", conf, "c1")
    assert out.code == 0, out.stdout
    legacy = version < "1.0.0"
    v4 = {"address": "10.1.0.2/24", "gateway": "10.1.0.1"}
    v6 = {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}
    if legacy:
        v4, v6 = {"version": "4", **v4}, {"version": "6", **v6}
    # An IPAM result has no interfaces, so its IPs carry no "interface" index.
    assert out.json == {"cniVersion": version, "ips": [v4, v6],
                        "routes": conf["ipam"]["routes"], "dns": {}}
    assert lease_files(tmp_path) == {"10.1.0.2": "c1\r\neth0", "fd00:1::2": "c1\r\neth0"}


def test_dns_from_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\nsearch svc.cluster.local\noptions ndots:5\n")
    out = call("ADD", net_config(tmp_path, resolvConf=str(resolv)), "c1")
    assert out.json["dns"] == {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"],
                               "options": ["ndots:5"]}


def test_legacy_top_level_subnet(tmp_path: Path) -> None:
    conf = net_config(tmp_path, [])
    del conf["ipam"]["ranges"]
    conf["ipam"].update(subnet="10.5.0.0/16", rangeStart="10.5.3.0", gateway="10.5.0.254")
    assert call("ADD", conf, "c1").json["ips"] == [
        {"address": "10.5.3.0/16", "gateway": "10.5.0.254"}]


def test_exhausted_range_names_the_range(tmp_path: Path) -> None:
    conf = net_config(tmp_path, V4_29)
    assert [call("ADD", conf, f"c{i}").ips()[0] for i in range(5)] == [
        f"10.1.0.{i}" for i in range(2, 7)]
    code, msg, details = call("ADD", conf, "c9").error()
    assert code == spec.ERR_ADDRESS_EXHAUSTED
    assert msg == "no free address in range 10.1.0.2-10.1.0.6 of network mynet"
    assert "5 addresses" in details and "ipam.ranges[0]" in details
    assert len(lease_files(tmp_path)) == 5


def test_exhausted_second_range_set_releases_the_first(tmp_path: Path) -> None:
    ranges = [[{"subnet": "10.1.0.0/24"}],
              [{"subnet": "fd00:1::/64", "rangeStart": "fd00:1::9", "rangeEnd": "fd00:1::9"}]]
    conf = net_config(tmp_path, ranges)
    assert call("ADD", conf, "c1").ips() == ["10.1.0.2", "fd00:1::9"]
    code, msg, _ = call("ADD", conf, "c2").error()
    assert (code, msg) == (spec.ERR_ADDRESS_EXHAUSTED,
                           "no free address in range fd00:1::9-fd00:1::9 of network mynet")
    # Nothing leaked: the IPv4 address taken by the failed ADD is free again.
    assert lease_files(tmp_path) == {"10.1.0.2": "c1\r\neth0", "fd00:1::9": "c1\r\neth0"}
    assert call("STATUS", conf).error()[0] == spec.ERR_NOT_AVAILABLE


@pytest.mark.parametrize(("ipam", "field"), [
    ({"ranges": [[{"subnet": "10.1.0.0/33"}]]}, "ipam.ranges[0][0].subnet"),
    ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}]]},
     "ipam.ranges[0][0].rangeStart"),
    ({"ranges": [[{"rangeStart": "10.1.0.1"}]]}, "ipam.ranges[0][0].subnet"),
    ({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.128/25"}]]},
     "ipam.ranges[1]"),
    ({"ranges": None}, "ipam.ranges"),
])
def test_bad_config_is_error_7(tmp_path: Path, ipam: dict[str, object], field: str) -> None:
    conf = net_config(tmp_path, **ipam)  # type: ignore[arg-type]
    if ipam.get("ranges", []) is None:
        del conf["ipam"]["ranges"]
    for command in ("ADD", "DEL", "CHECK", "STATUS", "GC"):
        code, msg, details = call(command, conf, "c1").error()
        assert code == spec.ERR_INVALID_CONFIG and msg.startswith(field + ":"), msg
        assert details
    assert not (tmp_path / "mynet").exists()  # refused before touching the disk


def test_missing_ipam_section_is_error_7(tmp_path: Path) -> None:
    conf = {"cniVersion": "1.0.0", "name": "mynet", "type": "bridge"}
    assert call("ADD", conf, "c1").error()[:2] == (
        spec.ERR_INVALID_CONFIG, "ipam: the network config has no ipam section")


def test_io_failures_are_error_5(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    code, msg, _ = call("ADD", net_config(tmp_path / "not-a-dir"), "c1").error()
    assert code == spec.ERR_IO and "mynet" in msg
    conf = net_config(tmp_path, resolvConf=str(tmp_path / "missing.conf"))
    code, msg, _ = call("ADD", conf, "c1").error()
    assert code == spec.ERR_IO and "ipam.resolvConf" in msg


def test_lock_held_too_long_is_error_11(tmp_path: Path) -> None:
    conf = net_config(tmp_path)
    call("DEL", conf, "c0")  # creates the directory and the lock file
    fd = os.open(tmp_path / "mynet" / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        out = call("ADD", conf, "c1", extra_env={"SKEIN_IPAM_LOCK_TIMEOUT": "0.3"})
        code, msg, _ = out.error()
        assert code == spec.ERR_TRY_AGAIN_LATER and "lock of network mynet" in msg
    finally:
        os.close(fd)
    assert lease_files(tmp_path) == {}
    assert call("ADD", conf, "c1").ips() == ["10.1.0.2"]


def test_duplicate_add_is_refused_like_host_local(tmp_path: Path) -> None:
    conf = net_config(tmp_path)
    assert call("ADD", conf, "c1").ips() == ["10.1.0.2"]
    code, msg, details = call("ADD", conf, "c1").error()
    assert code == spec.ERR_IPAM_FAILED and "c1/eth0 already holds 10.1.0.2" in msg
    assert "DEL" in details
    assert call("ADD", conf, "c1", ifname="net1").ips() == ["10.1.0.3"]
    assert lease_files(tmp_path) == {"10.1.0.2": "c1\r\neth0", "10.1.0.3": "c1\r\nnet1"}


def test_del_is_idempotent_and_matches_container_and_ifname(tmp_path: Path) -> None:
    conf = net_config(tmp_path, DUAL)
    assert call("DEL", conf, "c1").code == 0  # nothing leased yet
    call("ADD", conf, "c1")
    call("ADD", conf, "c1", ifname="net1")
    assert call("DEL", conf, "c1", ifname="net1").code == 0
    assert set(lease_files(tmp_path)) == {"10.1.0.2", "fd00:1::2"}
    assert call("DEL", conf, "c1").code == 0
    assert call("DEL", conf, "c1").code == 0
    assert lease_files(tmp_path) == {}


def test_round_robin_across_processes(tmp_path: Path) -> None:
    conf = net_config(tmp_path)
    assert call("ADD", conf, "c1").ips() == ["10.1.0.2"]
    call("DEL", conf, "c1")
    assert call("ADD", conf, "c2").ips() == ["10.1.0.3"]
    assert (tmp_path / "mynet" / "last_reserved_ip.0").read_text() == "10.1.0.3"


def test_legacy_id_only_lease(tmp_path: Path) -> None:
    conf = net_config(tmp_path)
    call("DEL", conf, "c0")
    (tmp_path / "mynet" / "10.1.0.7").write_text("old")
    assert call("CHECK", conf, "old").code == 0
    assert call("ADD", conf, "old").error()[0] == spec.ERR_IPAM_FAILED
    assert call("DEL", conf, "old").code == 0
    assert lease_files(tmp_path) == {}


def test_check(tmp_path: Path) -> None:
    conf = net_config(tmp_path, DUAL)
    code, msg, _ = call("CHECK", conf, "c1").error()
    assert code == spec.ERR_UNKNOWN_CONTAINER and "c1/eth0 holds no address" in msg
    result = call("ADD", conf, "c1").json
    assert call("CHECK", {**conf, "prevResult": result}, "c1").code == 0
    wrong = json.loads(json.dumps(result))
    wrong["ips"][0]["address"] = "10.1.0.77/24"
    code, msg, _ = call("CHECK", {**conf, "prevResult": wrong}, "c1").error()
    assert code == spec.ERR_IPAM_FAILED and "10.1.0.77" in msg
    assert call("CHECK", conf, "c1", ifname="net1").error()[0] == spec.ERR_UNKNOWN_CONTAINER


def test_status(tmp_path: Path) -> None:
    conf = net_config(tmp_path, V4_29)
    assert call("STATUS", conf).code == 0
    for i in range(5):
        call("ADD", conf, f"c{i}")
    code, msg, details = call("STATUS", conf).error()
    assert code == spec.ERR_NOT_AVAILABLE
    assert msg == "no free address in range 10.1.0.2-10.1.0.6 of network mynet"
    call("DEL", conf, "c3")
    assert call("STATUS", conf).code == 0


def test_gc_releases_exactly_what_is_not_attached(tmp_path: Path) -> None:
    conf = net_config(tmp_path, DUAL)
    for cid in ("keep", "drop"):
        call("ADD", conf, cid)
    call("ADD", conf, "keep", ifname="net1")
    net = tmp_path / "mynet"
    (net / "10.1.0.50").write_text("legacy")          # legacy lease of a live container
    (net / "10.1.0.51").write_text("gone")            # legacy lease of a dead one
    (net / "10.1.0.52").write_bytes(b"")              # a crashed host-local's empty lease
    (net / "notes.txt").write_text("drop\r\neth0")   # not a lease: never touched
    (net / "10.1.0.60").mkdir()                       # not a file: never touched
    other = net_config(tmp_path, DUAL, name="other")
    call("ADD", other, "drop")                        # another network: never touched
    valid = [{"containerID": "keep", "ifname": "eth0"},
             {"containerID": "legacy", "ifname": "eth0"}]
    out = call("GC", {**conf, "cni.dev/valid-attachments": valid})
    assert out.code == 0, out.stdout
    assert {p.name for p in net.iterdir()} == {
        "10.1.0.2", "fd00:1::2", "10.1.0.50", "notes.txt", "10.1.0.60", "lock",
        "last_reserved_ip.0", "last_reserved_ip.1"}
    assert (net / "10.1.0.50").read_text() == "legacy"
    assert set(lease_files(tmp_path, "other")) == {"10.1.0.2", "fd00:1::2"}
    # One malformed entry refuses the whole list: nothing is released.
    bad = [{"containerID": "keep", "ifname": "eth0"}, {"containerID": "keep"}]
    code, msg, _ = call("GC", {**conf, "cni.dev/valid-attachments": bad}).error()
    assert code == spec.ERR_INVALID_CONFIG and "valid-attachments[1]" in msg
    assert {"10.1.0.2", "fd00:1::2", "10.1.0.50"} <= {p.name for p in net.iterdir()}
    # No list at all is an empty one, as for the reference plugins (libcni
    # leaves it out when the runtime names no attachment, after it has DELeted
    # every one it knew): every lease of the network goes.
    assert call("GC", conf).code == 0
    assert {p.name for p in net.iterdir()} == {
        "notes.txt", "10.1.0.60", "lock", "last_reserved_ip.0", "last_reserved_ip.1"}
    assert set(lease_files(tmp_path, "other")) == {"10.1.0.2", "fd00:1::2"}


@pytest.mark.parametrize(("how", "extra"), [
    ("CNI_ARGS", {}),
    ("runtimeConfig", {"runtimeConfig": {"ips": ["10.1.0.9/24"]}}),
    ("args", {"args": {"cni": {"ips": ["10.1.0.9"]}}}),
])
def test_requested_address(tmp_path: Path, how: str, extra: dict[str, object]) -> None:
    conf = {**net_config(tmp_path), **extra}
    args = "IgnoreUnknown=1;IP=10.1.0.9;K8S_POD_NAME=p" if how == "CNI_ARGS" else ""
    assert call("ADD", conf, "c1", args=args).ips() == ["10.1.0.9"]
    code, msg, _ = call("ADD", conf, "c2", args=args).error()
    assert code == spec.ERR_IPAM_FAILED and "already leased to c1/eth0" in msg
    # Without a request the round robin goes on after the requested address.
    assert call("ADD", net_config(tmp_path), "c3").ips() == ["10.1.0.10"]


def test_requested_gateway_is_error_7(tmp_path: Path) -> None:
    code, msg, _ = call("ADD", net_config(tmp_path), "c1", args="IP=10.1.0.1").error()
    assert code == spec.ERR_INVALID_CONFIG and "the gateway" in msg


def test_entry_point_imports_only_the_standard_library_and_ours() -> None:
    """skein-ipam runs once per pod: no pyroute2, netaddr, yaml... on its import path."""
    code = ("import sys; before = set(sys.modules); import ipam.main; "
            "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert {"ipam", "foundation"} <= loaded
    assert loaded - set(sys.stdlib_module_names) == {"ipam", "foundation"}
    assert "from ipam.main import main" in Path(SKEIN_IPAM).read_text()
