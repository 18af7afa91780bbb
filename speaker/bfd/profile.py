"""MetalLB's BFDProfile as this speaker runs it: intervals and multiplier as asked,
passive mode honoured, echo mode refused with a log line (the speaker has no echo
function: it advertises a Required Min Echo RX Interval of 0), minimum TTL for
multihop sessions."""

from __future__ import annotations

import logging

from foundation.kube.model.metallb import BFDProfile
from speaker.bfd.endpoint import BfdConfig
from speaker.bfd.session import Params

log = logging.getLogger("speaker.bfd")

_warned_echo: set[tuple[str, str]] = set()


def bfd_config(profile: BFDProfile, *, multihop: bool) -> BfdConfig:
    """The session parameters `profile` asks for (`multihop` with ebgpMultiHop)."""
    key = (profile.namespace, profile.name)
    if profile.echo_mode and key not in _warned_echo:
        _warned_echo.add(key)
        log.warning("BFDProfile %s/%s: spec.echoMode is not supported by this speaker and "
                    "is ignored (asynchronous mode only); set echoMode: false",
                    profile.namespace, profile.name)
    return BfdConfig(
        params=Params(desired_min_tx_us=profile.transmit_interval_ms * 1000,
                      required_min_rx_us=profile.receive_interval_ms * 1000,
                      detect_mult=profile.detect_multiplier, passive=profile.passive_mode),
        multihop=multihop, minimum_ttl=profile.minimum_ttl)
