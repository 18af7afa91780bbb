"""The NOTIFICATION message (RFC 4271 §4.5): error code, subcode, data; the peer closes
the connection right after sending it.

For Cease / Administrative Shutdown and Administrative Reset the data may carry a
human-readable reason (RFC 9003: one length byte, then UTF-8), which is how an
operator sees *why* a session went down on the router side.
"""

from __future__ import annotations

from dataclasses import dataclass

from speaker.bgp.errors import (
    BAD_MESSAGE_LENGTH,
    CEASE,
    CEASE_ADMINISTRATIVE_RESET,
    CEASE_ADMINISTRATIVE_SHUTDOWN,
    BgpError,
    describe,
    header_error,
)
from speaker.bgp.header import NOTIFICATION, encode_header

_COMMUNICATION_SUBCODES = (CEASE_ADMINISTRATIVE_SHUTDOWN, CEASE_ADMINISTRATIVE_RESET)


@dataclass(frozen=True)
class Notification:
    code: int
    subcode: int
    data: bytes = b""

    @classmethod
    def from_error(cls, error: BgpError) -> Notification:
        return cls(error.code, error.subcode, error.data)

    @classmethod
    def shutdown(cls, reason: str = "", subcode: int = CEASE_ADMINISTRATIVE_SHUTDOWN
                 ) -> Notification:
        """Cease with an optional RFC 9003 shutdown communication (at most 255 bytes)."""
        text = reason.encode()[:255]
        return cls(CEASE, subcode, bytes([len(text)]) + text if text else b"")

    def communication(self) -> str | None:
        """The RFC 9003 shutdown communication, if this is a Cease that carries one."""
        if self.code != CEASE or self.subcode not in _COMMUNICATION_SUBCODES or not self.data:
            return None
        length = self.data[0]
        if length + 1 > len(self.data):
            return None
        return self.data[1:1 + length].decode("utf-8", "replace")

    def __str__(self) -> str:
        text = describe(self.code, self.subcode)
        extra = self.communication()
        if extra:
            return f"{text} ({extra!r})"
        if self.data:
            return f"{text} (data {self.data.hex()})"
        return text


def encode(msg: Notification) -> bytes:
    return encode_header(NOTIFICATION, bytes([msg.code, msg.subcode]) + msg.data)


def decode_body(body: bytes) -> Notification:
    if len(body) < 2:
        raise header_error(BAD_MESSAGE_LENGTH, "NOTIFICATION without code and subcode",
                           (19 + len(body)).to_bytes(2, "big"))
    return Notification(body[0], body[1], bytes(body[2:]))
