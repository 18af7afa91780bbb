"""A cursor over a decoded YAML/JSON tree that knows its own field path.

Parsing code asks a cursor for typed values (`cur.at("spec").at("ports")`,
`.integer(1, 65535)`); whatever is wrong is raised as a ModelError that names
the object and the path in Kubernetes' own notation (`spec.ports[0].port`).
Keeping this in one place is what makes every message look the same, and keeps
the per-kind parsers down to the list of fields they read.

Types are strict, as the API server's are: a port written as the string "80"
is an error, and a YAML `yes` (which PyYAML reads as a boolean) is not a string.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from foundation.addresses import IPAddress, IPNetwork
from foundation.kube.model.durations import parse_go_duration
from foundation.kube.model.errors import ModelError, ObjectRef, printable

T = TypeVar("T")


def show(value: Any) -> str:
    """A value as it would read in the user's YAML, for 'got ...' in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = '"' + printable(value.replace("\\", "\\\\").replace('"', '\\"')) + '"'
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Cursor:
    """A position `path` in the object `ref`, holding `value` (None when absent).

    A child keeps its parent and its key, and spells its path only when asked
    (for a message): most cursors of a parse never fail."""

    __slots__ = ("ref", "value", "_path", "_parent", "_key")

    def __init__(self, ref: ObjectRef | None, value: Any, path: str = "") -> None:
        self.ref = ref
        self.value = value
        self._path: str | None = path
        self._parent: Cursor | None = None
        self._key: str | int = ""

    def _child(self, value: Any, key: str | int) -> Cursor:
        child = Cursor.__new__(Cursor)
        child.ref = self.ref
        child.value = value
        child._path = None
        child._parent = self
        child._key = key
        return child

    @property
    def path(self) -> str:
        if self._path is None:
            assert self._parent is not None
            parent, key = self._parent.path, self._key
            self._path = (f"{parent}[{key}]" if isinstance(key, int)
                          else f"{parent}.{key}" if parent else key)
        return self._path

    # -- navigation ---------------------------------------------------------

    def at(self, key: str) -> Cursor:
        """The child `key`; an absent child (or a null parent) is a cursor on None."""
        value = self.value
        return self._child(value.get(key) if type(value) is dict else self.mapping().get(key),
                           key)

    def items(self) -> Iterator[Cursor]:
        """The elements of a list (none when absent), each with its index in the path."""
        if self.value is None:
            return iter(())
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {show(self.value)}")
        return (self._child(v, i) for i, v in enumerate(self.value))

    @property
    def missing(self) -> bool:
        return self.value is None

    def fail(self, message: str) -> NoReturn:
        raise ModelError(self.ref, self.path, message)

    def parse(self, convert: Callable[[Cursor], T]) -> list[T]:
        """`convert` applied to every element of the list here."""
        return [convert(item) for item in self.items()]

    # -- scalars --------------------------------------------------------------

    def mapping(self) -> dict[str, Any]:
        if self.value is None:
            return {}
        if not isinstance(self.value, dict):
            self.fail(f"expected a mapping, got {show(self.value)}")
        return self.value

    def opt_string(self) -> str | None:
        if self.value is None:
            return None
        if not isinstance(self.value, str):
            self.fail(f"expected a string, got {show(self.value)}")
        return self.value

    def string(self, default: str | None = None) -> str:
        """A string; without a default, absent or empty is an error."""
        text = self.opt_string()
        if text is None or text == "":
            if default is not None:
                return default
            self.fail("required")
        return text

    def choice(self, allowed: tuple[str, ...], default: str | None = None) -> str:
        text = self.string(default)
        if text not in allowed:
            self.fail(f"expected one of {', '.join(allowed)}, got {show(text)}")
        return text

    def opt_integer(self, low: int, high: int) -> int | None:
        value = self.value
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(f"expected an integer {low}-{high}, got {show(value)}")
        return value

    def integer(self, low: int, high: int, default: int | None = None) -> int:
        value = self.opt_integer(low, high)
        if value is None:
            if default is None:
                self.fail("required")
            return default
        return value

    def opt_boolean(self) -> bool | None:
        if self.value is None:
            return None
        if not isinstance(self.value, bool):
            self.fail(f"expected true or false, got {show(self.value)}")
        return self.value

    def boolean(self, default: bool) -> bool:
        value = self.opt_boolean()
        return default if value is None else value

    def strings(self) -> tuple[str, ...]:
        """A list of non-empty strings (empty tuple when absent)."""
        return tuple(self.parse(lambda c: c.string()))

    def string_map(self) -> dict[str, str]:
        """A map of string to string, like labels and annotations."""
        out: dict[str, str] = {}
        for key in self.mapping():
            child = self.at(str(key))
            value = child.opt_string()
            out[str(key)] = "" if value is None else value
        return out

    def opt_duration(self) -> float | None:
        """A Go duration string ("90s", "1m30s") in seconds; negative is an error."""
        text = self.opt_string()
        if text is None:
            return None
        try:
            seconds = parse_go_duration(text.strip())
        except ValueError:
            self.fail(f'expected a duration such as "90s" or "1m30s", got {show(text)}')
        if seconds < 0:
            self.fail(f"expected a positive duration, got {show(text)}")
        return seconds

    # -- addresses ------------------------------------------------------------

    def opt_ip(self) -> IPAddress | None:
        text = self.opt_string()
        if text is None or text == "":
            return None
        return ip_address(self, text)

    def ip(self) -> IPAddress:
        address = self.opt_ip()
        if address is None:
            self.fail("required")
        return address

    def network(self) -> IPNetwork:
        """A CIDR; host bits must be zero, as the API server insists for podCIDR."""
        text = self.string()
        try:
            return ipaddress.ip_network(text.strip())
        except ValueError:
            self.fail(f"expected a CIDR such as 10.0.0.0/24 or fd00::/64, got {show(text)}")


