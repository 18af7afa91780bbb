"""The KEEPALIVE message (RFC 4271 §4.4): a bare header; it restarts the peer's hold
timer and, in OpenConfirm, confirms the OPEN."""

from __future__ import annotations

from dataclasses import dataclass

from speaker.bgp.errors import BAD_MESSAGE_LENGTH, header_error
from speaker.bgp.header import HEADER_LEN, KEEPALIVE, encode_header


@dataclass(frozen=True)
class Keepalive:
    pass


KEEPALIVE_BYTES = encode_header(KEEPALIVE, b"")


def encode(msg: Keepalive | None = None) -> bytes:
    return KEEPALIVE_BYTES


def decode_body(body: bytes) -> Keepalive:
    if body:
        raise header_error(BAD_MESSAGE_LENGTH, f"KEEPALIVE with a {len(body)}-byte body",
                           (HEADER_LEN + len(body)).to_bytes(2, "big"))
    return Keepalive()
