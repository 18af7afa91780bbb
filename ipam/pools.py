"""LoadBalancer address pools: which Service gets which address, MetalLB's way.

Why here, beside the host-local allocator: both hand out addresses from ranges
and share `foundation.addresses` (parse, contain, walk in order).  Like the rest of
`ipam` this module is pure and standard-library only: it knows nothing of
Kubernetes objects.  `speaker.controller.reconcile` turns Services and
IPAddressPools into `Request`s and pools; this module keeps the assignments and
enforces the one rule that matters: **an address is never held by two services
that may not share it.**

State is the assignments and nothing else, so a restarted controller rebuilds it
by `adopt`-ing the addresses the Services' statuses show (validated exactly like
a request for those addresses) before allocating anything new.

Semantics, following MetalLB's allocator:
- a requested address (spec.loadBalancerIP / the loadBalancerIPs annotation)
  must lie in a pool -- in the named one when `address-pool` is set -- and not
  be skipped by avoidBuggyIPs; autoAssign does not matter for it;
- otherwise the named pool is used alone, or else the `auto_pools` the caller
  chose (autoAssign pools selecting the service, in priority order); within a
  pool the first usable address in the pool's order is taken (not round robin:
  a stable, predictable choice), after the service's previous address and any
  address already shared under its sharing key;
- an address may be shared only by services with the same non-empty sharing
  key (`allow-shared-ip`), the same backend key, and no (protocol, port) in
  common.  The backend key stands for MetalLB's rule that services sharing an
  address with externalTrafficPolicy Local must select the same pods; the
  caller decides what it holds (see speaker.controller.reconcile);
- dual stack: `families` lists the wanted families in order; `mode` says whether
  one address ("one"), one per family if the pool can ("prefer-all", for
  PreferDualStack) or one per family or nothing ("all", RequireDualStack) is
  wanted;
- an existing assignment is kept while it still satisfies the request: each
  address still in a pool (the named one if any), still usable, of a wanted
  family, and compatible with its co-sharers.  As in MetalLB, autoAssign and
  the pool's service selection are not re-checked for addresses already held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from foundation.addresses import AddressRange, IPAddress, address_at

Port = tuple[str, int]  # (protocol, port), e.g. ("TCP", 80)
Mode = Literal["one", "prefer-all", "all"]


class PoolSpec(Protocol):
    """What the allocator needs of a pool; foundation.kube.model.IPAddressPool fits."""

    @property
    def name(self) -> str: ...

    @property
    def addresses(self) -> Sequence[AddressRange]: ...

    @property
    def avoid_buggy_ips(self) -> bool: ...


@dataclass(frozen=True)
class Pool:
    """A plain pool, for callers (and tests) without the Kubernetes model."""

    name: str
    addresses: tuple[AddressRange, ...]
    avoid_buggy_ips: bool = False


class AllocationError(Exception):
    """A request that cannot be served; the message is one line for an event or log."""


@dataclass(frozen=True)
class Request:
    """What one service asks for."""

    families: tuple[int, ...] = (4, 6)
    mode: Mode = "one"
    requested: tuple[IPAddress, ...] = ()
    pool: str | None = None
    auto_pools: tuple[str, ...] = ()
    sharing_key: str | None = None
    backend_key: str = ""
    ports: frozenset[Port] = frozenset()


@dataclass(frozen=True)
class Assignment:
    service: str
    addresses: tuple[IPAddress, ...]
    pools: tuple[str, ...]  # the pool each address was taken from
    request: Request


def is_buggy(address: IPAddress) -> bool:
    """An IPv4 address ending in .0 or .255, which some old clients mishandle."""
    return address.version == 4 and address.packed[-1] in (0, 255)


def _buggy_count(span: AddressRange) -> int:
    """How many .0 / .255 addresses `span` holds, without walking it."""
    if span.version != 4:
        return 0
    low, high = int(span.first), int(span.last)

    def upto(n: int, rest: int) -> int:  # values v in [0, n] with v % 256 == rest
        return (n - rest) // 256 + 1 if n >= rest else 0

    return sum(upto(high, r) - upto(low - 1, r) for r in (0, 255))


def usable(pool: PoolSpec, address: IPAddress) -> bool:
    return (any(address in r for r in pool.addresses)
            and not (pool.avoid_buggy_ips and is_buggy(address)))


def capacity(pool: PoolSpec, family: int | None = None) -> int:
    """How many addresses the pool can hand out (of one family, or all)."""
    return sum(r.size - (_buggy_count(r) if pool.avoid_buggy_ips else 0)
               for r in pool.addresses if family is None or r.version == family)


def _conflict(mine: Request, theirs: Assignment) -> str | None:
    """Why a service asking `mine` may not share an address with `theirs`, or None."""
    other = theirs.service
    if not mine.sharing_key or not theirs.request.sharing_key:
        return f"it is in use by {other} and sharing needs allow-shared-ip on both"
    if mine.sharing_key != theirs.request.sharing_key:
        return (f"it is in use by {other} with allow-shared-ip "
                f"{theirs.request.sharing_key!r}, not {mine.sharing_key!r}")
    if mine.backend_key != theirs.request.backend_key:
        return (f"it is in use by {other}, whose backends differ "
                f"({theirs.request.backend_key or 'Cluster'} vs {mine.backend_key or 'Cluster'})")
    common = sorted(mine.ports & theirs.request.ports)
    if common:
        proto, port = common[0]
        return f"port {proto}/{port} is already used on it by {other}"
    return None


@dataclass
class Allocator:
    """The assignments of services (by key) to addresses; see the module docstring."""

    pools: dict[str, PoolSpec] = field(default_factory=dict)
    _by_service: dict[str, Assignment] = field(default_factory=dict)
    _by_address: dict[IPAddress, dict[str, Assignment]] = field(default_factory=dict)
    # Bookkeeping so that one allocation costs O(1) amortised, not a walk past
    # every held address: per (pool, family) the position in the pool's order
    # before which every address is held or unusable (lowered when one below it
    # is released); per pool the held addresses with their number of holders;
    # per sharing key the addresses held under it.
    _free_from: dict[tuple[str, int], int] = field(default_factory=dict)
    _held_from: dict[str, dict[IPAddress, int]] = field(default_factory=dict)
    _by_key: dict[str, dict[IPAddress, int]] = field(default_factory=dict)
    # Bumped whenever the pools change.  An assignment recorded (validated or
    # chosen) under the current pools, whose request is equal to what the service
    # asks now, is still valid: the rest of what `_validate` checks is the
    # co-sharers, and a conflict between two services is symmetric, so it is
    # found by whichever of them changed.  Lets a resync, or a status read
    # back, keep N assignments without validating each one again.
    _generation: int = 0
    _valid_at: dict[str, int] = field(default_factory=dict)

    @classmethod
    def with_pools(cls, pools: Iterable[PoolSpec]) -> Allocator:
        alloc = cls()
        alloc.set_pools(pools)
        return alloc

    def set_pools(self, pools: Iterable[PoolSpec]) -> None:
        """Replace the pools; assignments stay until `check` finds them invalid."""
        new = {p.name: p for p in pools}
        if new == self.pools:
            return
        for name in [n for n, _ in self._free_from]:
            if name not in new or new[name] != self.pools.get(name):
                self._free_from.pop((name, 4), None)
                self._free_from.pop((name, 6), None)
        self.pools = new
        self._generation += 1

    # -- reading -----------------------------------------------------------------

    def assignment(self, service: str) -> Assignment | None:
        return self._by_service.get(service)

    def assignments(self) -> Mapping[str, tuple[IPAddress, ...]]:
        return {s: a.addresses for s, a in sorted(self._by_service.items())}

    def users(self, address: IPAddress) -> tuple[str, ...]:
        return tuple(sorted(self._by_address.get(address, {})))

    def in_use(self, pool: str) -> int:
        """Distinct addresses held from `pool`."""
        return len(self._held_from.get(pool, ()))

    # -- changing ----------------------------------------------------------------

    def release(self, service: str) -> bool:
        freed = self._drop(service)
        if freed is None:
            return False
        for address in freed:
            self._freed(address)
        return True

    def _drop(self, service: str) -> list[IPAddress] | None:
        """Forget the service's assignment; the addresses nobody holds any more (None:
        it held nothing)."""
        asg = self._by_service.pop(service, None)
        if asg is None:
            return None
        del self._valid_at[service]
        freed = []
        for address, pool in zip(asg.addresses, asg.pools, strict=True):
            users = self._by_address[address]
            del users[service]
            _uncount(self._held_from, pool, address)
            if asg.request.sharing_key:
                _uncount(self._by_key, asg.request.sharing_key, address)
            if not users:
                del self._by_address[address]
                freed.append(address)
        return freed

    def _freed(self, address: IPAddress) -> None:
        """`address` is free again: no (pool, family) may skip past it any more."""
        for (name, family), start in self._free_from.items():
            pool = self.pools.get(name)
            if family == address.version and pool is not None:
                position = _position(pool, address)
                if position is not None and position < start:
                    self._free_from[name, family] = position

    def check(self, service: str, request: Request) -> str | None:
        """Why the service's current assignment no longer satisfies `request` (None: it
        does, and `request` is remembered as what the service now asks)."""
        asg = self._by_service.get(service)
        if asg is None:
            return "no assignment"
        if self._still_valid(service, asg, request):
            return None
        problem = self._validate(service, asg.addresses, request)
        if problem is None:
            self._record(service, asg.addresses, request, asg.pools)
        return problem

    def adopt(self, service: str, addresses: Sequence[IPAddress], request: Request) -> None:
        """Take exactly `addresses` (a restart reading statuses back); AllocationError if
        they could not have been assigned for `request`."""
        problem = self._validate(service, tuple(addresses), request)
        if problem is not None:
            raise AllocationError(problem)
        self._record(service, tuple(addresses), request)

    def assign(self, service: str, request: Request,
               prefer: Sequence[IPAddress] = ()) -> tuple[IPAddress, ...]:
        """The service's addresses: kept if still valid, else newly chosen (`prefer`,
        e.g. what it held before, first when usable).

        On AllocationError the service holds nothing afterwards.
        """
        previous = tuple(prefer)
        asg = self._by_service.get(service)
        if asg is not None:
            if self._still_valid(service, asg, request):
                return asg.addresses
            if self._validate(service, asg.addresses, request) is None:
                # Keep the addresses, but remember the new ports and keys: later
                # services are checked against them.
                self._record(service, asg.addresses, request, asg.pools)
                return asg.addresses
            previous = asg.addresses
            self.release(service)
        if request.requested:
            self.adopt(service, request.requested, request)
            return request.requested
        return self._allocate(service, request, previous)

    # -- internals -----------------------------------------------------------------

    def _still_valid(self, service: str, asg: Assignment, request: Request) -> bool:
        """Known valid without looking (see `_generation`)."""
        return (self._valid_at.get(service) == self._generation
                and (asg.request is request or asg.request == request))

    def _record(self, service: str, addresses: tuple[IPAddress, ...], request: Request,
                pools: tuple[str, ...] | None = None, chosen: bool = False) -> None:
        """`chosen`: `pools` are where `_allocate` just took the addresses from."""
        freed = self._drop(service) or []
        if not chosen:
            # The pool each address came from, as long as it still holds it (pools change).
            given = pools or ("",) * len(addresses)
            pools = tuple(p if p in self.pools and usable(self.pools[p], a)
                          else self._pool_for(a, request.pool) or ""
                          for a, p in zip(addresses, given, strict=True))
        assert pools is not None
        asg = Assignment(service, addresses, pools, request)
        self._by_service[service] = asg
        self._valid_at[service] = self._generation
        for address, pool in zip(addresses, pools, strict=True):
            self._by_address.setdefault(address, {})[service] = asg
            _count(self._held_from, pool, address)
            if request.sharing_key:
                _count(self._by_key, request.sharing_key, address)
        for address in freed:
            if address not in self._by_address:
                self._freed(address)

    def _pool_for(self, address: IPAddress, wanted: str | None) -> str | None:
        """The pool `address` comes from: the wanted one, else the first by name holding it."""
        if wanted is not None:
            pool = self.pools.get(wanted)
            return wanted if pool is not None and usable(pool, address) else None
        return next((name for name in sorted(self.pools)
                     if usable(self.pools[name], address)), None)

    def _sharing_problem(self, service: str, address: IPAddress, request: Request) -> str | None:
        for other, theirs in sorted(self._by_address.get(address, {}).items()):
            if other != service:
                why = _conflict(request, theirs)
                if why is not None:
                    return why
        return None

    def _validate(self, service: str, addresses: tuple[IPAddress, ...],
                  request: Request) -> str | None:
        if not addresses:
            return "no addresses"
        if request.requested and set(addresses) != set(request.requested):
            wanted = ", ".join(map(str, request.requested))
            return f"{wanted} requested"
        families = [a.version for a in addresses]
        if len(set(families)) != len(families):
            return "more than one address of a family"
        for address in addresses:
            if address.version not in request.families:
                allowed = " or ".join(f"IPv{f}" for f in request.families)
                return f"{address} is not an {allowed} address as the service's ipFamilies ask"
        if request.mode == "all" and set(families) != set(request.families):
            return "the service requires one address of each family (RequireDualStack)"
        if request.mode == "one" and len(addresses) > 1:
            return "the service is single-stack"
        for address in addresses:
            problem = self._address_problem(address, request.pool)
            if problem is None:
                why = self._sharing_problem(service, address, request)
                problem = None if why is None else f"{address} cannot be used: {why}"
            if problem is not None:
                return problem
        return None

    def _address_problem(self, address: IPAddress, pool_name: str | None) -> str | None:
        if pool_name is not None:
            pool = self.pools.get(pool_name)
            if pool is None:
                return f"pool {pool_name} does not exist"
            if not any(address in r for r in pool.addresses):
                return f"{address} is not in pool {pool_name}"
            if not usable(pool, address):
                return f"{address} is avoided by pool {pool_name} (avoidBuggyIPs)"
            return None
        holders = [p for p in self.pools.values() if any(address in r for r in p.addresses)]
        if not holders:
            return f"{address} is not in any pool"
        if not any(usable(p, address) for p in holders):
            return f"{address} is avoided by pool {holders[0].name} (avoidBuggyIPs)"
        return None

    def _allocate(self, service: str, request: Request,
                  previous: tuple[IPAddress, ...]) -> tuple[IPAddress, ...]:
        if request.pool is not None:
            if request.pool not in self.pools:
                raise AllocationError(f"pool {request.pool} does not exist")
            names: tuple[str, ...] = (request.pool,)
        else:
            names = request.auto_pools
            if not all(n in self.pools for n in names):
                names = tuple(n for n in names if n in self.pools)
            if not names:
                raise AllocationError("no IPAddressPool is available for automatic assignment "
                                      "to this service")
        for name in names:
            chosen = self._from_pool(service, self.pools[name], request, previous)
            if chosen:
                self._record(service, chosen, request, (name,) * len(chosen), chosen=True)
                return chosen
        wanted = " and ".join(f"IPv{f}" for f in request.families)
        where = "pool " + names[0] if len(names) == 1 else "pools " + ", ".join(names)
        kind = "IPs" if request.mode == "one" else f"{wanted} addresses"
        raise AllocationError(f"no available {kind} in {where}")

    def _from_pool(self, service: str, pool: PoolSpec, request: Request,
                   previous: tuple[IPAddress, ...]) -> tuple[IPAddress, ...]:
        """Addresses from one pool as `request.mode` asks, or () if it cannot serve them."""
        chosen: list[IPAddress] = []
        for family in request.families:
            address = self._first_fit(service, pool, family, request, previous)
            if address is not None:
                chosen.append(address)
                if request.mode == "one":
                    break
            elif request.mode == "all":
                return ()
        return tuple(chosen)

    def _first_fit(self, service: str, pool: PoolSpec, family: int, request: Request,
                   previous: tuple[IPAddress, ...]) -> IPAddress | None:
        # Stability first (an update keeps its address), then sharing (services
        # with one key end up on one address), then the first free address.
        keyed = self._by_key.get(request.sharing_key, {}) if request.sharing_key else {}
        if previous or keyed:
            shared = sorted((a for a in keyed if a.version == family), key=int)
            for address in (*previous, *shared):
                if (address.version == family and usable(pool, address)
                        and self._sharing_problem(service, address, request) is None):
                    return address
        # Every address before `start` in the pool's order is held or unusable,
        # and a free usable address always fits (nobody to share it with).
        start = self._free_from.get((pool.name, family), 0)
        held = self._by_address
        avoid = pool.avoid_buggy_ips
        offset = 0
        for span in pool.addresses:
            if span.version != family:
                continue
            size = span.size
            if start < offset + size:
                first = int(span.first)
                for value in range(first + max(0, start - offset), first + size):
                    address = address_at(family, value)
                    if address not in held and not (avoid and is_buggy(address)):
                        self._free_from[pool.name, family] = offset + value - first
                        return address
            offset += size
        self._free_from[pool.name, family] = max(start, offset)
        return None


def _count(index: dict[str, dict[IPAddress, int]], key: str, address: IPAddress) -> None:
    held = index.setdefault(key, {})
    held[address] = held.get(address, 0) + 1


def _uncount(index: dict[str, dict[IPAddress, int]], key: str, address: IPAddress) -> None:
    held = index.get(key)
    if held is None or address not in held:
        return
    held[address] -= 1
    if not held[address]:
        del held[address]
        if not held:
            del index[key]


def _position(pool: PoolSpec, address: IPAddress) -> int | None:
    """Where `address` comes in the walk of its family's spans of `pool` (None: not in it)."""
    offset = 0
    for span in pool.addresses:
        if span.version != address.version:
            continue
        if address in span:
            return offset + int(address) - int(span.first)
        offset += span.size
    return None
