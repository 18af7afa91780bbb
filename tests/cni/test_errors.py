"""Bad input gets the spec's error JSON with the right code, never a
traceback, and leaves nothing behind: no veth, no lease, no bridge change."""

from __future__ import annotations

import json

import pytest

from tests.cni.helpers import host_veths, lease_files, netconf


def _assert_clean_error(res, code: int) -> dict:
    assert res.code != 0
    assert res.stderr == ""
    assert "Traceback" not in res.stdout
    err = json.loads(res.stdout)
    assert err["code"] == code, err
    assert set(err) <= {"cniVersion", "code", "msg", "details"} and err["msg"]
    return err


def _assert_nothing_left(cni, pod, data_dir):
    assert host_veths(cni.node) == []
    assert lease_files(data_dir) == []
    if pod is not None:
        assert [link for link in json.loads(pod.ip("-j", "link").stdout)
                if link["ifname"] != "lo"] == []


def test_version_lists_every_supported_version(cni):
    res = cni.call("skein", "VERSION", "")
    assert res.code == 0
    assert res.json["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize(("stdin", "code"), [
    ("{not json", 6),
    ("[1, 2]", 6),
    ('{"name": "x", "type": "skein", "ipam": {"type": "skein-ipam"}}', 7),
    ('{"cniVersion": "9.9.9", "name": "x", "type": "skein"}', 1),
    ('{"cniVersion": "banana", "name": "x", "type": "skein"}', 1),
])
def test_undecodable_or_unversioned_config(cni, netns_factory, stdin, code, tmp_path):
    pod = netns_factory("p")
    res = cni.call("skein", "ADD", stdin, container_id="c1", netns=pod.path)
    _assert_clean_error(res, code)
    _assert_nothing_left(cni, pod, str(tmp_path))


@pytest.mark.parametrize(("field", "value", "code", "named"), [
    ("name", None, 7, "name"),
    ("ipam", None, 7, "ipam"),
    ("ipam", {"type": "no-such-ipam"}, 7, "no-such-ipam"),
    ("mtu", "big", 7, "mtu"),
    ("isGateway", "yes", 7, "isGateway"),
    ("vlan", 100, 2, "vlan"),
    ("vxlan", {"vni": -1}, 7, "vxlan.vni"),
])
def test_bad_fields_are_named(cni, netns_factory, tmp_path, field, value, code, named):
    conf = netconf(str(tmp_path))
    if value is None:
        del conf[field]
    else:
        conf[field] = value
    pod = netns_factory("p")
    err = _assert_clean_error(cni.call("skein", "ADD", conf, container_id="c1",
                                       netns=pod.path), code)
    assert named in err["msg"] + err.get("details", "")
    _assert_nothing_left(cni, pod, str(tmp_path))


def test_bad_cidr_in_ipam(cni, netns_factory, tmp_path):
    conf = netconf(str(tmp_path), subnet="10.77.0.300/24")
    pod = netns_factory("p")
    err = _assert_clean_error(cni.call("skein", "ADD", conf, container_id="c1",
                                       netns=pod.path), 7)
    assert "10.77.0.300" in err["msg"] + err.get("details", "")
    _assert_nothing_left(cni, pod, str(tmp_path))


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_missing_environment(cni, netns_factory, tmp_path, missing):
    pod = netns_factory("p")
    kwargs = {"container_id": "c1", "netns": pod.path, "ifname": "eth0"}
    kwargs[{"CNI_CONTAINERID": "container_id", "CNI_NETNS": "netns",
            "CNI_IFNAME": "ifname"}[missing]] = ""
    err = _assert_clean_error(cni.call("skein", "ADD", netconf(str(tmp_path)), **kwargs), 4)
    assert missing in err["msg"]
    _assert_nothing_left(cni, pod, str(tmp_path))


def test_unknown_command(cni, tmp_path):
    _assert_clean_error(cni.call("skein", "FROB", netconf(str(tmp_path))), 4)


def test_missing_netns(cni, tmp_path, tag):
    missing = f"/var/run/netns/sk{tag}gone"
    err = _assert_clean_error(cni.call("skein", "ADD", netconf(str(tmp_path)),
                                       container_id="c1", netns=missing), 3)
    assert missing in err["msg"]
    _assert_nothing_left(cni, None, str(tmp_path))
    # DEL of a pod whose namespace is gone is success.
    assert cni.call("skein", "DEL", netconf(str(tmp_path)), container_id="c1",
                    netns=missing).code == 0


