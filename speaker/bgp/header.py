"""The 19-byte BGP message header (RFC 4271 §4.1) and the framing of a TCP byte stream.

Every message starts with a 16-byte all-ones marker, a 2-byte total length and a
1-byte type.  Framing is kept separate from the message bodies so the session can
cut complete messages out of its receive buffer before any body is parsed, and so
that header errors (which must be reported with the offending length or type as
NOTIFICATION data) are detected in one place.
"""

from __future__ import annotations

import struct

from speaker.bgp.errors import (
    BAD_MESSAGE_LENGTH,
    BAD_MESSAGE_TYPE,
    CONNECTION_NOT_SYNCHRONIZED,
    header_error,
)

MARKER = b"\xff" * 16
HEADER_LEN = 19
MAX_MESSAGE_LEN = 4096

OPEN = 1
UPDATE = 2
NOTIFICATION = 3
KEEPALIVE = 4
ROUTE_REFRESH = 5

TYPE_NAMES = {OPEN: "OPEN", UPDATE: "UPDATE", NOTIFICATION: "NOTIFICATION",
              KEEPALIVE: "KEEPALIVE", ROUTE_REFRESH: "ROUTE-REFRESH"}

# Smallest legal total length per type (RFC 4271 §6.1); KEEPALIVE and ROUTE-REFRESH
# have exactly one legal length.
_MIN_LEN = {OPEN: 29, UPDATE: 23, NOTIFICATION: 21, KEEPALIVE: 19, ROUTE_REFRESH: 23}
_EXACT_LEN = {KEEPALIVE: 19, ROUTE_REFRESH: 23}

_HEAD = struct.Struct("!16sHB")


def encode_header(msg_type: int, body: bytes) -> bytes:
    """Header + body; the caller guarantees the body fits (packing does the splitting)."""
    length = HEADER_LEN + len(body)
    if length > MAX_MESSAGE_LEN:
        raise ValueError(f"BGP message of {length} bytes exceeds {MAX_MESSAGE_LEN}")
    return _HEAD.pack(MARKER, length, msg_type) + body


def decode_header(data: bytes | memoryview) -> tuple[int, int]:
    """Validate a header and return (total length, type); raises BgpError (code 1)."""
    if len(data) < HEADER_LEN:
        raise header_error(BAD_MESSAGE_LENGTH, f"header truncated to {len(data)} bytes",
                           struct.pack("!H", len(data)))
    marker, length, msg_type = _HEAD.unpack_from(data)
    if marker != MARKER:
        raise header_error(CONNECTION_NOT_SYNCHRONIZED, "marker is not all ones")
    if length < HEADER_LEN or length > MAX_MESSAGE_LEN:
        raise header_error(BAD_MESSAGE_LENGTH, f"length {length} out of range",
                           struct.pack("!H", length))
    if msg_type not in _MIN_LEN:
        raise header_error(BAD_MESSAGE_TYPE, f"unknown message type {msg_type}",
                           bytes([msg_type]))
    exact = _EXACT_LEN.get(msg_type)
    if length < _MIN_LEN[msg_type] or (exact is not None and length != exact):
        raise header_error(BAD_MESSAGE_LENGTH,
                           f"length {length} is illegal for {TYPE_NAMES[msg_type]}",
                           struct.pack("!H", length))
    return length, msg_type


def split_messages(buffer: bytes | bytearray) -> tuple[list[bytes], int]:
    """Cut the complete messages out of a receive buffer.

    Returns the messages (header included) and how many bytes they used; the rest
    is an incomplete message to keep for the next read.  A bad header raises at
    once, because no later byte can be trusted after a framing error.
    """
    messages = []
    offset = 0
    view = memoryview(buffer)
    end = len(buffer)
    while end - offset >= HEADER_LEN:
        length, _ = decode_header(view[offset:offset + HEADER_LEN])
        if end - offset < length:
            break
        messages.append(bytes(view[offset:offset + length]))
        offset += length
    view.release()
    return messages, offset
