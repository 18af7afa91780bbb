"""Path attributes (RFC 4271 §4.3, §5): ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF,
ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES (RFC 1997), LARGE_COMMUNITIES (RFC 8092, sent
only), MP_REACH_NLRI / MP_UNREACH_NLRI
(RFC 4760) and AS4_PATH / AS4_AGGREGATOR (RFC 6793).

AS numbers are 2 or 4 octets wide on the wire depending on whether both sides
announced the 4-octet AS capability, so every encoder and decoder takes
`four_octet`.  On a 2-octet session, `encode_attributes` replaces large ASNs with
AS_TRANS and adds the AS4_PATH that carries the real ones; `merge_as4_path` undoes
that on receipt.  Decoding checks flags and lengths per attribute and raises the
matching UPDATE error; errors that RFC 7606 allows to be handled as
"treat-as-withdraw" are marked `withdrawable`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from speaker.bgp.errors import (
    ATTRIBUTE_FLAGS_ERROR,
    ATTRIBUTE_LENGTH_ERROR,
    INVALID_NEXT_HOP_ATTRIBUTE,
    INVALID_ORIGIN_ATTRIBUTE,
    MALFORMED_AS_PATH,
    MALFORMED_ATTRIBUTE_LIST,
    OPTIONAL_ATTRIBUTE_ERROR,
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
    BgpError,
    update_error,
)
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

# Well-known communities (RFC 1997).
NO_EXPORT = 0xFFFFFF01
NO_ADVERTISE = 0xFFFFFF02
NO_EXPORT_SUBCONFED = 0xFFFFFF03

WELL_KNOWN = TRANSITIVE  # well-known attributes: not optional, always transitive
OPTIONAL_TRANSITIVE = OPTIONAL | TRANSITIVE
OPTIONAL_NON_TRANSITIVE = OPTIONAL

Segment = tuple[int, tuple[int, ...]]


def _tlv(flags: int, type_code: int, value: bytes) -> bytes:
    """One attribute on the wire; the extended-length bit is chosen by the value size."""
    if len(value) > 255:
        return struct.pack("!BBH", flags | EXTENDED_LENGTH, type_code, len(value)) + value
    return struct.pack("!BBB", flags & ~EXTENDED_LENGTH, type_code, len(value)) + value


@dataclass(frozen=True)
class Origin:
    value: int = ORIGIN_IGP

    type_code = ORIGIN
    flags = WELL_KNOWN

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, bytes([self.value]))


def _encode_segments(segments: Sequence[Segment], four_octet: bool) -> bytes:
    fmt = "!I" if four_octet else "!H"
    out = bytearray()
    for seg_type, asns in segments:
        # A segment holds at most 255 ASNs; longer sequences continue in a new segment.
        for start in range(0, len(asns), 255):
            chunk = asns[start:start + 255]
            out += bytes([seg_type, len(chunk)])
            for asn in chunk:
                out += struct.pack(fmt, asn)
    return bytes(out)


@dataclass(frozen=True)
class AsPath:
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

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, _encode_segments(self.segments, four_octet))


@dataclass(frozen=True)
class As4Path:
    segments: tuple[Segment, ...] = ()

    type_code = AS4_PATH
    flags = OPTIONAL_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, _encode_segments(self.segments, True))


@dataclass(frozen=True)
class NextHop:
    address: str

    type_code = NEXT_HOP
    flags = WELL_KNOWN

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, socket.inet_aton(self.address))


@dataclass(frozen=True)
class Med:
    value: int

    type_code = MULTI_EXIT_DISC
    flags = OPTIONAL_NON_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, struct.pack("!I", self.value))


@dataclass(frozen=True)
class LocalPref:
    value: int

    type_code = LOCAL_PREF
    flags = WELL_KNOWN

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, struct.pack("!I", self.value))


@dataclass(frozen=True)
class AtomicAggregate:
    type_code = ATOMIC_AGGREGATE
    flags = WELL_KNOWN

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, b"")


@dataclass(frozen=True)
class Aggregator:
    asn: int
    address: str

    type_code = AGGREGATOR
    flags = OPTIONAL_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        if four_octet:
            value = struct.pack("!I", self.asn)
        else:
            value = struct.pack("!H", self.asn if self.asn <= 0xFFFF else AS_TRANS)
        return _tlv(self.flags, self.type_code, value + socket.inet_aton(self.address))


@dataclass(frozen=True)
class As4Aggregator:
    asn: int
    address: str

    type_code = AS4_AGGREGATOR
    flags = OPTIONAL_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code,
                    struct.pack("!I", self.asn) + socket.inet_aton(self.address))


@dataclass(frozen=True)
class Communities:
    values: tuple[int, ...]

    type_code = COMMUNITIES
    flags = OPTIONAL_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code,
                    struct.pack(f"!{len(self.values)}I", *self.values))


@dataclass(frozen=True)
class LargeCommunities:
    """RFC 8092: (global administrator, local data 1, local data 2), 32 bits each.
    Only sent (MetalLB's "large:" communities); received ones stay unknown attributes."""

    values: tuple[tuple[int, int, int], ...]

    type_code = LARGE_COMMUNITIES
    flags = OPTIONAL_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code,
                    b"".join(struct.pack("!III", *v) for v in self.values))


