"""The per-interface answering logic: a frame in, at most one reply out.

Kept free of sockets and clocks (the caller passes `now`) so it is unit-tested
with hand-made and fuzzed frames.  Answers only for addresses in `v4` / `v6`,
the ones this node owns on this interface; everything else is dropped silently,
as a speaker that answered for an address it does not own would steal traffic.

Flood safety: each requester (source MAC) has a token bucket, and so has the
interface as a whole, so a flood costs at most a parse per frame and a bounded
number of replies; a legitimate client (one request a second or so) is never
limited.  The table of requesters is capped; when full, the oldest entries go.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from speaker.l2 import frames


@dataclass
class Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    """Token buckets: `rate` per second, up to `burst`, per key and overall."""

    rate: float = 50.0
    burst: float = 20.0
    total_rate: float = 2000.0
    total_burst: float = 500.0
    max_keys: int = 4096
    _keys: OrderedDict[bytes, Bucket] = field(default_factory=OrderedDict)
    _total: Bucket | None = None

    @staticmethod
    def _take(bucket: Bucket, now: float, rate: float, burst: float) -> bool:
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def allow(self, key: bytes, now: float) -> bool:
        if self._total is None:
            self._total = Bucket(self.total_burst, now)
        bucket = self._keys.get(key)
        if bucket is None:
            bucket = Bucket(self.burst, now)
            self._keys[key] = bucket
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        # Per-key first: a flooding source must not drain the shared bucket.
        return (self._take(bucket, now, self.rate, self.burst)
                and self._take(self._total, now, self.total_rate, self.total_burst))


@dataclass
class Counters:
    arp_replies: int = 0
    na_replies: int = 0
    rate_limited: int = 0
    ignored: int = 0


class Responder:
    """Answers ARP requests and Neighbor Solicitations for owned addresses."""

    def __init__(self, mac: bytes, limiter: RateLimiter | None = None) -> None:
        self.mac = mac
        self.v4: set[bytes] = set()
        self.v6: set[bytes] = set()
        self.limiter = limiter or RateLimiter()
        self.counters = Counters()

    def answer(self, frame: bytes, now: float) -> bytes | None:
        """The reply to `frame`, or None (not ours, malformed, or rate-limited)."""
        if len(frame) < 14:
            self.counters.ignored += 1
            return None
        ethertype = frame[12:14]
        if ethertype == b"\x08\x06":
            arp = frames.parse_arp_request(frame)
            # Our own gratuitous requests (or another owner's in a split brain)
            # have sender == target: they ask nothing.
            if arp is None or arp.target_ip not in self.v4 or arp.sender_ip == arp.target_ip:
                self.counters.ignored += 1
                return None
            if not self.limiter.allow(arp.src_mac, now):
                self.counters.rate_limited += 1
                return None
            self.counters.arp_replies += 1
            return frames.arp_reply(self.mac, arp.target_ip, arp)
        if ethertype == b"\x86\xdd":
            ns = frames.parse_neighbor_solicitation(frame)
            if ns is None or ns.target not in self.v6:
                self.counters.ignored += 1
                return None
            if not self.limiter.allow(ns.src_mac, now):
                self.counters.rate_limited += 1
                return None
            self.counters.na_replies += 1
            return frames.neighbor_advertisement(self.mac, ns)
        self.counters.ignored += 1
        return None
