"""One entry point for whole messages: `decode(bytes) -> message object` and
`encode(message) -> bytes`, dispatching on the header type.

The only exception `decode` lets out is `BgpError`; anything else escaping from a
body decoder would be a codec bug, and the fuzz tests hold the codec to that.
"""

from __future__ import annotations

from speaker.bgp import keepalive, notification, route_refresh, update
from speaker.bgp import open as open_message
from speaker.bgp.errors import BAD_MESSAGE_LENGTH, header_error
from speaker.bgp.header import (
    HEADER_LEN,
    KEEPALIVE,
    NOTIFICATION,
    OPEN,
    ROUTE_REFRESH,
    UPDATE,
    decode_header,
)
from speaker.bgp.keepalive import Keepalive
from speaker.bgp.negotiated import ASSUMED, Negotiated
from speaker.bgp.notification import Notification
from speaker.bgp.open import Open
from speaker.bgp.route_refresh import RouteRefresh
from speaker.bgp.update import Update

Message = Open | Update | Notification | Keepalive | RouteRefresh


def decode(data: bytes, negotiated: Negotiated = ASSUMED) -> Message:
    """Decode exactly one message (header included)."""
    length, msg_type = decode_header(data)
    if length != len(data):
        raise header_error(BAD_MESSAGE_LENGTH,
                           f"header says {length} bytes, message has {len(data)}",
                           length.to_bytes(2, "big"))
    body = bytes(data[HEADER_LEN:])
    if msg_type == UPDATE:
        return update.decode_body(body, negotiated)
    if msg_type == KEEPALIVE:
        return keepalive.decode_body(body)
    if msg_type == OPEN:
        return open_message.decode_body(body)
    if msg_type == NOTIFICATION:
        return notification.decode_body(body)
    assert msg_type == ROUTE_REFRESH  # decode_header rejected every other type
    return route_refresh.decode_body(body)


def encode(msg: Message, negotiated: Negotiated = ASSUMED) -> bytes:
    if isinstance(msg, Update):
        return update.encode(msg, negotiated)
    if isinstance(msg, Keepalive):
        return keepalive.encode(msg)
    if isinstance(msg, Open):
        return open_message.encode(msg)
    if isinstance(msg, Notification):
        return notification.encode(msg)
    return route_refresh.encode(msg)