def community_from_text(text: str) -> int:
    """'65000:100' (or a well-known name like 'no-export') to the 32-bit value."""
    named = {"no-export": NO_EXPORT, "no-advertise": NO_ADVERTISE,
             "no-export-subconfed": NO_EXPORT_SUBCONFED}
    if text.lower() in named:
        return named[text.lower()]
    high, sep, low = text.partition(":")
    if not sep:
        raise ValueError(f"community {text!r} is not 'AS:VALUE'")
    hi, lo = int(high), int(low)
    if not (0 <= hi <= 0xFFFF and 0 <= lo <= 0xFFFF):
        raise ValueError(f"community {text!r} out of range")
    return (hi << 16) | lo


def community_text(value: int) -> str:
    return f"{value >> 16}:{value & 0xFFFF}"


def _encode_next_hops(afi: int, next_hops: Sequence[str]) -> bytes:
    family = socket.AF_INET if afi == AFI_IPV4 else socket.AF_INET6
    return b"".join(socket.inet_pton(family, nh) for nh in next_hops)


def mp_reach_prefix(afi: int, safi: int, next_hops: Sequence[str]) -> bytes:
    """The MP_REACH_NLRI value up to (and including) the reserved byte; NLRI follow."""
    nh = _encode_next_hops(afi, next_hops)
    return struct.pack("!HBB", afi, safi, len(nh)) + nh + b"\x00"


@dataclass(frozen=True)
class MpReachNlri:
    afi: int
    safi: int
    next_hops: tuple[str, ...]
    nlri: tuple[Network, ...]

    type_code = MP_REACH_NLRI
    flags = OPTIONAL_NON_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        value = mp_reach_prefix(self.afi, self.safi, self.next_hops) + encode_prefixes(self.nlri)
        return _tlv(self.flags, self.type_code, value)


@dataclass(frozen=True)
class MpUnreachNlri:
    afi: int
    safi: int
    nlri: tuple[Network, ...]

    type_code = MP_UNREACH_NLRI
    flags = OPTIONAL_NON_TRANSITIVE

    def encode(self, four_octet: bool = True) -> bytes:
        value = struct.pack("!HB", self.afi, self.safi) + encode_prefixes(self.nlri)
        return _tlv(self.flags, self.type_code, value)


@dataclass(frozen=True)
class UnknownAttribute:
    """An attribute we do not interpret; optional transitive ones are passed on with the
    Partial bit set, the rest dropped (RFC 4271 §5)."""

    flags: int
    type_code: int
    data: bytes

    def encode(self, four_octet: bool = True) -> bytes:
        return _tlv(self.flags, self.type_code, self.data)


Attribute = (Origin | AsPath | As4Path | NextHop | Med | LocalPref | AtomicAggregate | Aggregator
             | As4Aggregator | Communities | LargeCommunities | MpReachNlri | MpUnreachNlri
             | UnknownAttribute)


def encode_attributes(attrs: Iterable[Attribute], four_octet: bool = True) -> bytes:
    """Attributes in the given order; on a 2-octet session a path with large ASNs
    becomes AS_TRANS in AS_PATH plus the real path in AS4_PATH (RFC 6793 §4.2.2)."""
    out = []
    as4: list[Attribute] = []
    for attr in attrs:
        if not four_octet and isinstance(attr, AsPath) and attr.needs_as4():
            out.append(attr.as_trans().encode(False))
            as4.append(As4Path(attr.segments))
        elif not four_octet and isinstance(attr, Aggregator) and attr.asn > 0xFFFF:
            out.append(attr.encode(False))
            as4.append(As4Aggregator(attr.asn, attr.address))
        else:
            out.append(attr.encode(four_octet))
    out.extend(a.encode(four_octet) for a in as4)
    return b"".join(out)


# --- decoding ---------------------------------------------------------------------------

