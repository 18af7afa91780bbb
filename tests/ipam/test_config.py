"""host-local's config format, parsed without touching the disk."""

from __future__ import annotations

import copy
from ipaddress import ip_address as A
from typing import Any

import pytest

from foundation.cni.spec import ERR_INVALID_CONFIG, ERR_INVALID_ENV, CniError
from ipam.config import parse_config, parse_resolv_conf
from ipam.store import DEFAULT_DATA_DIR

BASE: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "mynet",
    "ipam": {
        "type": "skein-ipam",
        "ranges": [
            [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20",
              "gateway": "10.1.0.254"},
             {"subnet": "10.2.0.0/24"}],
            [{"subnet": "fd00:1::/64"}],
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00::/8", "gw": "fd00:1::1"}],
    },
}


def config(**ipam: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out["ipam"].update(ipam)
    return {k: v for k, v in out.items() if v is not None}


def test_full_form() -> None:
    cfg = parse_config(BASE)
    assert cfg.network == "mynet" and cfg.cni_version == "1.0.0"
    assert cfg.data_dir == DEFAULT_DATA_DIR and cfg.resolv_conf == ""
    assert [str(rs) for rs in cfg.range_sets] == [
        "10.1.0.10-10.1.0.20, 10.2.0.2-10.2.0.254", "fd00:1::2-fd00:1::ffff:ffff:ffff:ffff"]
    assert cfg.range_sets[0].ranges[0].gateway == A("10.1.0.254")
    assert cfg.range_fields == ("ipam.ranges[0]", "ipam.ranges[1]")
    assert cfg.routes == tuple(BASE["ipam"]["routes"])
    assert cfg.requested == (None, None)


def test_legacy_top_level_range_comes_first() -> None:
    conf = config(subnet="10.9.0.0/24", rangeStart="10.9.0.5", rangeEnd="", gateway="")
    cfg = parse_config(conf)
    assert cfg.range_fields[0] == "ipam" and len(cfg.range_sets) == 3
    legacy = cfg.range_sets[0].ranges[0]
    # "" is "not set", as Go's net.IP decodes it for host-local.
    assert str(legacy) == "10.9.0.5-10.9.0.254" and legacy.gateway == A("10.9.0.1")


def test_runtime_ip_ranges_come_before_everything() -> None:
    conf = config(subnet="10.9.0.0/24")
    conf["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.8.0.0/24"}]]}
    cfg = parse_config(conf)
    assert cfg.range_fields == ("runtimeConfig.ipRanges[0]", "ipam", "ipam.ranges[0]",
                                "ipam.ranges[1]")


def _mutated(path: str, value: Any) -> dict[str, Any]:
    conf = copy.deepcopy(BASE)
    target: Any = conf
    keys = path.split("/")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return conf


@pytest.mark.parametrize(("path", "value", "field"), [
    ("ipam", KeyError, "ipam"),
    ("name", KeyError, "name"),
    ("name", "../etc", "name"),
    ("ipam/ranges", KeyError, "ipam.ranges"),
    ("ipam/ranges", [], "ipam.ranges"),
    ("ipam/ranges", "10.1.0.0/24", "ipam.ranges"),
    ("ipam/ranges/0", [], "ipam.ranges[0]"),
    ("ipam/ranges/0/0", "10.1.0.0/24", "ipam.ranges[0][0]"),
    ("ipam/ranges/0/0/subnet", KeyError, "ipam.ranges[0][0].subnet"),
    ("ipam/ranges/0/0/subnet", "10.1.0.0", "ipam.ranges[0][0].subnet"),
    ("ipam/ranges/0/0/subnet", "10.1.0.300/24", "ipam.ranges[0][0].subnet"),
    ("ipam/ranges/0/0/subnet", "10.1.0.5/24", "ipam.ranges[0][0].subnet"),
    ("ipam/ranges/0/0/subnet", "10.1.0.0/31", "ipam.ranges[0][0].subnet"),
    ("ipam/ranges/0/0/rangeStart", "10.7.0.1", "ipam.ranges[0][0].rangeStart"),
    ("ipam/ranges/0/0/rangeStart", "nope", "ipam.ranges[0][0].rangeStart"),
    ("ipam/ranges/0/0/rangeEnd", "10.1.0.5", "ipam.ranges[0][0].rangeEnd"),
    ("ipam/ranges/0/0/gateway", "fd00::1", "ipam.ranges[0][0].gateway"),
    ("ipam/ranges/0/1/subnet", "fd00:2::/64", "ipam.ranges[0]"),
    ("ipam/ranges/0/1/subnet", "10.1.0.0/24", "ipam.ranges[0]"),
    ("ipam/ranges/1/0/subnet", "10.2.0.0/16", "ipam.ranges[1]"),
    ("ipam/routes", {"dst": "0.0.0.0/0"}, "ipam.routes"),
    ("ipam/routes/0/dst", "0.0.0.0", "ipam.routes[0].dst"),
    ("ipam/routes/1/gw", "fd00::zz", "ipam.routes[1].gw"),
    ("ipam/dataDir", 5, "ipam.dataDir"),
    ("ipam/rangeStart", "10.1.0.5", "ipam.rangeStart"),
])
def test_config_errors_name_the_field_and_the_fix(path: str, value: Any, field: str) -> None:
    with pytest.raises(CniError) as err:
        parse_config(_mutated(path, value))
    assert err.value.code == ERR_INVALID_CONFIG
    assert err.value.msg.startswith(f"{field}:"), err.value.msg
    assert err.value.details


