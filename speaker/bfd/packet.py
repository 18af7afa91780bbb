"""The BFD control packet (RFC 5880 §4.1), encoded and decoded with the checks of
§6.8.6 that need no session state.

     0                   1                   2                   3
    |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
    |                       My Discriminator                        |
    |                      Your Discriminator                       |
    |                    Desired Min TX Interval                    |
    |                   Required Min RX Interval                    |
    |                 Required Min Echo RX Interval                 |

Intervals are in microseconds on the wire and here.  This speaker never uses
authentication, so a packet with the A bit is discarded (§6.8.6: "If the A bit is
set and no authentication is in use ... the packet MUST be discarded").
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VERSION = 1
LENGTH = 24  # without an authentication section
_FORMAT = struct.Struct("!BBBBIIIII")


class State(enum.IntEnum):
    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3

    @property
    def text(self) -> str:
        return ("AdminDown", "Down", "Init", "Up")[self.value]


class Diag(enum.IntEnum):
    """RFC 5880 §4.1 diagnostic codes."""

    NONE = 0
    CONTROL_DETECTION_TIME_EXPIRED = 1
    ECHO_FUNCTION_FAILED = 2
    NEIGHBOR_SIGNALED_SESSION_DOWN = 3
    FORWARDING_PLANE_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMINISTRATIVELY_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8

    @property
    def text(self) -> str:
        return self.name.replace("_", " ").lower()


class BfdDecodeError(ValueError):
    """A received packet that §6.8.6 says to discard."""


@dataclass(frozen=True)
class ControlPacket:
    state: State
    my_discriminator: int
    your_discriminator: int
    desired_min_tx_us: int
    required_min_rx_us: int
    detect_mult: int
    diag: Diag = Diag.NONE
    required_min_echo_rx_us: int = 0
    poll: bool = False
    final: bool = False
    control_plane_independent: bool = False
    demand: bool = False

    def encode(self) -> bytes:
        if self.poll and self.final:
            raise ValueError("a BFD control packet must not have both Poll and Final set")
        flags = ((self.state << 6) | (self.poll << 5) | (self.final << 4)
                 | (self.control_plane_independent << 3) | (self.demand << 1))
        return _FORMAT.pack((VERSION << 5) | self.diag, flags, self.detect_mult, LENGTH,
                            self.my_discriminator, self.your_discriminator,
                            self.desired_min_tx_us, self.required_min_rx_us,
                            self.required_min_echo_rx_us)


def decode(data: bytes) -> ControlPacket:
    """The packet in `data`, or BfdDecodeError naming the §6.8.6 rule it breaks."""
    if len(data) < LENGTH:
        raise BfdDecodeError(f"{len(data)} bytes, shorter than a control packet")
    (vers_diag, flags, detect_mult, length, my_disc, your_disc, tx, rx,
     echo) = _FORMAT.unpack_from(data)
    version = vers_diag >> 5
    if version != VERSION:
        raise BfdDecodeError(f"version {version}, not {VERSION}")
    if flags & 0x04:
        raise BfdDecodeError("authentication present (A bit); none is configured")
    if length < LENGTH:
        raise BfdDecodeError(f"length field {length} < {LENGTH}")
    if length > len(data):
        raise BfdDecodeError(f"length field {length} > {len(data)} bytes received")
    if detect_mult == 0:
        raise BfdDecodeError("detect multiplier 0")
    if flags & 0x01:
        raise BfdDecodeError("multipoint (M) bit set")
    if my_disc == 0:
        raise BfdDecodeError("my discriminator 0")
    state = State(flags >> 6)
    if your_disc == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
        raise BfdDecodeError(f"your discriminator 0 in state {state.text}")
    poll, final = bool(flags & 0x20), bool(flags & 0x10)
    diag_code = vers_diag & 0x1F
    # Unknown diagnostic codes are informational only: keep the packet.
    diag = Diag(diag_code) if diag_code in Diag._value2member_map_ else Diag.NONE
    return ControlPacket(
        state=state, my_discriminator=my_disc, your_discriminator=your_disc,
        desired_min_tx_us=tx, required_min_rx_us=rx, detect_mult=detect_mult, diag=diag,
        required_min_echo_rx_us=echo, poll=poll, final=final,
        control_plane_independent=bool(flags & 0x08), demand=bool(flags & 0x02))
