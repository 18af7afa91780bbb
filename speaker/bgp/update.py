"""The UPDATE message (RFC 4271 §4.3) and End-of-RIB markers (RFC 4724 §2).

An UPDATE is: withdrawn-routes length + withdrawn IPv4 prefixes, path-attributes
length + attributes, then IPv4 NLRI up to the end.  Other families travel inside
MP_REACH_NLRI / MP_UNREACH_NLRI attributes.  `encode` is the only place UPDATE
bytes are made: `packing` decides how routes are split into `Update`s and hands
each one here.

Decoding follows RFC 7606: an error that needs a session reset raises; one that
does not comes back inside the `Update` (`errors`), which then already is what the
RFC says to act on: with "treat-as-withdraw", nothing but the withdrawal of every
prefix the message carried; with "attribute discard", the message without the
offending attribute.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeVar

from speaker.bgp.attributes import (
    AS_PATH,
    NEXT_HOP,
    ORIGIN,
    Attribute,
    MpReachNlri,
    MpUnreachNlri,
    encode_attributes,
    parse_attributes,
)
from speaker.bgp.errors import (
    MALFORMED_ATTRIBUTE_LIST,
    MISSING_WELL_KNOWN_ATTRIBUTE,
    TREAT_AS_WITHDRAW,
    BgpError,
    update_error,
)
from speaker.bgp.header import UPDATE, encode_header
from speaker.bgp.negotiated import ASSUMED, Negotiated
from speaker.bgp.nlri import (
    AFI_IPV4,
    IPV4_UNICAST,
    Family,
    Network,
    decode_prefixes,
    encode_prefixes,
)

_A = TypeVar("_A", bound=Attribute)


@dataclass(frozen=True)
class Update:
    withdrawn: tuple[Network, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    nlri: tuple[Network, ...] = ()
    # What RFC 7606 handled without a reset while decoding; never sent.
    errors: tuple[BgpError, ...] = field(default=(), compare=False)

    def attribute(self, kind: type[_A]) -> _A | None:
        for attr in self.attributes:
            if isinstance(attr, kind):
                return attr
        return None

    @property
    def treated_as_withdraw(self) -> bool:
        return any(e.handling is TREAT_AS_WITHDRAW for e in self.errors)

    def end_of_rib(self) -> Family | None:
        """The family this UPDATE marks End-of-RIB for, or None if it is not a marker."""
        if self.withdrawn or self.nlri or self.errors:
            return None
        if not self.attributes:
            return IPV4_UNICAST
        if len(self.attributes) == 1:
            only = self.attributes[0]
            if isinstance(only, MpUnreachNlri) and not only.nlri:
                return (only.afi, only.safi)
        return None

    def announced(self) -> list[Network]:
        """Every prefix this UPDATE announces, classic and multiprotocol."""
        out = list(self.nlri)
        for attr in self.attributes:
            if isinstance(attr, MpReachNlri):
                out.extend(attr.nlri)
        return out

    def withdrawals(self) -> list[Network]:
        out = list(self.withdrawn)
        for attr in self.attributes:
            if isinstance(attr, MpUnreachNlri):
                out.extend(attr.nlri)
        return out


def encode(msg: Update, negotiated: Negotiated = ASSUMED) -> bytes:
    withdrawn = encode_prefixes(msg.withdrawn)
    attrs = encode_attributes(msg.attributes, negotiated)
    body = (struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attrs)) + attrs
            + encode_prefixes(msg.nlri))
    return encode_header(UPDATE, body)


def end_of_rib(family: Family) -> bytes:
    """The End-of-RIB marker: an empty UPDATE for IPv4 unicast, else an empty
    MP_UNREACH_NLRI for the family."""
    if family == IPV4_UNICAST:
        return encode(Update())
    return encode(Update(attributes=(MpUnreachNlri(family[0], family[1], ()),)))


def decode_body(body: bytes, negotiated: Negotiated = ASSUMED) -> Update:
    """Raises BgpError for what needs a session reset; see the module's docstring."""
    if len(body) < 4:
        raise update_error(MALFORMED_ATTRIBUTE_LIST, f"UPDATE body of {len(body)} bytes")
    (wlen,) = struct.unpack_from("!H", body)
    if 2 + wlen + 2 > len(body):
        raise update_error(MALFORMED_ATTRIBUTE_LIST, f"withdrawn routes length {wlen} too long")
    withdrawn = decode_prefixes(AFI_IPV4, body[2:2 + wlen])
    (alen,) = struct.unpack_from("!H", body, 2 + wlen)
    astart = 4 + wlen
    if astart + alen > len(body):
        raise update_error(MALFORMED_ATTRIBUTE_LIST, f"path attribute length {alen} too long")
    attrs, errors = parse_attributes(body[astart:astart + alen], negotiated)
    nlri = decode_prefixes(AFI_IPV4, body[astart + alen:])
    update = Update(tuple(withdrawn), tuple(attrs), tuple(nlri))
    if not any(e.handling is TREAT_AS_WITHDRAW for e in errors):
        missing = _missing_attribute(update)
        if missing is not None:
            errors.append(missing)
    if not errors:
        return update
    if any(e.handling is TREAT_AS_WITHDRAW for e in errors):
        return _withdrawing(update, tuple(errors))
    return Update(update.withdrawn, update.attributes, update.nlri, tuple(errors))


def _withdrawing(update: Update, errors: tuple[BgpError, ...]) -> Update:
    """`update` as RFC 7606 treat-as-withdraw sees it: every prefix it carried, withdrawn."""
    gone: dict[Family, tuple[Network, ...]] = {}
    for attr in update.attributes:
        if isinstance(attr, MpReachNlri | MpUnreachNlri) and attr.nlri:
            family = (attr.afi, attr.safi)
            gone[family] = gone.get(family, ()) + attr.nlri
    unreach = tuple(MpUnreachNlri(afi, safi, nlri) for (afi, safi), nlri in gone.items())
    return Update(update.withdrawn + update.nlri, unreach, (), errors)


def _missing_attribute(update: Update) -> BgpError | None:
    has_mp = any(isinstance(a, MpReachNlri) for a in update.attributes)
    if not update.nlri and not has_mp:
        return None
    present = {a.type_code for a in update.attributes}
    required = (ORIGIN, AS_PATH, NEXT_HOP) if update.nlri else (ORIGIN, AS_PATH)
    for type_code in required:
        if type_code not in present:
            return update_error(MISSING_WELL_KNOWN_ATTRIBUTE,
                                f"UPDATE without well-known attribute {type_code}",
                                bytes([type_code]), TREAT_AS_WITHDRAW)
    return None
