"""The CNI specification's shared vocabulary: versions, errors, results, and
the attachments GC is told to keep.

Everything here is pure (no I/O) and standard-library only, because both plugins
(`skein` and `skein-ipam`) import it on every exec.  It follows SPEC.md of
containernetworking/cni: a result is kept internally in the 1.x shape (IPs
without a "version" key) and converted on the way out to whatever
`cniVersion` the runtime asked for.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, NamedTuple

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# Well-known error codes (SPEC.md, "Error").
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50  # STATUS: the plugin cannot service ADD now
ERR_LIMITED_CONNECTIVITY = 51

# Plugin-specific codes start at 100 (the spec reserves 0-99).
ERR_ADDRESS_EXHAUSTED = 100
ERR_IPAM_FAILED = 101
ERR_KERNEL = 102
ERR_CHECK_FAILED = 103


def error_json(cni_version: str, code: int, msg: str, details: str = "") -> str:
    """The spec's error result ("Error": cniVersion, code, msg, details when
    there are any) as JSON text, the same text `json.dumps` makes of it.

    The one place that writes it.  Builtins only, on purpose: the `skein`
    launcher that install/build_zipapps.py generates carries this very
    function's source (it reports an archive it cannot load), and runs before
    anything but the fast path client is loaded, `json` included."""

    def text(value: str) -> str:
        out = ['"']
        for char in value:
            point = ord(char)
            if char in '"\\':
                out.append("\\" + char)
            elif 0x20 <= point < 0x7F:
                out.append(char)
            elif char in "\n\r\t\b\f":
                out.append("\\" + "nrtbf"["\n\r\t\b\f".index(char)])
            elif point > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair, as JSON has it
                point -= 0x10000
                out.append(f"\\u{0xD800 | point >> 10:04x}\\u{0xDC00 | point & 0x3FF:04x}")
            else:
                out.append(f"\\u{point:04x}")
        out.append('"')
        return "".join(out)

    fields = [f'"cniVersion": {text(cni_version)}', f'"code": {int(code)}', f'"msg": {text(msg)}']
    if details:
        fields.append(f'"details": {text(details)}')
    return "{" + ", ".join(fields) + "}"


class CniError(Exception):
    """An error that is reported to the runtime as the spec's error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> str:
        return error_json(cni_version, self.code, self.msg, self.details)


def error_from_json(text: str) -> CniError | None:
    """The error another plugin printed (its stdout), None when that is not
    the spec's error JSON."""
    try:
        data = json.loads(text)
        return CniError(int(data["code"]), str(data.get("msg", "")), str(data.get("details", "")))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def version_tuple(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); raises CniError(1) for anything that is not x.y.z."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}",
                       f"supported versions: {', '.join(SUPPORTED_VERSIONS)}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def check_version(version: Any) -> str:
    """Return the config's cniVersion if this plugin speaks it, else raise code 1."""
    if not isinstance(version, str) or not version:
        raise CniError(ERR_INVALID_CONFIG, "network config has no cniVersion",
                       'add "cniVersion": "1.0.0" (or another supported version)')
    if version not in SUPPORTED_VERSIONS:
        version_tuple(version)
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"incompatible CNI version {version}",
                       f"supported versions: {', '.join(SUPPORTED_VERSIONS)}")
    return version


def version_info() -> dict[str, Any]:
    """The answer to the VERSION command."""
    return {"cniVersion": SUPPORTED_VERSIONS[-1], "supportedVersions": list(SUPPORTED_VERSIONS)}


