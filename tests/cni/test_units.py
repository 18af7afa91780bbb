"""Pure parts of the plugin: the protocol skeleton, config parsing, results
in every version, route planning and the masquerade rules.  No root needed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni_plugin import masq
from cni_plugin.config import parse_netconf
from cni_plugin.plugin import plan_routes, valid_attachments
from foundation.cni import spec
from foundation.cni.skel import dispatch, parse_cni_args
from foundation.cni.spec import CniError

BASE = {"cniVersion": "1.0.0", "name": "n", "type": "skein", "ipam": {"type": "skein-ipam"}}
RESULT = {
    "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                   {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/x", "mtu": 1450}],
    "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 1},
            {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400}],
    "dns": {"nameservers": ["10.0.0.10"]},
}


class Recorder:
    def __init__(self):
        self.calls = []

    def add(self, req):
        self.calls.append(req)
        return RESULT

    def delete(self, req):
        self.calls.append(req)

    check = status = gc = delete


def env(command, **extra):
    base = {"CNI_COMMAND": command, "CNI_CONTAINERID": "abc", "CNI_NETNS": "/var/run/netns/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    base.update(extra)
    return base


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_add_result_in_each_version(version):
    stdin = json.dumps(dict(BASE, cniVersion=version)).encode()
    code, out = dispatch(Recorder(), env("ADD"), stdin)
    assert code == 0
    result = json.loads(out)
    assert result["cniVersion"] == version
    legacy = version < "1.0.0"
    assert all(("version" in ip) == legacy for ip in result["ips"])
    if legacy:
        assert [ip["version"] for ip in result["ips"]] == ["4", "6"]
    assert ("mtu" in result["interfaces"][1]) == (version == "1.1.0")
    assert ("mtu" in result["routes"][0]) == (version == "1.1.0")


def test_normalize_then_render_round_trips():
    old = spec.result_for_version(RESULT, "0.4.0")
    assert spec.result_for_version(spec.normalize_result(old), "0.4.0") == old


@pytest.mark.parametrize(("environ", "code", "named"), [
    ({"CNI_COMMAND": ""}, 4, "CNI_COMMAND"),
    ({"CNI_COMMAND": "NOPE"}, 4, "CNI_COMMAND"),
    ({"CNI_PATH": ""}, 4, "CNI_PATH"),
    ({"CNI_IFNAME": "a/b"}, 4, "CNI_IFNAME"),
    ({"CNI_IFNAME": "x" * 16}, 4, "CNI_IFNAME"),
    ({"CNI_CONTAINERID": "bad id"}, 4, "CNI_CONTAINERID"),
    ({"CNI_ARGS": "novalue"}, 4, "CNI_ARGS"),
])
def test_environment_errors_name_the_variable(environ, code, named):
    rec = Recorder()
    status, out = dispatch(rec, env("ADD", **environ), json.dumps(BASE).encode())
    err = json.loads(out)
    assert status == 1 and err["code"] == code and named in err["msg"]
    assert rec.calls == []


def test_internal_errors_become_json_not_tracebacks():
    class Broken(Recorder):
        def add(self, req):
            raise RuntimeError("boom")

    status, out = dispatch(Broken(), env("ADD"), json.dumps(BASE).encode())
    err = json.loads(out)
    assert status == 1 and err["code"] == 999 and "boom" in err["msg"]


@given(st.binary(max_size=200))
def test_any_stdin_gives_json(data):
    status, out = dispatch(Recorder(), env("ADD"), data)
    parsed = json.loads(out)
    assert status in (0, 1)
    if status == 1:
        assert isinstance(parsed["code"], int)


def test_cni_args_parsing():
    assert parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web") == {
        "IgnoreUnknown": "1", "K8S_POD_NAME": "web"}


def test_config_defaults_follow_the_reference_bridge():
    conf = parse_netconf(dict(BASE, isDefaultGateway=True))
    assert conf.bridge == "cni0" and conf.is_gateway and conf.mtu is None
    assert conf.vxlan is None
    conf = parse_netconf(dict(BASE, vxlan={}))
    assert conf.vxlan is not None
    assert (conf.vxlan.vni, conf.vxlan.port, conf.vxlan.device) == (1, 8472, "skein.1")


@pytest.mark.parametrize(("patch", "field"), [
    ({"bridge": "x" * 20}, "bridge"),
    ({"mtu": 10}, "mtu"),
    ({"vxlan": {"port": 0}}, "vxlan.port"),
    ({"vxlan": {"underlayDevice": ""}}, "vxlan.underlayDevice"),
    ({"dns": []}, "dns"),
])
def test_config_errors_name_the_field(patch, field):
    with pytest.raises(CniError) as exc:
        parse_netconf(dict(BASE, **patch))
    assert exc.value.code == 7 and field in exc.value.msg


def test_plan_routes_adds_one_default_per_family_unless_present():
    conf = parse_netconf(dict(BASE, isDefaultGateway=True))
    ips = [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
           {"address": "fd00::2/64", "gateway": "fd00::1"}]
    routes = plan_routes(conf, ips, [{"dst": "0.0.0.0/0", "gw": "10.0.0.254"}])
    assert routes == [{"dst": "0.0.0.0/0", "gw": "10.0.0.254"}, {"dst": "::/0", "gw": "fd00::1"}]
    assert plan_routes(parse_netconf(BASE), ips, []) == []


def test_masquerade_rules():
    comment = masq.rule_comment("net", "c" * 64, "eth0")
    assert len(comment) < 128 and comment.startswith("skein-masq net ")
    assert masq.rule_comment("net", "c" * 64, "eth1") != comment
    lines = masq.rule_lines(comment, ["10.1.0.5/24", "fd00::5/64"])
    assert "ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 ip daddr != 224.0.0.0/4 masquerade" \
        in lines[0]
    assert "ip6 saddr fd00::5 ip6 daddr != fd00::/64" in lines[1]


def test_valid_attachments():
    conf = {"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}
    assert valid_attachments(conf) == {("a", "eth0")}
    with pytest.raises(CniError):
        valid_attachments({"cni.dev/valid-attachments": [{"ifname": "eth0"}]})