def ip_address(cur: Cursor, text: str) -> IPAddress:
    """`text` as an address; errors are reported at `cur`."""
    try:
        return parse_ip(text)
    except ValueError:
        cur.fail(f"expected an IPv4 or IPv6 address, got {show(text)}")


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Exactly the dotted quads ipaddress accepts (no leading zeros, ASCII digits only).
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
is_dotted_quad = _DOTTED_QUAD.fullmatch
_IPv4Address = ipaddress.IPv4Address
_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET


def parse_ip(text: str) -> IPAddress:
    """ipaddress.ip_address(text.strip()), ValueError and all; a plain dotted quad
    (most addresses a cluster holds) skips ipaddress's parser written in Python."""
    if is_dotted_quad(text):
        return _IPv4Address(_inet_pton(_AF_INET, text))
    return ipaddress.ip_address(text.strip())


# -- quick paths --------------------------------------------------------------------
#
# A parser first tries its quick path, which reads plain dicts, lists and
# scalars directly (no cursors, no field paths) and raises Irregular at
# anything but the ordinary well-formed shape: a value of the wrong type, out
# of range, or merely unusual (a str subclass, a non-string key).  The caller
# then parses the same document with its checked path, which either accepts it
# or reports the error; so every message comes from the checked path, and the
# quick path only has to accept nothing the checked path refuses and to build
# the same objects (tests/model/test_parse_speed_equivalence.py holds them to it).

class Irregular(Exception):
    """The quick path gives up on this document; the checked path decides."""


# Read-only stand-in for an absent mapping (never returned to a caller to keep).
_NO_MAPPING: dict[str, Any] = {}


def quick_mapping(value: Any) -> dict[str, Any]:
    """Cursor.mapping: a dict, or the empty mapping for None (not to be kept or changed)."""
    if type(value) is dict:
        return value
    if value is None:
        return _NO_MAPPING
    raise Irregular


def quick_list(value: Any) -> Sequence[Any]:
    """Cursor.items' elements: a list, or none for None."""
    if type(value) is list:
        return value
    if value is None:
        return ()
    raise Irregular


