"""The per-interface answering logic: a frame in, at most one reply out.

Kept free of sockets and clocks (the caller passes `now`) so it is unit-tested
with hand-made and fuzzed frames.  Answers only for addresses in `v4` / `v6`,
the ones this node owns on this interface; everything else is dropped silently,
as a speaker that answered for an address it does not own would steal traffic.

Claims: a frame in which another host says that one of our addresses is at
its MAC (a gratuitous ARP, any ARP or Neighbor Solicitation sent *from* the
address, a Neighbor Advertisement *for* it) moves the neighbours' caches to
that host.  `handle` reports it as a `Claim`; the announcer answers it
(speaker.l2.announcer).  Frames from any of this node's own MACs (`own_macs`:
every announcing interface) are never claims.

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
    claims: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """Another host said that `address` (packed) is at `mac`, in a frame of kind `how`."""

    address: bytes
    mac: bytes
    how: str


class Responder:
    """Answers ARP requests and Neighbor Solicitations for owned addresses, and
    notices other hosts' claims to them."""

    def __init__(self, mac: bytes, limiter: RateLimiter | None = None) -> None:
        self.mac = mac
        self.own_macs: set[bytes] = {mac}
        self.v4: set[bytes] = set()
        self.v6: set[bytes] = set()
        self.limiter = limiter or RateLimiter()
        self.counters = Counters()

    def answer(self, frame: bytes, now: float) -> bytes | None:
        """The reply to `frame`, or None (not ours, malformed, or rate-limited)."""
        return self.handle(frame, now)[0]

    def handle(self, frame: bytes, now: float) -> tuple[bytes | None, Claim | None]:
        """The reply to `frame` (or None), and the claim it makes to one of our
        addresses (or None)."""
        ethertype = frame[12:14]
        if ethertype == b"\x08\x06":
            return self._arp(frame, now)
        if ethertype == b"\x86\xdd":
            return self._ndp(frame, now)
        self.counters.ignored += 1
        return None, None

    def _claim(self, address: bytes, mac: bytes, src_mac: bytes, how: str) -> Claim | None:
        if mac in self.own_macs or src_mac in self.own_macs:
            return None
        self.counters.claims += 1
        return Claim(address, mac, how)

    def _arp(self, frame: bytes, now: float) -> tuple[bytes | None, Claim | None]:
        arp = frames.parse_arp(frame)
        if arp is None:
            self.counters.ignored += 1
            return None, None
        claim = None
        if arp.sender_ip in self.v4:
            how = ("gratuitous ARP" if arp.sender_ip == arp.target_ip
                   else "ARP reply" if arp.op == 2 else "ARP request")
            claim = self._claim(arp.sender_ip, arp.sender_mac, arp.src_mac, how)
        # Gratuitous requests (sender == target: ours, or a claimant's) ask nothing.
        if arp.op != 1 or arp.target_ip not in self.v4 or arp.sender_ip == arp.target_ip:
            if claim is None:
                self.counters.ignored += 1
            return None, claim
        if not self.limiter.allow(arp.src_mac, now):
            self.counters.rate_limited += 1
            return None, claim
        self.counters.arp_replies += 1
        request = frames.ArpRequest(arp.src_mac, arp.sender_mac, arp.sender_ip, arp.target_ip)
        return frames.arp_reply(self.mac, arp.target_ip, request), claim

    def _ndp(self, frame: bytes, now: float) -> tuple[bytes | None, Claim | None]:
        if len(frame) > 54 and frame[54] == frames.ND_ADVERT:
            na = frames.parse_neighbor_advertisement(frame)
            if na is None or na.target not in self.v6:
                self.counters.ignored += 1
                return None, None
            return None, self._claim(na.target, na.target_lladdr or na.src_mac, na.src_mac,
                                     "Neighbor Advertisement")
        ns = frames.parse_neighbor_solicitation(frame)
        if ns is None:
            self.counters.ignored += 1
            return None, None
        claim = None
        if ns.src_ip in self.v6:
            claim = self._claim(ns.src_ip, ns.source_lladdr or ns.src_mac, ns.src_mac,
                                "Neighbor Solicitation")
        if ns.target not in self.v6:
            if claim is None:
                self.counters.ignored += 1
            return None, claim
        if not self.limiter.allow(ns.src_mac, now):
            self.counters.rate_limited += 1
            return None, claim
        self.counters.na_replies += 1
        return frames.neighbor_advertisement(self.mac, ns), claim