def test_overlapping_range_sets_name_both() -> None:
    conf = _mutated("ipam/ranges/1", [{"subnet": "10.1.0.0/28"}])
    with pytest.raises(CniError) as err:
        parse_config(conf)
    assert "ipam.ranges[1]" in err.value.msg and "ipam.ranges[0]" in err.value.msg


def test_requested_addresses_from_every_source_go_to_their_range_set() -> None:
    conf = copy.deepcopy(BASE)
    conf["args"] = {"cni": {"ips": ["fd00:1::99/64"]}}
    conf["runtimeConfig"] = {"ips": ["10.1.0.15"]}
    cfg = parse_config(conf, {"IP": "10.1.0.15", "K8S_POD_NAME": "x"})
    assert cfg.requested_addresses() == [A("10.1.0.15"), A("fd00:1::99")]
    assert cfg.requested[0] is not None and cfg.requested[0].source == "CNI_ARGS IP"


@pytest.mark.parametrize(("args", "extra", "code", "field"), [
    ({"IP": "10.1.0.999"}, {}, ERR_INVALID_ENV, "CNI_ARGS IP"),
    ({"IP": "10.9.9.9"}, {}, ERR_INVALID_CONFIG, "CNI_ARGS IP"),
    ({}, {"runtimeConfig": {"ips": ["10.1.0.254"]}}, ERR_INVALID_CONFIG, "runtimeConfig.ips[0]"),
    ({}, {"runtimeConfig": {"ips": "10.1.0.11"}}, ERR_INVALID_CONFIG, "runtimeConfig.ips"),
    ({}, {"args": {"cni": {"ips": ["10.2.0.0"]}}}, ERR_INVALID_CONFIG, "args.cni.ips[0]"),
    ({"IP": "10.1.0.11,10.2.0.5"}, {}, ERR_INVALID_CONFIG, "CNI_ARGS IP"),
])
def test_requested_address_errors(args: dict[str, str], extra: dict[str, Any], code: int,
                                  field: str) -> None:
    conf = {**copy.deepcopy(BASE), **extra}
    with pytest.raises(CniError) as err:
        parse_config(conf, args)
    assert err.value.code == code and err.value.msg.startswith(f"{field}:"), err.value.msg


def test_resolv_conf_like_host_local() -> None:
    text = ("# comment\n; other comment\nnameserver 10.0.0.10\nnameserver fd00::10\n"
            "domain example.com\nsearch a.example b.example\noptions ndots:5 edns0\nbogus\n")
    assert parse_resolv_conf(text) == {
        "nameservers": ["10.0.0.10", "fd00::10"], "domain": "example.com",
        "search": ["a.example", "b.example"], "options": ["ndots:5", "edns0"]}
    assert parse_resolv_conf("") == {}


def test_ranges_are_remembered_by_their_text_and_errors_never_are() -> None:
    """The agent parses the same config for every pod: the range sets come
    from memory while the text they are built from is the same, and are built
    anew the moment it changes; a broken config fails every time."""
    first, again = parse_config(config()), parse_config(config())
    assert all(a is b for a, b in zip(first.range_sets, again.range_sets, strict=True))
    runtime = {**config(), "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]}}
    assert str(parse_config(runtime).range_sets[0]) == "10.9.0.2-10.9.0.254"
    changed = parse_config(config(ranges=[[{"subnet": "10.3.0.0/24"}]]))
    assert changed.range_sets[0] is not first.range_sets[0]
    assert str(changed.range_sets[0]) == "10.3.0.2-10.3.0.254"
    for _ in range(2):
        with pytest.raises(CniError) as err:
            parse_config(config(ranges=[[{"subnet": "10.3.0.0/33"}]]))
        assert err.value.code == ERR_INVALID_CONFIG
