"""The `skein` network configuration: parsed once, validated, every error names its field.

The fields follow the reference `bridge` plugin so that a config written for it
works with `"type": "skein"` unchanged; `vxlan` is Skein's own addition (the
overlay to the other nodes).  Fields the reference knows but Skein does not
implement are refused with the spec's "unsupported field" error instead of
being silently ignored.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from foundation.cni import spec
from foundation.cni.names import IFNAME_RULE, is_ifname
from foundation.cni.spec import CniError

DEFAULT_BRIDGE = "cni0"
DEFAULT_VXLAN_DEVICE = "skein.1"
DEFAULT_VXLAN_PORT = 8472
# Fields of the reference bridge plugin that Skein refuses rather than ignores.
_UNSUPPORTED = {
    "vlan": "VLAN tagging of pod ports is not implemented",
    "vlanTrunk": "VLAN trunks are not implemented",
    "preserveDefaultVlan": "VLAN tagging of pod ports is not implemented",
    "macspoofchk": "MAC spoof checking is not implemented",
}


def _invalid(field_name: str, problem: str, fix: str) -> CniError:
    return CniError(spec.ERR_INVALID_CONFIG, f"invalid network config: {field_name}: {problem}",
                    fix)


def _bool(conf: dict[str, Any], key: str, default: bool = False) -> bool:
    value = conf.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(key, f"expected true or false, got {value!r}", f'write "{key}": true')
    return value


def _int(conf: dict[str, Any], key: str, low: int, high: int, default: int | None = None,
         where: str = "") -> int | None:
    value = conf.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{where}{key}", f"expected an integer {low}-{high}, got {value!r}",
                       f"set {where}{key} to a number between {low} and {high}")
    return value


def _ifname(conf: dict[str, Any], key: str, default: str, where: str = "") -> str:
    value = conf.get(key, default)
    if not is_ifname(value):
        raise _invalid(f"{where}{key}", f"{value!r} is not a valid interface name", IFNAME_RULE)
    assert isinstance(value, str)
    return value


@dataclass(frozen=True)
class VxlanConf:
    """The overlay device: one per node, shared by all pods."""

    vni: int = 1
    port: int = DEFAULT_VXLAN_PORT
    device: str = DEFAULT_VXLAN_DEVICE
    underlay_device: str | None = None


@dataclass(frozen=True)
class NetConf:
    name: str
    cni_version: str
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    force_address: bool = False
    ip_masq: bool = False
    ip_masq_exclude: tuple[str, ...] = ()
    mtu: int | None = None
    hairpin_mode: bool = False
    promisc_mode: bool = False
    ipam: dict[str, Any] = field(default_factory=dict)
    dns: dict[str, Any] = field(default_factory=dict)
    vxlan: VxlanConf | None = None
    prev_result: dict[str, Any] | None = None
    agent_socket: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ipam_type(self) -> str:
        return str(self.ipam["type"])


def _parse_vxlan(value: Any) -> VxlanConf | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("vxlan", f"expected an object, got {value!r}",
                       'write "vxlan": {"vni": 1, "port": 8472, "device": "skein.1"}')
    vni = _int(value, "vni", 0, 2**24 - 1, 1, "vxlan.")
    port = _int(value, "port", 1, 65535, DEFAULT_VXLAN_PORT, "vxlan.")
    device = _ifname(value, "device", DEFAULT_VXLAN_DEVICE, "vxlan.")
    underlay = value.get("underlayDevice")
    if underlay is not None:
        underlay = _ifname(value, "underlayDevice", "", "vxlan.")
    assert vni is not None and port is not None
    return VxlanConf(vni=vni, port=port, device=device, underlay_device=underlay)


def _parse_ipam(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise _invalid("ipam", "missing", 'add "ipam": {"type": "skein-ipam", "ranges": [...]}')
    ipam_type = value.get("type")
    if not isinstance(ipam_type, str) or not ipam_type or "/" in ipam_type:
        raise _invalid("ipam.type", f"{ipam_type!r} is not a plugin name",
                       'name an IPAM plugin found in CNI_PATH, e.g. "skein-ipam" or "host-local"')
    return value


def _parse_cidrs(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid(key, f"expected a list of CIDRs, got {value!r}",
                       f'write "{key}": ["10.244.0.0/16"]')
    out = []
    for i, item in enumerate(value):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except (TypeError, ValueError):
            raise _invalid(f"{key}[{i}]", f"{item!r} is not a CIDR",
                           'write a network such as "10.244.0.0/16"') from None
    return tuple(out)


def _agent_socket(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise _invalid("agentSocket", f"expected an absolute path, got {value!r}",
                       'write "agentSocket": "/run/skein/agent.sock", or leave it out')
    return value


def parse_netconf(conf: dict[str, Any]) -> NetConf:
    """Validate a `skein` network configuration (already JSON-decoded)."""
    version = spec.check_version(conf.get("cniVersion"))
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid("name", "missing", 'give the network a name, e.g. "name": "skein"')
    for key, why in _UNSUPPORTED.items():
        if conf.get(key) not in (None, False, 0, [], ""):
            raise CniError(spec.ERR_UNSUPPORTED_FIELD, f"unsupported field {key}: {why}",
                           f"remove {key!r} from the config")
    is_default_gateway = _bool(conf, "isDefaultGateway")
    dns = conf.get("dns")
    dns = {} if dns is None else dns
    if not isinstance(dns, dict):
        raise _invalid("dns", f"expected an object, got {dns!r}",
                       'write "dns": {"nameservers": [...]}')
    prev = conf.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _invalid("prevResult", "expected an object", "the runtime passes the previous "
                       "plugin's result here")
    return NetConf(
        name=name,
        cni_version=version,
        bridge=_ifname(conf, "bridge", DEFAULT_BRIDGE),
        is_gateway=_bool(conf, "isGateway") or is_default_gateway,
        is_default_gateway=is_default_gateway,
        force_address=_bool(conf, "forceAddress"),
        ip_masq=_bool(conf, "ipMasq"),
        ip_masq_exclude=_parse_cidrs(conf.get("ipMasqExclude"), "ipMasqExclude"),
        mtu=_int(conf, "mtu", 68, 65535),
        hairpin_mode=_bool(conf, "hairpinMode"),
        promisc_mode=_bool(conf, "promiscMode"),
        ipam=_parse_ipam(conf.get("ipam")),
        dns=dns,
        vxlan=_parse_vxlan(conf.get("vxlan")),
        prev_result=spec.normalize_result(prev) if prev else None,
        agent_socket=_agent_socket(conf.get("agentSocket")),
        raw=conf,
    )
