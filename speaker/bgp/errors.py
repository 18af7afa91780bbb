"""The one error type the BGP codec raises, and the NOTIFICATION codes it carries.

Every decoding problem becomes a `BgpError` that already knows which NOTIFICATION
(code, subcode, data) RFC 4271 §6 asks the speaker to send, so the session layer
never has to map exceptions to wire codes: it catches one type and sends
`error.notification()`.  `handling` says what RFC 7606 §2 makes of an UPDATE error:
a session reset (the NOTIFICATION goes out), "treat-as-withdraw" or "attribute
discard" (the session stays up and the error is logged).
"""

from __future__ import annotations

import enum

# NOTIFICATION error codes (RFC 4271 §4.5, RFC 4486, RFC 6608, RFC 7313).
MESSAGE_HEADER_ERROR = 1
OPEN_MESSAGE_ERROR = 2
UPDATE_MESSAGE_ERROR = 3
HOLD_TIMER_EXPIRED = 4
FSM_ERROR = 5
CEASE = 6
ROUTE_REFRESH_MESSAGE_ERROR = 7

# Message header error subcodes.
CONNECTION_NOT_SYNCHRONIZED = 1
BAD_MESSAGE_LENGTH = 2
BAD_MESSAGE_TYPE = 3

# OPEN message error subcodes (5 is deprecated).
UNSUPPORTED_VERSION_NUMBER = 1
BAD_PEER_AS = 2
BAD_BGP_IDENTIFIER = 3
UNSUPPORTED_OPTIONAL_PARAMETER = 4
UNACCEPTABLE_HOLD_TIME = 6
UNSUPPORTED_CAPABILITY = 7

# UPDATE message error subcodes (7 is deprecated).
MALFORMED_ATTRIBUTE_LIST = 1
UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2
MISSING_WELL_KNOWN_ATTRIBUTE = 3
ATTRIBUTE_FLAGS_ERROR = 4
ATTRIBUTE_LENGTH_ERROR = 5
INVALID_ORIGIN_ATTRIBUTE = 6
INVALID_NEXT_HOP_ATTRIBUTE = 8
OPTIONAL_ATTRIBUTE_ERROR = 9
INVALID_NETWORK_FIELD = 10
MALFORMED_AS_PATH = 11

# FSM error subcodes (RFC 6608).
FSM_UNEXPECTED_IN_OPENSENT = 1
FSM_UNEXPECTED_IN_OPENCONFIRM = 2
FSM_UNEXPECTED_IN_ESTABLISHED = 3

# Cease subcodes (RFC 4486).
CEASE_MAX_PREFIXES = 1
CEASE_ADMINISTRATIVE_SHUTDOWN = 2
CEASE_PEER_DECONFIGURED = 3
CEASE_ADMINISTRATIVE_RESET = 4
CEASE_CONNECTION_REJECTED = 5
CEASE_OTHER_CONFIGURATION_CHANGE = 6
CEASE_CONNECTION_COLLISION_RESOLUTION = 7
CEASE_OUT_OF_RESOURCES = 8
CEASE_BFD_DOWN = 10  # RFC 9384

CODE_NAMES = {
    MESSAGE_HEADER_ERROR: "Message Header Error",
    OPEN_MESSAGE_ERROR: "OPEN Message Error",
    UPDATE_MESSAGE_ERROR: "UPDATE Message Error",
    HOLD_TIMER_EXPIRED: "Hold Timer Expired",
    FSM_ERROR: "Finite State Machine Error",
    CEASE: "Cease",
    ROUTE_REFRESH_MESSAGE_ERROR: "ROUTE-REFRESH Message Error",
}