def quick_opt_string(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise Irregular


def quick_string(value: Any) -> str:
    """Cursor.string without a default: a non-empty string."""
    if type(value) is str and value:
        return value
    raise Irregular


def quick_choice(value: Any, allowed: dict[str, str], default: str | None = None) -> str:
    """Cursor.choice, `allowed` mapping each choice to itself: the result is the
    module's constant, so objects share it rather than each keeping the document's copy."""
    if type(value) is str:
        got = allowed.get(value)
        if got is not None:
            return got
        if value == "" and default is not None:
            return default
    elif value is None and default is not None:
        return default
    raise Irregular


def choices(allowed: tuple[str, ...]) -> dict[str, str]:
    """The `allowed` of quick_choice."""
    return {a: a for a in allowed}


def quick_opt_integer(value: Any, low: int, high: int) -> int | None:
    if value is None:
        return None
    if type(value) is int and low <= value <= high:
        return value
    raise Irregular


def quick_integer(value: Any, low: int, high: int) -> int:
    """Cursor.integer without a default."""
    if type(value) is int and low <= value <= high:
        return value
    raise Irregular


def quick_boolean(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if type(value) is bool:
        return value
    raise Irregular


def quick_opt_ip(value: Any) -> IPAddress | None:
    """Cursor.opt_ip: None for null or empty."""
    if value is None or value == "":
        return None
    return quick_ip(value)


def quick_ip(value: Any) -> IPAddress:
    """Cursor.ip: an address, required."""
    if type(value) is str and value:
        try:
            return parse_ip(value)
        except ValueError:
            pass
    raise Irregular


def quick_network(value: Any) -> IPNetwork:
    """Cursor.network."""
    if type(value) is str and value:
        try:
            return ipaddress.ip_network(value.strip())
        except ValueError:
            pass
    raise Irregular


class _EmptyMap(dict[str, str]):
    """An empty dict that refuses to change, so that every object without labels
    (or annotations) can share one rather than each holding its own."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a parsed object's labels and annotations are read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


EMPTY_MAP: dict[str, str] = _EmptyMap()


def quick_string_map(value: Any) -> dict[str, str]:
    """Cursor.string_map: a new dict (never the document's own, which writers edit)."""
    if not value:
        if value is None or type(value) is dict:
            return EMPTY_MAP
        raise Irregular
    if type(value) is not dict:
        raise Irregular
    out: dict[str, str] = {}
    for key, text in value.items():
        if type(key) is not str:
            raise Irregular
        if type(text) is not str:
            if text is not None:
                raise Irregular
            text = ""
        out[shared(key)] = text
    return out


SHARED_MAX = 4096
_SHARED: dict[str, str] = {}


def shared_value(cache: dict[Any, T], key: Any, make: Callable[[], T]) -> T:
    """One copy of an immutable value many objects repeat (`make` builds it the
    first time `key` is seen): each document would have its own.  Bounded:
    emptied when full, which only costs sharing."""
    got = cache.get(key)
    if got is None:
        if len(cache) >= SHARED_MAX:
            cache.clear()
        cache[key] = got = make()
    return got


def shared(text: str) -> str:
    """One copy of a string many objects repeat (namespaces, label keys)."""
    return shared_value(_SHARED, text, lambda: text)


def unannounceable(address: IPAddress) -> str | None:
    """Why `address` can never be a LoadBalancer address, or None if it can.

    Answering ARP for a multicast or broadcast address, or attracting traffic
    for loopback or "this network", breaks the segment rather than serving a
    Service; the kernel refuses most of them on `lo` as well.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return _unannounceable_v4(int(address))
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address"
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    return None


def _unannounceable_v4(value: int) -> str | None:
    """`unannounceable` of an IPv4 address, by its integer: ipaddress's properties
    test network membership in Python, which a plan of many Services feels."""
    top = value >> 24
    if value == 0:
        return "the unspecified address"
    if top == 127:
        return "a loopback address"
    if 224 <= top <= 239:
        return "a multicast address"
    if value >> 16 == 0xA9FE:  # 169.254.0.0/16
        return "a link-local address"
    if value == 0xFFFFFFFF:
        return "the broadcast address"
    if top == 0:
        return 'in 0.0.0.0/8 ("this network")'
    if top >= 240:
        return "reserved (240.0.0.0/4)"
    return None