# Expected (optional, transitive) bits per known type; the partial bit may only be set
# on optional transitive attributes.
_EXPECTED_FLAGS = {
    ORIGIN: WELL_KNOWN, AS_PATH: WELL_KNOWN, NEXT_HOP: WELL_KNOWN,
    MULTI_EXIT_DISC: OPTIONAL_NON_TRANSITIVE, LOCAL_PREF: WELL_KNOWN,
    ATOMIC_AGGREGATE: WELL_KNOWN, AGGREGATOR: OPTIONAL_TRANSITIVE,
    COMMUNITIES: OPTIONAL_TRANSITIVE, MP_REACH_NLRI: OPTIONAL_NON_TRANSITIVE,
    MP_UNREACH_NLRI: OPTIONAL_NON_TRANSITIVE, AS4_PATH: OPTIONAL_TRANSITIVE,
    AS4_AGGREGATOR: OPTIONAL_TRANSITIVE,
}
# RFC 7606 §7: errors in these may be handled by treat-as-withdraw / attribute discard;
# MP_REACH/MP_UNREACH errors must reset the session (they carry the NLRI themselves).
_SESSION_RESET = {MP_REACH_NLRI, MP_UNREACH_NLRI}


def _decode_segments(value: bytes, width: int) -> tuple[Segment, ...]:
    segments = []
    i = 0
    fmt = "!I" if width == 4 else "!H"
    while i < len(value):
        if i + 2 > len(value):
            raise update_error(MALFORMED_AS_PATH, "AS_PATH segment header truncated",
                               withdrawable=True)
        seg_type, count = value[i], value[i + 1]
        if seg_type not in (AS_SET, AS_SEQUENCE, AS_CONFED_SEQUENCE, AS_CONFED_SET) or count == 0:
            raise update_error(MALFORMED_AS_PATH, f"AS_PATH segment type {seg_type} count {count}",
                               withdrawable=True)
        end = i + 2 + count * width
        if end > len(value):
            raise update_error(MALFORMED_AS_PATH, "AS_PATH segment overruns the attribute",
                               withdrawable=True)
        asns = tuple(struct.unpack_from(fmt, value, off)[0] for off in range(i + 2, end, width))
        segments.append((seg_type, asns))
        i = end
    return tuple(segments)


def _decode_next_hops(afi: int, nh: bytes) -> tuple[str, ...]:
    if afi == AFI_IPV4 and len(nh) == 4:
        return (socket.inet_ntoa(nh),)
    # IPv6 next hops: global, optionally followed by link-local; also valid for IPv4
    # NLRI under RFC 8950.
    if len(nh) in (16, 32):
        return tuple(socket.inet_ntop(socket.AF_INET6, nh[i:i + 16])
                     for i in range(0, len(nh), 16))
    raise update_error(OPTIONAL_ATTRIBUTE_ERROR, f"next hop length {len(nh)} for AFI {afi}")


def _length_error(type_code: int, raw: bytes, withdrawable: bool = True) -> BgpError:
    return update_error(ATTRIBUTE_LENGTH_ERROR,
                        f"attribute {type_code} has length {len(raw)}", raw,
                        withdrawable=withdrawable)


