"""The network config, read the way host-local reads it, into plain dataclasses.

Why: host-local's format is the contract -- an operator switches plugins by
changing `"type"` and nothing else -- so every form it accepts is accepted here
(`ranges` as a list of range sets, the legacy top-level `subnet`/`rangeStart`/
`rangeEnd`/`gateway`, `runtimeConfig.ipRanges`, requested addresses from
CNI_ARGS `IP=`, `args.cni.ips` and `runtimeConfig.ips`).  Every mistake is
reported before anything touches the disk, as CNI error 7 (4 for CNI_ARGS)
whose message names the field and whose details say what to write instead.

Pure: no I/O, standard library plus our spec module.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from foundation.addresses import IPAddress, RangeError, parse_address, parse_network
from foundation.cni import spec
from foundation.cni.spec import CniError
from ipam.ranges import RangeSet, SubnetRange
from ipam.store import DEFAULT_DATA_DIR

# The network name becomes a directory name: the CNI spec's rule for names
# also keeps it from climbing out of dataDir.
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_RANGE_ADDRESS_KEYS = ("rangeStart", "rangeEnd", "gateway")


def _invalid(field: str, msg: str, fix: str, code: int = spec.ERR_INVALID_CONFIG) -> CniError:
    return CniError(code, f"{field}: {msg}", fix)


class RequestedIp(NamedTuple):
    """An address asked for by the runtime, and where it was asked (for messages)."""

    address: IPAddress
    source: str


@dataclass(frozen=True)
class IpamConfig:
    network: str
    cni_version: str
    range_sets: tuple[RangeSet, ...]
    range_fields: tuple[str, ...]  # where each range set was written, for messages
    routes: tuple[dict[str, Any], ...]
    data_dir: str
    resolv_conf: str
    requested: tuple[RequestedIp | None, ...]  # per range set

    def requested_addresses(self) -> list[IPAddress | None]:
        return [r.address if r is not None else None for r in self.requested]


def _optional_address(entry: Mapping[str, Any], key: str) -> IPAddress | None:
    value = entry.get(key)
    # Go's net.IP decodes "" as nil, so host-local reads an empty string as "not set".
    if value is None or value == "":
        return None
    return parse_address(value, key)


def _parse_range(entry: Any, path: str) -> SubnetRange:
    if not isinstance(entry, dict):
        raise _invalid(path, f"a range is a JSON object, got {entry!r}",
                       'write e.g. {"subnet": "10.1.0.0/24"}')
    if entry.get("subnet") in (None, ""):
        raise _invalid(f"{path}.subnet", "missing",
                       'every range needs a subnet, e.g. "subnet": "10.1.0.0/24"')
    try:
        subnet = parse_network(entry["subnet"], "subnet")
        start, end, gateway = (_optional_address(entry, k) for k in _RANGE_ADDRESS_KEYS)
        return SubnetRange.build(subnet, start, end, gateway)
    except RangeError as err:
        raise _invalid(f"{path}.{err.field}" if err.field else path, err.msg, err.fix) from None


def _parse_range_set(value: Any, path: str) -> RangeSet:
    if not isinstance(value, list) or not value:
        raise _invalid(path, "a range set is a non-empty list of ranges",
                       'write e.g. [{"subnet": "10.1.0.0/24"}]')
    ranges = tuple(_parse_range(entry, f"{path}[{i}]") for i, entry in enumerate(value))
    try:
        return RangeSet(ranges)
    except RangeError as err:
        raise _invalid(path, err.msg, err.fix) from None


def _range_set_list(value: Any, path: str) -> list[tuple[RangeSet, str]]:
    """A list of range sets (`ipam.ranges`, `runtimeConfig.ipRanges`), with their paths."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(path, "must be a list of range sets",
                       'write e.g. [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]')
    return [(_parse_range_set(item, f"{path}[{i}]"), f"{path}[{i}]")
            for i, item in enumerate(value)]


