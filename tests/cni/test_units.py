"""Pure parts of the plugin: the protocol skeleton, config parsing, results
in every version, route planning and the masquerade rules.  No root needed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni_plugin import masq
from cni_plugin.config import parse_netconf
from cni_plugin.plugin import plan_routes
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


@pytest.mark.parametrize(("config", "expected"), [
    ({spec.VALID_ATTACHMENTS: [{"containerID": "a", "ifname": "eth0"},
                               {"containerID": "a", "ifname": "net1"}]},
     {("a", "eth0"), ("a", "net1")}),
    ({spec.VALID_ATTACHMENTS: []}, set()),
    # libcni sends null for a runtime without attachments, and leaves the
    # field out with no GC arguments: Go decodes both to nothing valid.
    ({spec.VALID_ATTACHMENTS: None}, set()),
    ({}, set()),
    # SPEC.md's first name for the field, which libcni still sends alongside.
    ({"cni.dev/attachments": [{"containerID": "b", "ifname": "eth0"}]}, {("b", "eth0")}),
    ({spec.VALID_ATTACHMENTS: [{"containerID": "a", "ifname": "eth0"}],
      "cni.dev/attachments": [{"containerID": "b", "ifname": "eth0"}]}, {("a", "eth0")}),
    # Unknown keys in an entry are ignored, as Go's decoder does.
    ({spec.VALID_ATTACHMENTS: [{"containerID": "a", "ifname": "eth0", "x": 1}]},
     {("a", "eth0")}),
])
def test_valid_attachments_by_the_spec(config, expected):
    assert spec.valid_attachments(config) == expected
    assert all(isinstance(att, spec.Attachment) for att in spec.valid_attachments(config))


@pytest.mark.parametrize("value", [
    {"containerID": "a", "ifname": "eth0"},          # not a list
    "a/eth0",
    [{"ifname": "eth0"}],                            # no containerID
    [{"containerID": "a"}],                          # no ifname: it would match nothing
    [{"containerID": "", "ifname": "eth0"}],
    [{"containerID": "a", "ifname": 0}],
    ["a"],
    [{"containerID": "a", "ifname": "eth0"}, None],  # one bad entry refuses the whole list
])
def test_a_malformed_valid_attachments_list_is_refused_whole(value):
    with pytest.raises(CniError) as err:
        spec.valid_attachments({spec.VALID_ATTACHMENTS: value})
    assert err.value.code == spec.ERR_INVALID_CONFIG
    assert spec.VALID_ATTACHMENTS in err.value.msg




# ---- the CNI error JSON: one writer ----------------------------------------------

@given(st.text(), st.integers(min_value=-(2**63), max_value=2**63), st.text(), st.text())
def test_error_json_is_what_json_dumps_writes(version, code, msg, details):
    """foundation.cni.spec.error_json writes JSON without the json module (the
    launcher carries it); it must be the very text json.dumps makes."""
    expected = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        expected["details"] = details
    text = spec.error_json(version, code, msg, details)
    assert text == json.dumps(expected)
    assert json.loads(text) == expected


def test_error_json_needs_nothing_but_builtins():
    """Its source runs alone, as it does inside the `skein` launcher."""
    import builtins
    import inspect

    namespace = {"__builtins__": builtins}
    exec(inspect.getsource(spec.error_json), namespace)
    text = namespace["error_json"]("1.0.0", 7, 'bad "x"\n', "\udcff\U0001f600")
    assert text == spec.error_json("1.0.0", 7, 'bad "x"\n', "\udcff\U0001f600")


def test_every_error_answer_goes_through_the_one_writer(monkeypatch):
    """skel's answers (a CniError and an unforeseen exception) are error_json's."""
    written = []
    real = spec.error_json

    def spy(*args):
        written.append(args)
        return real(*args)

    monkeypatch.setattr(spec, "error_json", spy)

    class Broken:
        def add(self, req):
            raise RuntimeError("boom")

    stdin = json.dumps({**BASE, "cniVersion": "0.4.0"}).encode()
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/bin"}
    code, out = dispatch(Broken(), env, stdin)
    assert code == 1 and json.loads(out)["code"] == 999
    code, out = dispatch(Broken(), {**env, "CNI_IFNAME": "a/b"}, stdin)
    assert code == 1 and json.loads(out)["code"] == spec.ERR_INVALID_ENV
    assert [args[:2] for args in written] == [("0.4.0", 999), ("0.4.0", spec.ERR_INVALID_ENV)]


def test_an_ipam_plugins_error_is_read_back_unchanged():
    err = CniError(100, "no free address", "widen the range")
    back = spec.error_from_json(err.to_json("1.0.0"))
    assert back is not None and (back.code, back.msg, back.details) == (100, "no free address",
                                                                        "widen the range")
    assert spec.error_from_json("not json") is None
    assert spec.error_from_json('{"msg": "no code"}') is None


# ---- ipMasq through the nft runner, with the fake --------------------------------

def test_ip_masq_rules_with_the_fake_nft():
    """cni_plugin/masq.py runs `nft` through the runner the agent uses, so its
    whole cycle is tested without root: ADD writes its rules, a repeated ADD
    replaces them, DEL removes exactly its own, GC keeps the valid attachments'."""
    from cni_plugin.nft import FakeNft

    nft = FakeNft()
    chain = ("inet", masq.TABLE, masq.CHAIN)
    masq.setup("net", "c1", "eth0", ["10.1.0.5/24", "fd00::5/64"], ("10.2.0.0/16",), nft)
    masq.setup("net", "c2", "eth0", ["10.1.0.6/24"], (), nft)
    masq.setup("other", "c9", "eth0", ["10.1.0.9/24"], (), nft)
    assert len(nft.rules(*chain)) == 4
    mine = [r for r in nft.rules(*chain) if masq.rule_comment("net", "c1", "eth0") in r]
    assert len(mine) == 2 and "ip daddr != 10.2.0.0/16" in mine[0]
    masq.setup("net", "c1", "eth0", ["10.1.0.7/24"], (), nft)   # a repeated ADD: replaced
    assert [r for r in nft.rules(*chain)
            if masq.rule_comment("net", "c1", "eth0") in r] == [
        masq.rule_lines(masq.rule_comment("net", "c1", "eth0"), ["10.1.0.7/24"])[0]
        .split(f"{masq.CHAIN} ", 1)[1]]
    masq.teardown("net", "c2", "eth0", nft)
    masq.teardown("net", "c2", "eth0", nft)                     # idempotent
    assert not any(masq.rule_comment("net", "c2", "eth0") in r for r in nft.rules(*chain))
    masq.collect_garbage("net", [spec.Attachment("c1", "eth0")], nft)
    assert len(nft.rules(*chain)) == 2                          # c1's, and the other network's
    masq.collect_garbage("net", [], nft)
    assert [masq.rule_comment("other", "c9", "eth0") in r for r in nft.rules(*chain)] == [True]


