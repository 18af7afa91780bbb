"""BGP communities: Skein's one parser of them, and MetalLB's Community alias CRD.

What MetalLB reads (its CRDs' descriptions, and internal/config and
internal/bgp/community in its source), and so what Skein reads, in a
BGPAdvertisement's `spec.communities` and a Community's `value`:
- "A:B": a standard community (RFC 1997), A and B decimal, 0-65535 each;
- "large:A:B:C": a large community (RFC 8092), each part decimal, 0-4294967295;
- in a BGPAdvertisement, anything else is the name of an alias a Community
  object defines (exact: names are case-sensitive).  It is resolved against the
  cluster state (ClusterState.communities_for), because the Community may be in
  another document or arrive later; a name no Community defines keeps the
  advertisement from being announced, and an alias defined twice is refused.

There are no built-in names.  The well-known communities (RFC 1997's
NO_EXPORT 65535:65281, NO_ADVERTISE 65535:65282, NO_EXPORT_SUBCONFED
65535:65283; the others of IANA's registry) are written as values, or named by
a Community, which is how MetalLB's documentation spells NO_ADVERTISE.  A name
MetalLB would not resolve must not change what Skein announces: a file that
works here works under MetalLB, and the other way round.

One corner is read differently: MetalLB looks a text up as an alias before
parsing it as a value, so an alias NAMED like a value ("65535:65282", or an
invalid "a:b") would win there.  Here a text with a value's shape (one colon,
or three) is always a value, checked when the BGPAdvertisement is read so the
error names its field.

The BGP side (speaker.bgp) takes the parsed values: `BGPCommunity.value` is the
32-bit number of a standard community on the wire, `parts` a large one's three.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.kube.model.fields import Cursor, show
from foundation.kube.model.meta import open_object

LARGE = "large"  # the marker of a large community, as MetalLB spells it (lower case)


@dataclass(frozen=True, order=True, slots=True)
class BGPCommunity:
    """Two 16-bit halves (standard) or three 32-bit parts (large)."""

    parts: tuple[int, ...]

    @property
    def large(self) -> bool:
        return len(self.parts) == 3

    @property
    def value(self) -> int:
        """A standard community as the 32-bit number carried on the wire."""
        if self.large:
            raise ValueError(f"{self} is a large community")
        return (self.parts[0] << 16) | self.parts[1]

    def __str__(self) -> str:
        text = ":".join(str(p) for p in self.parts)
        return f"{LARGE}:{text}" if self.large else text


def has_value_shape(text: str) -> bool:
    """Does `text` read as a community value ("A:B", "large:A:B:C") rather than an
    alias name?  Bad values of these shapes are errors, not names."""
    return text.count(":") in (1, 3)


def parse_community(text: str) -> BGPCommunity:
    """A community value, "A:B" or "large:A:B:C"; ValueError says what is wrong."""
    fields = text.split(":")
    if len(fields) == 2:
        bits, parts, shape = 16, fields, "A:B"
    elif len(fields) == 4:
        if fields[0] != LARGE:
            raise ValueError(f"expected {LARGE}:A:B:C for a large community")
        bits, parts, shape = 32, fields[1:], f"{LARGE}:A:B:C"
    else:
        raise ValueError(f"expected A:B or {LARGE}:A:B:C")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"expected {shape} with decimal parts")
    numbers = tuple(int(p) for p in parts)
    if any(n >= 1 << bits for n in numbers):
        raise ValueError(f"each part must fit in {bits} bits")
    return BGPCommunity(numbers)


def parse_community_entry(cur: Cursor) -> BGPCommunity | str:
    """A BGPAdvertisement's community: a value, or an alias name (returned as the
    string) to resolve against the Community objects later."""
    if isinstance(cur.value, int) and not isinstance(cur.value, bool):
        # A YAML 1.1 reader (PyYAML's default) has read 1234:1 as base 60.
        cur.fail(f"expected a string, got {cur.value} (quote communities written A:B, "
                 "or read the YAML without base-60 numbers as foundation.kube.sources does)")
    text = cur.string()
    if not has_value_shape(text):
        return text
    try:
        return parse_community(text)
    except ValueError as exc:
        cur.fail(f"{exc}, got {show(text)}")


@dataclass(frozen=True, slots=True)
class CommunityAliases:
    """metallb.io/v1beta1 Community: names for community values."""

    namespace: str
    name: str
    aliases: Mapping[str, BGPCommunity] = field(default_factory=dict)


def parse_community_aliases(doc: Any) -> CommunityAliases:
    obj, meta = open_object(doc, "Community", namespaced=True)
    aliases: dict[str, BGPCommunity] = {}
    where: dict[str, int] = {}
    for i, entry in enumerate(obj.at("spec").at("communities").items()):
        name_cur = entry.at("name")
        name = name_cur.string()
        if name in where:  # MetalLB refuses a name defined twice
            name_cur.fail(f"{show(name)} is defined twice (also spec.communities[{where[name]}])")
        where[name] = i
        value_cur = entry.at("value")
        value = parse_community_entry(value_cur)
        if isinstance(value, str):
            value_cur.fail(f"expected a community value, A:B or {LARGE}:A:B:C, not a name "
                           f"({show(value)})")
        aliases[name] = value
    return CommunityAliases(meta.namespace, meta.name, aliases)