def _range_sets(conf: Mapping[str, Any], ipam: Mapping[str, Any]
                ) -> tuple[tuple[RangeSet, str], ...]:
    """Range sets in host-local's order: runtimeConfig.ipRanges, legacy, ranges.

    skein-agent reads the same few configs for every pod, and building the
    ranges is most of the parse (ipaddress objects), so they are remembered
    by the text of what they are built from; a RangeSet is immutable."""
    runtime = conf.get("runtimeConfig")
    ip_ranges = runtime.get("ipRanges") if isinstance(runtime, dict) else None
    try:
        key = json.dumps([ip_ranges, ipam])
    except (TypeError, ValueError):  # not JSON data: not from stdin, parse it as it is
        return _build_range_sets(ip_ranges, ipam)
    return _remembered_range_sets(key)


@functools.lru_cache(maxsize=64)
def _remembered_range_sets(key: str) -> tuple[tuple[RangeSet, str], ...]:
    return _build_range_sets(*json.loads(key))


def _build_range_sets(ip_ranges: Any, ipam: Mapping[str, Any]
                      ) -> tuple[tuple[RangeSet, str], ...]:
    out = _range_set_list(ip_ranges, "runtimeConfig.ipRanges")
    if ipam.get("subnet") not in (None, ""):
        # The legacy form: ipam itself is the one range of one range set.
        out.append((RangeSet((_parse_range(ipam, "ipam"),)), "ipam"))
    else:
        for key in _RANGE_ADDRESS_KEYS:
            if ipam.get(key) not in (None, ""):
                raise _invalid(f"ipam.{key}", "is set but ipam.subnet is not",
                               "add ipam.subnet, or move the range into ipam.ranges")
    out += _range_set_list(ipam.get("ranges"), "ipam.ranges")
    if not out:
        raise _invalid("ipam.ranges", "no address range is configured",
                       'add e.g. "ranges": [[{"subnet": "10.1.0.0/24"}]]')
    for i, (later, later_path) in enumerate(out):
        for earlier, earlier_path in out[:i]:
            if earlier.overlaps(later):
                raise _invalid(later_path, f"range set {later} overlaps {earlier_path} "
                               f"({earlier})", "make the range sets disjoint")
    return tuple(out)


