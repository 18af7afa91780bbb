"""The UPDATE message (RFC 4271 §4.3) and End-of-RIB markers (RFC 4724 §2).

An UPDATE is: withdrawn-routes length + withdrawn IPv4 prefixes, path-attributes
length + attributes, then IPv4 NLRI up to the end.  Other families travel inside
MP_REACH_NLRI / MP_UNREACH_NLRI attributes.  This module is the object codec used
for decoding what peers send and for tests; the sending path builds UPDATEs from
pre-encoded pieces in `packing.py` to avoid per-prefix objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from speaker.bgp.attributes import (
    AS_PATH,
    NEXT_HOP,
    ORIGIN,
    Attribute,
    MpReachNlri,
    MpUnreachNlri,
    decode_attributes_lenient,
    encode_attributes,
)
from speaker.bgp.errors import (
    MALFORMED_ATTRIBUTE_LIST,
    MISSING_WELL_KNOWN_ATTRIBUTE,
    BgpError,
    update_error,
)
from speaker.bgp.header import UPDATE, encode_header
from speaker.bgp.nlri import (
    AFI_IPV4,
    IPV4_UNICAST,
    Family,
    Network,
    decode_prefixes,
    encode_prefixes,
)


@dataclass(frozen=True)
class Update:
    withdrawn: tuple[Network, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    nlri: tuple[Network, ...] = ()

    def attribute(self, kind: type) -> Attribute | None:
        for attr in self.attributes:
            if isinstance(attr, kind):
                return attr
        return None

    def end_of_rib(self) -> Family | None:
        """The family this UPDATE marks End-of-RIB for, or None if it is not a marker."""
        if self.withdrawn or self.nlri:
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


def encode(msg: Update, four_octet: bool = True) -> bytes:
    withdrawn = encode_prefixes(msg.withdrawn)
    attrs = encode_attributes(msg.attributes, four_octet)
    body = (struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attrs)) + attrs
            + encode_prefixes(msg.nlri))
    return encode_header(UPDATE, body)


def end_of_rib(family: Family) -> bytes:
    """The End-of-RIB marker: an empty UPDATE for IPv4 unicast, else an empty
    MP_UNREACH_NLRI for the family."""
    if family == IPV4_UNICAST:
        return encode_header(UPDATE, b"\x00\x00\x00\x00")
    return encode(Update(attributes=(MpUnreachNlri(family[0], family[1], ()),)))


def decode_body(body: bytes, four_octet: bool = True) -> Update:
    """Raises BgpError; for a withdrawable error, `error.withdrawn` lists the prefixes."""
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
    attrs, error = decode_attributes_lenient(body[astart:astart + alen], four_octet)
    nlri = decode_prefixes(AFI_IPV4, body[astart + alen:])
    update = Update(tuple(withdrawn), tuple(attrs), tuple(nlri))
    if error is None:
        error = _missing_attribute(update)
    if error is not None:
        error.withdrawn = tuple(update.withdrawals() + update.announced())
        raise error
    return update


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
                                bytes([type_code]), withdrawable=True)
    return None