def _decode_one(flags: int, type_code: int, value: bytes, raw: bytes,
                four_octet: bool) -> Attribute:
    expected = _EXPECTED_FLAGS.get(type_code)
    if expected is None:
        if not flags & OPTIONAL:
            raise update_error(UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                               f"unknown well-known attribute {type_code}", raw)
        return UnknownAttribute(flags & ~EXTENDED_LENGTH, type_code, value)
    if (flags & (OPTIONAL | TRANSITIVE)) != expected or (
            flags & PARTIAL and expected != OPTIONAL_TRANSITIVE):
        raise update_error(ATTRIBUTE_FLAGS_ERROR,
                           f"attribute {type_code} has flags {flags:#04x}", raw,
                           withdrawable=type_code not in _SESSION_RESET)
    n = len(value)
    if type_code == ORIGIN:
        if n != 1:
            raise _length_error(type_code, raw)
        if value[0] > ORIGIN_INCOMPLETE:
            raise update_error(INVALID_ORIGIN_ATTRIBUTE, f"ORIGIN {value[0]}", raw,
                               withdrawable=True)
        return Origin(value[0])
    if type_code == AS_PATH:
        return AsPath(_decode_segments(value, 4 if four_octet else 2))
    if type_code == AS4_PATH:
        return As4Path(_decode_segments(value, 4))
    if type_code == NEXT_HOP:
        if n != 4:
            raise _length_error(type_code, raw)
        first = value[0]
        if value == b"\x00\x00\x00\x00" or value == b"\xff\xff\xff\xff" or 224 <= first <= 239:
            raise update_error(INVALID_NEXT_HOP_ATTRIBUTE,
                               f"NEXT_HOP {socket.inet_ntoa(value)}", raw, withdrawable=True)
        return NextHop(socket.inet_ntoa(value))
    if type_code in (MULTI_EXIT_DISC, LOCAL_PREF):
        if n != 4:
            raise _length_error(type_code, raw)
        (number,) = struct.unpack("!I", value)
        return Med(number) if type_code == MULTI_EXIT_DISC else LocalPref(number)
    if type_code == ATOMIC_AGGREGATE:
        if n:
            raise _length_error(type_code, raw)
        return AtomicAggregate()
    if type_code == AGGREGATOR:
        width = 4 if four_octet else 2
        if n != width + 4:
            raise _length_error(type_code, raw)
        asn = struct.unpack_from("!I" if four_octet else "!H", value)[0]
        return Aggregator(asn, socket.inet_ntoa(value[width:]))
    if type_code == AS4_AGGREGATOR:
        if n != 8:
            raise _length_error(type_code, raw)
        return As4Aggregator(struct.unpack_from("!I", value)[0], socket.inet_ntoa(value[4:]))
    if type_code == COMMUNITIES:
        if n % 4:
            raise _length_error(type_code, raw)
        return Communities(struct.unpack(f"!{n // 4}I", value))
    if type_code == MP_REACH_NLRI:
        if n < 5:
            raise _length_error(type_code, raw, withdrawable=False)
        afi, safi, nh_len = struct.unpack_from("!HBB", value)
        if 4 + nh_len + 1 > n:
            raise _length_error(type_code, raw, withdrawable=False)
        if afi not in (AFI_IPV4, AFI_IPV6):
            return UnknownAttribute(flags & ~EXTENDED_LENGTH, type_code, value)
        next_hops = _decode_next_hops(afi, value[4:4 + nh_len])
        nlri = decode_prefixes(afi, value[4 + nh_len + 1:])
        return MpReachNlri(afi, safi, next_hops, tuple(nlri))
    # MP_UNREACH_NLRI
    if n < 3:
        raise _length_error(type_code, raw, withdrawable=False)
    afi, safi = struct.unpack_from("!HB", value)
    if afi not in (AFI_IPV4, AFI_IPV6):
        return UnknownAttribute(flags & ~EXTENDED_LENGTH, type_code, value)
    return MpUnreachNlri(afi, safi, tuple(decode_prefixes(afi, value[3:])))


def decode_attributes(data: bytes, four_octet: bool = True) -> list[Attribute]:
    """The path attribute field of an UPDATE, in wire order; raises BgpError (code 3)."""
    attrs, error = decode_attributes_lenient(data, four_octet)
    if error is not None:
        raise error
    return attrs


def decode_attributes_lenient(data: bytes,
                              four_octet: bool = True) -> tuple[list[Attribute], BgpError | None]:
    """Decode what can be decoded; return the attributes and the first withdrawable error.

    Errors that need a session reset still raise.  Going on past a withdrawable
    error means one cannot mask a later one that requires a reset (RFC 7606 §3 (c)),
    and the UPDATE's NLRI stay known so they can be treated as withdrawn.  A
    repeated attribute is a Malformed Attribute List (RFC 4271 §6.3).
    """
    attrs: list[Attribute] = []
    seen: set[int] = set()
    first_error: BgpError | None = None
    i = 0
    end = len(data)
    while i < end:
        if i + 3 > end:
            raise update_error(MALFORMED_ATTRIBUTE_LIST, "attribute header truncated")
        flags, type_code = data[i], data[i + 1]
        if flags & EXTENDED_LENGTH:
            if i + 4 > end:
                raise update_error(MALFORMED_ATTRIBUTE_LIST, "attribute header truncated")
            (length,) = struct.unpack_from("!H", data, i + 2)
            start = i + 4
        else:
            length = data[i + 2]
            start = i + 3
        stop = start + length
        if stop > end:
            raise update_error(MALFORMED_ATTRIBUTE_LIST,
                               f"attribute {type_code} overruns the attribute field")
        if type_code in seen:
            raise update_error(MALFORMED_ATTRIBUTE_LIST, f"attribute {type_code} repeated")
        seen.add(type_code)
        try:
            attrs.append(_decode_one(flags, type_code, data[start:stop], data[i:stop],
                                     four_octet))
        except BgpError as err:
            if not err.withdrawable:
                raise
            first_error = first_error or err
        i = stop
    return attrs, first_error


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