def _parse_routes(ipam: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    routes = ipam.get("routes")
    if routes is None:
        return ()
    if not isinstance(routes, list):
        raise _invalid("ipam.routes", "must be a list of routes",
                       'write e.g. [{"dst": "0.0.0.0/0"}]')
    for i, route in enumerate(routes):
        path = f"ipam.routes[{i}]"
        if not isinstance(route, dict):
            raise _invalid(path, "a route is a JSON object", 'write e.g. {"dst": "0.0.0.0/0"}')
        dst = route.get("dst")
        try:
            if not isinstance(dst, str) or "/" not in dst:
                raise ValueError
            ipaddress.ip_interface(dst)
        except ValueError:
            raise _invalid(f"{path}.dst", f"{dst!r} is not a CIDR",
                           'write the destination as a CIDR, e.g. "0.0.0.0/0"') from None
        if route.get("gw") not in (None, ""):
            try:
                parse_address(route["gw"])
            except RangeError as err:
                raise _invalid(f"{path}.gw", err.msg, err.fix) from None
    return tuple(dict(route) for route in routes)


def _parse_requested_one(value: Any, source: str, code: int) -> IPAddress:
    try:
        if not isinstance(value, str):
            raise ValueError
        return ipaddress.ip_interface(value.strip()).ip
    except ValueError:
        raise _invalid(source, f"{value!r} is not an IP address",
                       'write e.g. "10.1.0.5" or "10.1.0.5/24"', code) from None


def _parse_requested_list(conf: Mapping[str, Any], outer: str, inner: str, path: str
                          ) -> list[RequestedIp]:
    holder = conf.get(outer)
    if outer == "args" and isinstance(holder, dict):
        holder = holder.get("cni")
    values = holder.get(inner) if isinstance(holder, dict) else None
    if values is None:
        return []
    if not isinstance(values, list):
        raise _invalid(path, "must be a list of addresses", 'write e.g. ["10.1.0.5"]')
    return [RequestedIp(_parse_requested_one(v, f"{path}[{i}]", spec.ERR_INVALID_CONFIG),
                        f"{path}[{i}]") for i, v in enumerate(values)]


def _requested(conf: Mapping[str, Any], cni_args: Mapping[str, str]) -> list[RequestedIp]:
    """Requested addresses from CNI_ARGS, args.cni.ips and runtimeConfig.ips."""
    out: list[RequestedIp] = []
    for item in filter(None, (cni_args.get("IP") or "").split(",")):
        out.append(RequestedIp(_parse_requested_one(item, "CNI_ARGS IP", spec.ERR_INVALID_ENV),
                               "CNI_ARGS IP"))
    out += _parse_requested_list(conf, "args", "ips", "args.cni.ips")
    out += _parse_requested_list(conf, "runtimeConfig", "ips", "runtimeConfig.ips")
    return out


def _reserved_role(rng: SubnetRange, address: IPAddress) -> str:
    if address == rng.gateway:
        return "the gateway"
    if address == rng.subnet.network_address:
        return "the network address"
    return "the broadcast address"


def _assign_requested(requested: list[RequestedIp],
                      range_sets: Sequence[tuple[RangeSet, str]],
                      network: str) -> tuple[RequestedIp | None, ...]:
    """Each requested address goes to the range set holding it; at most one per set."""
    per_set: list[RequestedIp | None] = [None] * len(range_sets)
    for req in requested:
        index = next((i for i, (rs, _) in enumerate(range_sets) if rs.contains(req.address)),
                     None)
        if index is None:
            ranges = "; ".join(str(rs) for rs, _ in range_sets)
            raise _invalid(req.source, f"requested address {req.address} is in none of the "
                           f"ranges of network {network} ({ranges})",
                           "request an address inside one of the ranges")
        taken = per_set[index]
        if taken is not None and taken.address == req.address:
            continue  # the same address asked for twice is one request (as in host-local)
        if taken is not None:
            raise _invalid(req.source, f"requested address {req.address} and "
                           f"{taken.address} ({taken.source}) are both in "
                           f"{range_sets[index][1]}", "request one address per range set")
        rng = range_sets[index][0].range_for(req.address)
        if rng is not None and not rng.usable(req.address):
            raise _invalid(req.source, f"requested address {req.address} is "
                           f"{_reserved_role(rng, req.address)} of {rng.subnet}",
                           "request an address that can be handed out")
        per_set[index] = req
    return tuple(per_set)


def parse_network_name(conf: Mapping[str, Any]) -> str:
    name = conf.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise _invalid("name", f"{name!r} is not a valid network name",
                       "a network name starts with a letter or digit and holds only letters, "
                       "digits, '_', '.' and '-' (it names the lease directory)")
    return name


def parse_config(conf: Mapping[str, Any], cni_args: Mapping[str, str] | None = None
                 ) -> IpamConfig:
    """The IPAM view of a network config (stdin) and CNI_ARGS; raises CniError."""
    network = parse_network_name(conf)
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise _invalid("ipam", "the network config has no ipam section",
                       'add e.g. "ipam": {"type": "skein-ipam", '
                       '"ranges": [[{"subnet": "10.1.0.0/24"}]]}')
    range_sets = _range_sets(conf, ipam)
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, str):
        raise _invalid("ipam.dataDir", f"{data_dir!r} is not a path",
                       f'write a directory, e.g. "{DEFAULT_DATA_DIR}"')
    resolv_conf = ipam.get("resolvConf") or ""
    if not isinstance(resolv_conf, str):
        raise _invalid("ipam.resolvConf", f"{resolv_conf!r} is not a path",
                       'write a file name, e.g. "/etc/resolv.conf"')
    return IpamConfig(
        network=network,
        cni_version=str(conf.get("cniVersion", "")),
        range_sets=tuple(rs for rs, _ in range_sets),
        range_fields=tuple(path for _, path in range_sets),
        routes=_parse_routes(ipam),
        data_dir=data_dir,
        resolv_conf=resolv_conf,
        requested=_assign_requested(_requested(conf, cni_args or {}), range_sets, network),
    )


def parse_resolv_conf(text: str) -> dict[str, Any]:
    """The DNS part of a result from resolv.conf text, as host-local builds it."""
    dns: dict[str, Any] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain":
            dns["domain"] = values[0]
        elif key == "search":
            dns.setdefault("search", []).extend(values)
        elif key == "options":
            dns.setdefault("options", []).extend(values)
    return dns