SUBCODE_NAMES = {
    MESSAGE_HEADER_ERROR: {
        CONNECTION_NOT_SYNCHRONIZED: "Connection Not Synchronized",
        BAD_MESSAGE_LENGTH: "Bad Message Length",
        BAD_MESSAGE_TYPE: "Bad Message Type",
    },
    OPEN_MESSAGE_ERROR: {
        UNSUPPORTED_VERSION_NUMBER: "Unsupported Version Number",
        BAD_PEER_AS: "Bad Peer AS",
        BAD_BGP_IDENTIFIER: "Bad BGP Identifier",
        UNSUPPORTED_OPTIONAL_PARAMETER: "Unsupported Optional Parameter",
        UNACCEPTABLE_HOLD_TIME: "Unacceptable Hold Time",
        UNSUPPORTED_CAPABILITY: "Unsupported Capability",
    },
    UPDATE_MESSAGE_ERROR: {
        MALFORMED_ATTRIBUTE_LIST: "Malformed Attribute List",
        UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: "Unrecognized Well-known Attribute",
        MISSING_WELL_KNOWN_ATTRIBUTE: "Missing Well-known Attribute",
        ATTRIBUTE_FLAGS_ERROR: "Attribute Flags Error",
        ATTRIBUTE_LENGTH_ERROR: "Attribute Length Error",
        INVALID_ORIGIN_ATTRIBUTE: "Invalid ORIGIN Attribute",
        INVALID_NEXT_HOP_ATTRIBUTE: "Invalid NEXT_HOP Attribute",
        OPTIONAL_ATTRIBUTE_ERROR: "Optional Attribute Error",
        INVALID_NETWORK_FIELD: "Invalid Network Field",
        MALFORMED_AS_PATH: "Malformed AS_PATH",
    },
    FSM_ERROR: {
        FSM_UNEXPECTED_IN_OPENSENT: "Receive Unexpected Message in OpenSent State",
        FSM_UNEXPECTED_IN_OPENCONFIRM: "Receive Unexpected Message in OpenConfirm State",
        FSM_UNEXPECTED_IN_ESTABLISHED: "Receive Unexpected Message in Established State",
    },
    CEASE: {
        CEASE_MAX_PREFIXES: "Maximum Number of Prefixes Reached",
        CEASE_ADMINISTRATIVE_SHUTDOWN: "Administrative Shutdown",
        CEASE_PEER_DECONFIGURED: "Peer De-configured",
        CEASE_ADMINISTRATIVE_RESET: "Administrative Reset",
        CEASE_CONNECTION_REJECTED: "Connection Rejected",
        CEASE_OTHER_CONFIGURATION_CHANGE: "Other Configuration Change",
        CEASE_CONNECTION_COLLISION_RESOLUTION: "Connection Collision Resolution",
        CEASE_OUT_OF_RESOURCES: "Out of Resources",
        CEASE_BFD_DOWN: "BFD Down",
    },
}


def describe(code: int, subcode: int) -> str:
    """'Cease / Administrative Shutdown' style text for logs (unknown codes by number)."""
    name = CODE_NAMES.get(code, f"code {code}")
    sub = SUBCODE_NAMES.get(code, {}).get(subcode)
    if sub is None:
        sub = "Unspecific" if subcode == 0 else f"subcode {subcode}"
    return f"{name} / {sub}"


class Handling(enum.Enum):
    """The error-handling approaches of RFC 7606 §2, mildest last."""

    SESSION_RESET = "session reset"
    TREAT_AS_WITHDRAW = "treat-as-withdraw"
    ATTRIBUTE_DISCARD = "attribute discard"


SESSION_RESET = Handling.SESSION_RESET
TREAT_AS_WITHDRAW = Handling.TREAT_AS_WITHDRAW
ATTRIBUTE_DISCARD = Handling.ATTRIBUTE_DISCARD


class BgpError(Exception):
    """A protocol error: what went wrong and the NOTIFICATION that reports it.

    `data` is the NOTIFICATION's data field exactly as RFC 4271 prescribes for the
    subcode (for example the bad length for Bad Message Length, the whole attribute
    for Attribute Flags Error).
    """

    def __init__(self, code: int, subcode: int, reason: str, data: bytes = b"",
                 handling: Handling = SESSION_RESET) -> None:
        super().__init__(f"{describe(code, subcode)}: {reason}")
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.data = data
        self.handling = handling


def header_error(subcode: int, reason: str, data: bytes = b"") -> BgpError:
    return BgpError(MESSAGE_HEADER_ERROR, subcode, reason, data)


def open_error(subcode: int, reason: str, data: bytes = b"") -> BgpError:
    return BgpError(OPEN_MESSAGE_ERROR, subcode, reason, data)


def update_error(subcode: int, reason: str, data: bytes = b"",
                 handling: Handling = SESSION_RESET) -> BgpError:
    return BgpError(UPDATE_MESSAGE_ERROR, subcode, reason, data, handling)