def parse_json(data: bytes | str, what: str = "network config") -> dict[str, Any]:
    """Decode a JSON object; malformed input is the spec's decoding failure (6)."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(ERR_DECODE, f"failed to decode {what}", str(exc)) from None
    except RecursionError:
        raise CniError(ERR_DECODE, f"failed to decode {what}", "nested too deeply") from None
    if not isinstance(value, dict):
        raise CniError(ERR_DECODE, f"failed to decode {what}", "expected a JSON object")
    return value


def ip_family(cidr: str) -> int:
    """4 or 6 for an 'addr/len' string."""
    return ipaddress.ip_interface(cidr).version


def normalize_result(result: dict[str, Any]) -> dict[str, Any]:
    """Bring a result of any supported version into the internal 1.x shape."""
    out = dict(result)
    ips = []
    for ip in result.get("ips") or []:
        entry = {k: v for k, v in ip.items() if k != "version"}
        ips.append(entry)
    out["ips"] = ips
    out.setdefault("interfaces", [])
    out.setdefault("routes", [])
    out.setdefault("dns", {})
    out.pop("cniVersion", None)
    return out


_V1_1_INTERFACE_KEYS = ("mtu", "socketPath", "pciID")
_V1_1_ROUTE_KEYS = ("mtu", "advmss", "priority", "table", "scope")


def _without(entries: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Copies of `entries` (None: none) without `keys` (what an older version lacks)."""
    return [{k: v for k, v in entry.items() if k not in keys} for entry in entries or []]


def result_for_version(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Render an internal result in the format of `version`."""
    legacy = not at_least(version, "1.0.0")
    pre_1_1 = not at_least(version, "1.1.0")
    out: dict[str, Any] = {"cniVersion": version}
    interfaces = _without(result.get("interfaces"), _V1_1_INTERFACE_KEYS if pre_1_1 else ())
    if interfaces:
        out["interfaces"] = interfaces
    ips = []
    for ip in result.get("ips") or []:
        entry = dict(ip)
        if legacy:
            entry = {"version": str(ip_family(ip["address"])), **entry}
        ips.append(entry)
    out["ips"] = ips
    routes = _without(result.get("routes"), _V1_1_ROUTE_KEYS if pre_1_1 else ())
    if routes:
        out["routes"] = routes
    out["dns"] = result.get("dns") or {}
    return out


class Attachment(NamedTuple):
    """One interface of one container: what ADD made and DEL and GC name
    (CNI_CONTAINERID and CNI_IFNAME).  A NamedTuple, not a dataclass: both
    plugins build these at import time, once per exec."""

    container_id: str
    ifname: str

    def __str__(self) -> str:
        return f"{self.container_id}/{self.ifname}"


VALID_ATTACHMENTS = "cni.dev/valid-attachments"
# The name SPEC.md first gave the field (containernetworking/cni#1101); libcni
# still sends both, with the same value.
VALID_ATTACHMENTS_OLD = "cni.dev/attachments"


def valid_attachments(config: dict[str, Any]) -> frozenset[Attachment]:
    """GC's list of attachments still in use, by the rules of SPEC.md 1.1
    ("GC"): an array of objects, each with the `containerID` and `ifname`
    that ADD was given, both strings, neither empty.

    Absent or null is the empty list, as in libcni and the reference plugins
    (Go decodes both to a nil slice): a runtime that names no attachment has
    already deleted every attachment it knew of, and GC removes the rest.
    Anything else that is not such a list is refused (7), whole: a malformed
    entry must not cost a running pod its address."""
    key = VALID_ATTACHMENTS if VALID_ATTACHMENTS in config else VALID_ATTACHMENTS_OLD
    raw = config.get(key)
    if raw is None:
        return frozenset()
    fix = 'write [{"containerID": "...", "ifname": "eth0"}, ...]'
    if not isinstance(raw, list):
        raise CniError(ERR_INVALID_CONFIG,
                       f"invalid network config: {key}: expected a list, got {_short(raw)}", fix)
    out = set()
    for i, item in enumerate(raw):
        entry = item if isinstance(item, dict) else {}
        container_id, ifname = entry.get("containerID"), entry.get("ifname")
        if not (isinstance(container_id, str) and container_id
                and isinstance(ifname, str) and ifname):
            raise CniError(ERR_INVALID_CONFIG,
                           f"invalid network config: {key}[{i}]: {_short(item)} is not an "
                           "attachment", fix)
        out.add(Attachment(container_id, ifname))
    return frozenset(out)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