def test_ip_masq_without_nft_is_a_cni_error():
    from cni_plugin.nft import NftCommand

    missing = NftCommand(binary="/nonexistent/nft")
    with pytest.raises(CniError) as err:
        masq.setup("net", "c1", "eth0", ["10.1.0.5/24"], (), missing)
    assert err.value.code == spec.ERR_IO and "nft" in err.value.msg


# ---- the IPAM mode is passed in ---------------------------------------------------

def test_the_ipam_mode_is_the_plugins_own():
    """Which IPAM plugins run in this process is the SkeinPlugin's collaborator,
    not a module global: two plugins in one process can differ."""
    from cni_plugin import ipam_exec
    from cni_plugin.plugin import SkeinPlugin

    calls = []

    class Recorder:
        def gc(self, req):
            calls.append(req.command)

    inside = SkeinPlugin(ipam=ipam_exec.Ipam({"skein-ipam": Recorder}))
    plain = SkeinPlugin()
    conf = {**BASE, "cniVersion": "1.1.0"}
    assert inside.ipam.runs_in_process(conf) and not plain.ipam.runs_in_process(conf)
    assert not hasattr(ipam_exec, "IN_PROCESS")
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/nonexistent"}
    assert dispatch(inside, env, json.dumps(conf).encode()) == (0, "")
    assert calls == ["GC"]
    code, out = dispatch(plain, env, json.dumps(conf).encode())   # exec'd: not in CNI_PATH
    assert code == 1 and "not found in CNI_PATH" in json.loads(out)["msg"]