@pytest.mark.parametrize("what", ["file", "uts namespace"])
def test_netns_that_is_no_network_namespace(cni, tmp_path, what):
    """CNI_NETNS names a plain file, or a namespace of another kind: error 3,
    nothing made."""
    if what == "file":
        path = tmp_path / "not-a-netns"
        path.write_text("")
        netns = str(path)
    else:
        netns = "/proc/self/ns/uts"  # the plugin's own: a namespace, but not a network one
    err = _assert_clean_error(cni.call("skein", "ADD", netconf(str(tmp_path / "ipam")),
                                       container_id="c1", netns=netns), 3)
    assert "not a network namespace" in err["msg"] and netns in err["msg"]
    _assert_nothing_left(cni, None, str(tmp_path / "ipam"))


def test_ifname_that_already_exists(cni, netns_factory, tmp_path):
    pod = netns_factory("p")
    pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    err = _assert_clean_error(cni.call("skein", "ADD", netconf(str(tmp_path)),
                                       container_id="c1", netns=pod.path), 4)
    assert "eth0" in err["msg"]
    assert host_veths(cni.node) == []
    assert lease_files(str(tmp_path)) == []


def test_exhausted_range_names_it_and_leaks_nothing(cni, netns_factory, tmp_path):
    # A /29 leaves .2-.6 after the network, the gateway (.1) and the broadcast.
    conf = netconf(str(tmp_path), subnet="10.77.0.0/29")
    pods = [netns_factory(f"p{i}") for i in range(6)]
    for i, pod in enumerate(pods[:5]):
        assert cni.call("skein", "ADD", conf, container_id=f"c{i}", netns=pod.path).code == 0
    veths_before = host_veths(cni.node)
    err = _assert_clean_error(cni.call("skein", "ADD", conf, container_id="c5",
                                       netns=pods[5].path), 100)
    assert "10.77.0.2" in err["msg"] + err.get("details", "")
    assert host_veths(cni.node) == veths_before
    assert len(lease_files(str(tmp_path))) == 5
    assert [link for link in json.loads(pods[5].ip("-j", "link").stdout)
            if link["ifname"] != "lo"] == []
    # STATUS says the network cannot take another pod.
    status = cni.call("skein", "STATUS", dict(conf, cniVersion="1.1.0"), ifname="")
    assert status.code != 0 and status.json["code"] == 50


def test_status_and_gc_need_1_1_0(cni, tmp_path):
    for command in ("STATUS", "GC"):
        res = cni.call("skein", command, netconf(str(tmp_path), version="1.0.0"), ifname="")
        _assert_clean_error(res, 1)
    assert cni.call("skein", "STATUS", netconf(str(tmp_path), version="1.1.0"),
                    ifname="").code == 0


def test_bridge_name_taken_by_another_device(cni, netns_factory, node, tmp_path):
    node.ip("link", "add", "cni0", "type", "veth", "peer", "name", "cni0p")
    pod = netns_factory("p")
    err = _assert_clean_error(cni.call("skein", "ADD", netconf(str(tmp_path)),
                                       container_id="c1", netns=pod.path), 7)
    assert "cni0" in err["msg"]
    assert lease_files(str(tmp_path)) == []


def test_pair_refused_by_the_kernel_gives_back_the_lease(cni, netns_factory, tmp_path):
    """The kernel refuses the veth (a multicast MAC for the pod end) while an
    exec'd IPAM plugin may already have allocated, concurrently: the lease is
    given back and nothing else is left (inside the agent, IPAM is not asked
    at all: the pair comes first)."""
    pod = netns_factory("p")
    res = cni.call("skein", "ADD", netconf(str(tmp_path)), container_id="c1", netns=pod.path,
                   args="IgnoreUnknown=1;MAC=01:00:5e:00:00:01")
    err = _assert_clean_error(res, 999)
    assert "assign requested address" in err["msg"], err
    _assert_nothing_left(cni, pod, str(tmp_path))
    # The same pod comes up once the MAC is a unicast one.
    res = cni.call("skein", "ADD", netconf(str(tmp_path)), container_id="c1", netns=pod.path,
                   args="IgnoreUnknown=1;MAC=02:00:5e:00:00:01")
    assert res.code == 0, res.stdout
    assert res.json["interfaces"][2]["mac"] == "02:00:5e:00:00:01"
