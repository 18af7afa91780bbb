"""BGP communities as MetalLB writes them, and MetalLB's Community alias CRD.

A BGPAdvertisement lists communities as "65535:65282" (RFC 1997),
"large:64512:1:2" (RFC 8092), a well-known name such as "no-advertise", or the
name of an alias defined in a Community object.  Aliases are resolved against
the cluster state (ClusterState.communities_for), because the alias may be
defined in another document or arrive later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.kube.model.fields import Cursor, show
from foundation.kube.model.meta import open_object


@dataclass(frozen=True, order=True)
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
        return f"large:{text}" if self.large else text


# RFC 1997, RFC 3765, RFC 7999, RFC 8326, RFC 7611 and the LLGR draft.
WELL_KNOWN: Mapping[str, BGPCommunity] = {
    "graceful-shutdown": BGPCommunity((65535, 0)),
    "accept-own": BGPCommunity((65535, 1)),
    "llgr-stale": BGPCommunity((65535, 6)),
    "no-llgr": BGPCommunity((65535, 7)),
    "blackhole": BGPCommunity((65535, 666)),
    "no-export": BGPCommunity((65535, 65281)),
    "no-advertise": BGPCommunity((65535, 65282)),
    "no-export-subconfed": BGPCommunity((65535, 65283)),
    "local-as": BGPCommunity((65535, 65283)),
    "no-peer": BGPCommunity((65535, 65284)),
}


def parse_community(text: str) -> BGPCommunity:
    """A literal community or well-known name; ValueError says what is wrong."""
    word = text.strip()
    if word.lower() in WELL_KNOWN:
        return WELL_KNOWN[word.lower()]
    large = word.lower().startswith("large:")
    fields = word[len("large:"):].split(":") if large else word.split(":")
    bits, count = (32, 3) if large else (16, 2)
    if len(fields) != count or not all(f.isdigit() for f in fields):
        shape = "large:A:B:C" if large else "A:B"
        raise ValueError(f"expected {shape} with decimal parts")
    parts = tuple(int(f) for f in fields)
    if any(p >= 1 << bits for p in parts):
        raise ValueError(f"each part must fit in {bits} bits")
    return BGPCommunity(parts)


def is_alias_name(text: str) -> bool:
    """Could this be a Community alias rather than a (mistyped) literal?"""
    word = text.strip().lower()
    return word not in WELL_KNOWN and ":" not in word and not word.isdigit()


def parse_community_entry(cur: Cursor) -> BGPCommunity | str:
    """A literal community, or an alias name (returned as the string) to resolve later."""
    if isinstance(cur.value, int) and not isinstance(cur.value, bool):
        # A YAML 1.1 reader (PyYAML's default) has read 1234:1 as base 60.
        cur.fail(f"expected a string, got {cur.value} (quote communities written A:B, "
                 "or read the YAML without base-60 numbers as foundation.kube.sources does)")
    text = cur.string()
    if is_alias_name(text):
        return text.strip()
    try:
        return parse_community(text)
    except ValueError as exc:
        cur.fail(f"{exc}, got {show(text)}")


@dataclass(frozen=True)
class CommunityAliases:
    """metallb.io/v1beta1 Community: names for community values."""

    namespace: str
    name: str
    aliases: Mapping[str, BGPCommunity] = field(default_factory=dict)


def parse_community_aliases(doc: Any) -> CommunityAliases:
    obj, meta = open_object(doc, "Community", namespaced=True)
    aliases: dict[str, BGPCommunity] = {}
    for entry in obj.at("spec").at("communities").items():
        name = entry.at("name").string()
        value_cur = entry.at("value")
        value = parse_community_entry(value_cur)
        if isinstance(value, str):
            value_cur.fail(f"expected a community value, not another name ({show(value)})")
        aliases[name] = value
    return CommunityAliases(meta.namespace, meta.name, aliases)
