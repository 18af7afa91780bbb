"""Path attributes (RFC 4271 §4.3, §5): ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF,
ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES (RFC 1997), LARGE_COMMUNITIES (RFC 8092),
MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760) and AS4_PATH / AS4_AGGREGATOR (RFC 6793).

Each attribute is one class that registers its type code (`@register`, as in
ExaBGP's attribute registry) and owns its wire format both ways: `value()` /
`encode()` out, the `decode()` classmethod in, both given the session's
`Negotiated` (the AS number width of a 2- or 4-octet session).  The class also says
what a malformed instance costs under RFC 7606 §7 (`on_error`): most are
"treat-as-withdraw", AGGREGATOR and the AS4 attributes "attribute discard", the MP
attributes (which carry the NLRI themselves) a session reset.  `parse_attributes`
walks the attribute field, dispatches through the registry and applies the
list-level rules of RFC 7606 §3 and §4.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from speaker.bgp.errors import (
    ATTRIBUTE_DISCARD,
    ATTRIBUTE_FLAGS_ERROR,
    ATTRIBUTE_LENGTH_ERROR,
    INVALID_NEXT_HOP_ATTRIBUTE,
    INVALID_ORIGIN_ATTRIBUTE,
    MALFORMED_AS_PATH,
    MALFORMED_ATTRIBUTE_LIST,
    OPTIONAL_ATTRIBUTE_ERROR,
    SESSION_RESET,
    TREAT_AS_WITHDRAW,
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
    BgpError,
    Handling,
    update_error,
)
from speaker.bgp.negotiated import ASSUMED, Negotiated
from speaker.bgp.nlri import AFI_IPV4, AFI_IPV6, Network, decode_prefixes, encode_prefixes

# Flag bits.
OPTIONAL = 0x80
TRANSITIVE = 0x40
PARTIAL = 0x20
EXTENDED_LENGTH = 0x10

# Type codes.
ORIGIN = 1
AS_PATH = 2
NEXT_HOP = 3
MULTI_EXIT_DISC = 4
LOCAL_PREF = 5
ATOMIC_AGGREGATE = 6
AGGREGATOR = 7
COMMUNITIES = 8
MP_REACH_NLRI = 14
MP_UNREACH_NLRI = 15
AS4_PATH = 17
AS4_AGGREGATOR = 18
LARGE_COMMUNITIES = 32

ORIGIN_IGP = 0
ORIGIN_EGP = 1
ORIGIN_INCOMPLETE = 2

AS_SET = 1
AS_SEQUENCE = 2
AS_CONFED_SEQUENCE = 3
AS_CONFED_SET = 4

AS_TRANS = 23456

WELL_KNOWN = TRANSITIVE  # well-known attributes: not optional, always transitive
OPTIONAL_TRANSITIVE = OPTIONAL | TRANSITIVE
OPTIONAL_NON_TRANSITIVE = OPTIONAL

Segment = tuple[int, tuple[int, ...]]


def _tlv(flags: int, type_code: int, value: bytes) -> bytes:
    """One attribute on the wire; the extended-length bit is chosen by the value size."""
    if len(value) > 255:
        return struct.pack("!BBH", flags | EXTENDED_LENGTH, type_code, len(value)) + value
    return struct.pack("!BBB", flags & ~EXTENDED_LENGTH, type_code, len(value)) + value


class Malformed(Exception):
    """What an attribute's `decode` raises; `parse_attributes` turns it into the UPDATE
    error, with the whole attribute as NOTIFICATION data where RFC 4271 §6.3 asks."""

    def __init__(self, subcode: int, reason: str, with_data: bool = True) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason
        self.with_data = with_data


def _expect_length(value: bytes, length: int) -> None:
    if len(value) != length:
        raise Malformed(ATTRIBUTE_LENGTH_ERROR, f"length {len(value)}, expected {length}")


class Attribute:
    """A path attribute.  Subclasses set `type_code` and `flags` (the optional and
    transitive bits the RFC prescribes) and implement `payload` and `decode`."""

    type_code: int
    flags: int
    on_error: ClassVar[Handling] = TREAT_AS_WITHDRAW

    def payload(self, negotiated: Negotiated) -> bytes:
        """The attribute value, without flags, type and length."""
        raise NotImplementedError

    def encode(self, negotiated: Negotiated = ASSUMED) -> bytes:
        return _tlv(self.flags, self.type_code, self.payload(negotiated))

    def companions(self, negotiated: Negotiated) -> tuple[Attribute, ...]:
        """Attributes that must travel with this one on this session (RFC 6793's AS4_*)."""
        return ()

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> Attribute:
        raise NotImplementedError


REGISTRY: dict[int, type[Attribute]] = {}

_A = TypeVar("_A", bound=type[Attribute])


def register(cls: _A) -> _A:
    """Make `cls` the decoder of its type code."""
    if cls.type_code in REGISTRY:
        raise RuntimeError(f"attribute type {cls.type_code} is registered twice")
    REGISTRY[cls.type_code] = cls
    return cls


@register
@dataclass(frozen=True)
class Origin(Attribute):
    value: int = ORIGIN_IGP

    type_code = ORIGIN
    flags = WELL_KNOWN

    def payload(self, negotiated: Negotiated) -> bytes:
        return bytes([self.value])

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> Origin:
        _expect_length(value, 1)
        if value[0] > ORIGIN_INCOMPLETE:
            raise Malformed(INVALID_ORIGIN_ATTRIBUTE, f"ORIGIN {value[0]}")
        return cls(value[0])


def _encode_segments(segments: Sequence[Segment], width: int) -> bytes:
    fmt = "!I" if width == 4 else "!H"
    out = bytearray()
    for seg_type, asns in segments:
        # A segment holds at most 255 ASNs; longer sequences continue in a new segment.
        for start in range(0, len(asns), 255):
            chunk = asns[start:start + 255]
            out += bytes([seg_type, len(chunk)])
            for asn in chunk:
                out += struct.pack(fmt, asn)
    return bytes(out)


def _decode_segments(value: bytes, width: int) -> tuple[Segment, ...]:
    segments = []
    i = 0
    fmt = "!I" if width == 4 else "!H"
    while i < len(value):
        if i + 2 > len(value):
            raise Malformed(MALFORMED_AS_PATH, "segment header truncated", with_data=False)
        seg_type, count = value[i], value[i + 1]
        if seg_type not in (AS_SET, AS_SEQUENCE, AS_CONFED_SEQUENCE, AS_CONFED_SET) or count == 0:
            raise Malformed(MALFORMED_AS_PATH, f"segment type {seg_type} count {count}",
                            with_data=False)
        end = i + 2 + count * width
        if end > len(value):
            raise Malformed(MALFORMED_AS_PATH, "segment overruns the attribute", with_data=False)
        asns = tuple(struct.unpack_from(fmt, value, off)[0] for off in range(i + 2, end, width))
        segments.append((seg_type, asns))
        i = end
    return tuple(segments)


@register
@dataclass(frozen=True)
class AsPath(Attribute):
    segments: tuple[Segment, ...] = ()

    type_code = AS_PATH
    flags = WELL_KNOWN

    @classmethod
    def sequence(cls, *asns: int) -> AsPath:
        return cls(((AS_SEQUENCE, tuple(asns)),) if asns else ())

    def asns(self) -> list[int]:
        return [asn for _, seg in self.segments for asn in seg]

    def needs_as4(self) -> bool:
        return any(asn > 0xFFFF for asn in self.asns())

    def as_trans(self) -> AsPath:
        """The same path with every 4-octet-only AS replaced by AS_TRANS."""
        return AsPath(tuple((t, tuple(a if a <= 0xFFFF else AS_TRANS for a in seg))
                            for t, seg in self.segments))

    def length(self) -> int:
        """Path length as RFC 4271 §9.1.2.2 counts it (a set is one, confed segments zero)."""
        n = 0
        for seg_type, asns in self.segments:
            if seg_type == AS_SEQUENCE:
                n += len(asns)
            elif seg_type == AS_SET:
                n += 1
        return n

    def payload(self, negotiated: Negotiated) -> bytes:
        if negotiated.four_octet_as:
            return _encode_segments(self.segments, 4)
        return _encode_segments(self.as_trans().segments, 2)

    def companions(self, negotiated: Negotiated) -> tuple[Attribute, ...]:
        # RFC 6793 §4.2.2: a 2-octet session carries AS_TRANS here and the real path in
        # AS4_PATH.
        if not negotiated.four_octet_as and self.needs_as4():
            return (As4Path(self.segments),)
        return ()

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> AsPath:
        return cls(_decode_segments(value, 4 if negotiated.four_octet_as else 2))


@register
@dataclass(frozen=True)
class As4Path(Attribute):
    segments: tuple[Segment, ...] = ()

    type_code = AS4_PATH
    flags = OPTIONAL_TRANSITIVE
    on_error = ATTRIBUTE_DISCARD  # RFC 6793 §6

    def payload(self, negotiated: Negotiated) -> bytes:
        return _encode_segments(self.segments, 4)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> As4Path:
        return cls(_decode_segments(value, 4))


@register
@dataclass(frozen=True)
class NextHop(Attribute):
    address: str

    type_code = NEXT_HOP
    flags = WELL_KNOWN

    def payload(self, negotiated: Negotiated) -> bytes:
        return socket.inet_aton(self.address)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> NextHop:
        _expect_length(value, 4)
        if value in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff") or 224 <= value[0] <= 239:
            raise Malformed(INVALID_NEXT_HOP_ATTRIBUTE, f"NEXT_HOP {socket.inet_ntoa(value)}")
        return cls(socket.inet_ntoa(value))


@register
@dataclass(frozen=True)
class Med(Attribute):
    value: int

    type_code = MULTI_EXIT_DISC
    flags = OPTIONAL_NON_TRANSITIVE

    def payload(self, negotiated: Negotiated) -> bytes:
        return struct.pack("!I", self.value)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> Med:
        _expect_length(value, 4)
        return cls(struct.unpack("!I", value)[0])


@register
@dataclass(frozen=True)
class LocalPref(Attribute):
    value: int

    type_code = LOCAL_PREF
    flags = WELL_KNOWN

    def payload(self, negotiated: Negotiated) -> bytes:
        return struct.pack("!I", self.value)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> LocalPref:
        _expect_length(value, 4)
        return cls(struct.unpack("!I", value)[0])


@register
@dataclass(frozen=True)
class AtomicAggregate(Attribute):
    type_code = ATOMIC_AGGREGATE
    flags = WELL_KNOWN
    on_error = ATTRIBUTE_DISCARD  # RFC 7606 §7.6

    def payload(self, negotiated: Negotiated) -> bytes:
        return b""

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> AtomicAggregate:
        _expect_length(value, 0)
        return cls()


@register
@dataclass(frozen=True)
class Aggregator(Attribute):
    asn: int
    address: str

    type_code = AGGREGATOR
    flags = OPTIONAL_TRANSITIVE
    on_error = ATTRIBUTE_DISCARD  # RFC 7606 §7.7

    def payload(self, negotiated: Negotiated) -> bytes:
        if negotiated.four_octet_as:
            asn = struct.pack("!I", self.asn)
        else:
            asn = struct.pack("!H", self.asn if self.asn <= 0xFFFF else AS_TRANS)
        return asn + socket.inet_aton(self.address)

    def companions(self, negotiated: Negotiated) -> tuple[Attribute, ...]:
        if not negotiated.four_octet_as and self.asn > 0xFFFF:
            return (As4Aggregator(self.asn, self.address),)
        return ()

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> Aggregator:
        width = 4 if negotiated.four_octet_as else 2
        _expect_length(value, width + 4)
        asn = struct.unpack_from("!I" if width == 4 else "!H", value)[0]
        return cls(asn, socket.inet_ntoa(value[width:]))


@register
@dataclass(frozen=True)
class As4Aggregator(Attribute):
    asn: int
    address: str

    type_code = AS4_AGGREGATOR
    flags = OPTIONAL_TRANSITIVE
    on_error = ATTRIBUTE_DISCARD  # RFC 6793 §6

    def payload(self, negotiated: Negotiated) -> bytes:
        return struct.pack("!I", self.asn) + socket.inet_aton(self.address)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> As4Aggregator:
        _expect_length(value, 8)
        return cls(struct.unpack_from("!I", value)[0], socket.inet_ntoa(value[4:]))


@register
@dataclass(frozen=True)
class Communities(Attribute):
    values: tuple[int, ...]

    type_code = COMMUNITIES
    flags = OPTIONAL_TRANSITIVE

    def payload(self, negotiated: Negotiated) -> bytes:
        return struct.pack(f"!{len(self.values)}I", *self.values)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> Communities:
        if len(value) % 4:
            raise Malformed(ATTRIBUTE_LENGTH_ERROR, f"length {len(value)} is not a multiple of 4")
        return cls(struct.unpack(f"!{len(value) // 4}I", value))


@register
@dataclass(frozen=True)
class LargeCommunities(Attribute):
    """RFC 8092: (global administrator, local data 1, local data 2), 32 bits each."""

    values: tuple[tuple[int, int, int], ...]

    type_code = LARGE_COMMUNITIES
    flags = OPTIONAL_TRANSITIVE

    def payload(self, negotiated: Negotiated) -> bytes:
        return b"".join(struct.pack("!III", *v) for v in self.values)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> LargeCommunities:
        if len(value) % 12:  # RFC 8092 §5: treat-as-withdraw
            raise Malformed(ATTRIBUTE_LENGTH_ERROR,
                            f"length {len(value)} is not a multiple of 12")
        return cls(tuple(struct.unpack_from("!III", value, off)
                         for off in range(0, len(value), 12)))


def community_text(value: int) -> str:
    """A standard community's 32-bit value as text, "A:B" (parsing the text is
    foundation.kube.model.communities.parse_community's job)."""
    return f"{value >> 16}:{value & 0xFFFF}"


def _decode_next_hops(afi: int, nh: bytes) -> tuple[str, ...]:
    if afi == AFI_IPV4 and len(nh) == 4:
        return (socket.inet_ntoa(nh),)
    # IPv6 next hops: global, optionally followed by link-local; also valid for IPv4
    # NLRI under RFC 8950.
    if len(nh) in (16, 32):
        return tuple(socket.inet_ntop(socket.AF_INET6, nh[i:i + 16])
                     for i in range(0, len(nh), 16))
    raise Malformed(OPTIONAL_ATTRIBUTE_ERROR, f"next hop length {len(nh)} for AFI {afi}")


@register
@dataclass(frozen=True)
class MpReachNlri(Attribute):
    afi: int
    safi: int
    next_hops: tuple[str, ...]
    nlri: tuple[Network, ...]

    type_code = MP_REACH_NLRI
    flags = OPTIONAL_NON_TRANSITIVE
    # RFC 7606 §7.11: the NLRI cannot be located reliably past a broken next hop.
    on_error = SESSION_RESET

    def head(self) -> bytes:
        """The value up to (and including) the reserved byte; the NLRI follow."""
        family = socket.AF_INET if self.afi == AFI_IPV4 else socket.AF_INET6
        nh = b"".join(socket.inet_pton(family, h) for h in self.next_hops)
        return struct.pack("!HBB", self.afi, self.safi, len(nh)) + nh + b"\x00"

    def payload(self, negotiated: Negotiated) -> bytes:
        return self.head() + encode_prefixes(self.nlri)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> Attribute:
        if len(value) < 5:
            raise Malformed(ATTRIBUTE_LENGTH_ERROR, f"length {len(value)}")
        afi, safi, nh_len = struct.unpack_from("!HBB", value)
        if 4 + nh_len + 1 > len(value):
            raise Malformed(ATTRIBUTE_LENGTH_ERROR, f"next hop length {nh_len} overruns")
        if afi not in (AFI_IPV4, AFI_IPV6):
            return UnknownAttribute(cls.flags, cls.type_code, value)
        next_hops = _decode_next_hops(afi, value[4:4 + nh_len])
        return cls(afi, safi, next_hops, tuple(decode_prefixes(afi, value[4 + nh_len + 1:])))


@register
@dataclass(frozen=True)
class MpUnreachNlri(Attribute):
    afi: int
    safi: int
    nlri: tuple[Network, ...]

    type_code = MP_UNREACH_NLRI
    flags = OPTIONAL_NON_TRANSITIVE
    on_error = SESSION_RESET

    def payload(self, negotiated: Negotiated) -> bytes:
        return struct.pack("!HB", self.afi, self.safi) + encode_prefixes(self.nlri)

    @classmethod
    def decode(cls, value: bytes, negotiated: Negotiated) -> Attribute:
        if len(value) < 3:
            raise Malformed(ATTRIBUTE_LENGTH_ERROR, f"length {len(value)}")
        afi, safi = struct.unpack_from("!HB", value)
        if afi not in (AFI_IPV4, AFI_IPV6):
            return UnknownAttribute(cls.flags, cls.type_code, value)
        return cls(afi, safi, tuple(decode_prefixes(afi, value[3:])))


@dataclass(frozen=True)
class UnknownAttribute(Attribute):
    """An attribute we do not interpret; optional transitive ones are passed on with the
    Partial bit set, the rest dropped (RFC 4271 §5)."""

    flags: int
    type_code: int
    data: bytes

    def payload(self, negotiated: Negotiated) -> bytes:
        return self.data


def encode_attributes(attrs: Iterable[Attribute], negotiated: Negotiated = ASSUMED) -> bytes:
    """Attributes in the given order, then the companions this session needs."""
    attrs = list(attrs)
    extra = [c for a in attrs for c in a.companions(negotiated)]
    return b"".join(a.encode(negotiated) for a in (*attrs, *extra))


# --- decoding ---------------------------------------------------------------------------

def decode_attribute(flags: int, type_code: int, value: bytes, raw: bytes,
                     negotiated: Negotiated) -> Attribute:
    """One attribute through the registry; raises BgpError handled as its class says."""
    cls = REGISTRY.get(type_code)
    if cls is None:
        if not flags & OPTIONAL:
            raise update_error(UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                               f"unknown well-known attribute {type_code}", raw)
        return UnknownAttribute(flags & ~EXTENDED_LENGTH, type_code, value)
    expected = cls.flags
    # The partial bit may only be set on optional transitive attributes.
    if (flags & (OPTIONAL | TRANSITIVE)) != expected or (
            flags & PARTIAL and expected != OPTIONAL_TRANSITIVE):
        raise update_error(ATTRIBUTE_FLAGS_ERROR,
                           f"attribute {type_code} has flags {flags:#04x}", raw, cls.on_error)
    try:
        return cls.decode(value, negotiated)
    except Malformed as bad:
        raise update_error(bad.subcode, f"attribute {type_code}: {bad.reason}",
                           raw if bad.with_data else b"", cls.on_error) from None


def parse_attributes(data: bytes, negotiated: Negotiated = ASSUMED
                     ) -> tuple[list[Attribute], list[BgpError]]:
    """The path attribute field of an UPDATE: the attributes that decoded, in wire
    order, and the errors RFC 7606 handles without a reset; raises the first error
    that needs one.

    Decoding goes on past a handled error so that it cannot mask a later one that
    needs a reset (RFC 7606 §3).  An attribute field that does not add up ends the
    walk as treat-as-withdraw (§4); a repeated attribute is discarded (§3 (g)),
    except a repeated MP attribute, which resets the session.
    """
    attrs: list[Attribute] = []
    errors: list[BgpError] = []
    seen: set[int] = set()
    i = 0
    end = len(data)
    while i < end:
        header = 4 if data[i] & EXTENDED_LENGTH else 3
        if i + header > end:
            errors.append(update_error(MALFORMED_ATTRIBUTE_LIST, "attribute header truncated",
                                       handling=TREAT_AS_WITHDRAW))
            break
        flags, type_code = data[i], data[i + 1]
        if header == 4:
            (length,) = struct.unpack_from("!H", data, i + 2)
        else:
            length = data[i + 2]
        start = i + header
        stop = start + length
        if stop > end:
            errors.append(update_error(MALFORMED_ATTRIBUTE_LIST,
                                       f"attribute {type_code} overruns the attribute field",
                                       handling=TREAT_AS_WITHDRAW))
            break
        raw, value = data[i:stop], data[start:stop]
        i = stop
        if type_code in seen:
            repeated = f"attribute {type_code} repeated"
            if type_code in (MP_REACH_NLRI, MP_UNREACH_NLRI):
                raise update_error(MALFORMED_ATTRIBUTE_LIST, repeated)
            errors.append(update_error(MALFORMED_ATTRIBUTE_LIST, repeated,
                                       handling=ATTRIBUTE_DISCARD))
            continue
        seen.add(type_code)
        try:
            attrs.append(decode_attribute(flags, type_code, value, raw, negotiated))
        except BgpError as err:
            if err.handling is SESSION_RESET:
                raise
            errors.append(err)
    return attrs, errors


def decode_attributes(data: bytes, negotiated: Negotiated = ASSUMED) -> list[Attribute]:
    """The path attribute field, strictly: any error raises (for codec users)."""
    attrs, errors = parse_attributes(data, negotiated)
    if errors:
        raise errors[0]
    return attrs


def merge_as4_path(as_path: AsPath, as4_path: As4Path | None) -> AsPath:
    """Rebuild the real path from AS_PATH and AS4_PATH of a 2-octet peer (RFC 6793 §4.2.3)."""
    if as4_path is None:
        return as_path
    four = AsPath(as4_path.segments)
    keep = as_path.length() - four.length()
    if keep < 0:
        return as_path
    head: list[Segment] = []
    for seg_type, asns in as_path.segments:
        if keep <= 0:
            break
        if seg_type == AS_SEQUENCE:
            head.append((seg_type, asns[:keep]))
            keep -= len(asns[:keep])
        elif seg_type == AS_SET:
            head.append((seg_type, asns))
            keep -= 1
        else:
            head.append((seg_type, asns))
    return AsPath(tuple(head) + four.segments)
