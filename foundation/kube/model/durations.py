"""Go's time.ParseDuration, because MetalLB's CRDs carry metav1.Duration strings.

`holdTime: 90s` or `keepaliveTime: 1m30s` must mean what they mean to MetalLB,
including fractions ("1.5s") and the two spellings of micro ("us", "µs").
The value is computed in whole nanoseconds, as Go does, then given in seconds.
"""

from __future__ import annotations

import re

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in `text` ("90s", "1m30s", "-1.5h", "0"); ValueError names what is wrong."""
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(body):
        term = _TERM.match(body, pos)
        if term is None:
            raise ValueError(f"invalid duration {text!r}: expected a number and a unit "
                             "(ns, us, ms, s, m, h) at position "
                             f"{pos + len(text) - len(body)}")
        whole, _, fraction = term.group(1).partition(".")
        unit = _UNIT_NS[term.group(2)]
        # Integer arithmetic, as Go: fractions of a nanosecond are truncated.
        total += int(whole or "0") * unit + int(fraction or "0") * unit // 10 ** len(fraction)
        pos = term.end()
    nanoseconds = total
    if nanoseconds > 2**63 - 1:
        raise ValueError(f"invalid duration {text!r}: overflows a Go time.Duration")
    return sign * nanoseconds / 1e9
