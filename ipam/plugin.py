"""skein-ipam's CNI commands: host-local's behaviour on host-local's disk layout.

Why this layer: foundation.cni.skel turns env + stdin into a Request and a result
or CniError into JSON; `ipam.config`, `ipam.allocator` and `ipam.store` know
nothing about CNI error codes.  This module is where the two meet: it holds the
lock for the whole of each command (the reference takes it once per range set;
holding it across all range sets makes a dual-stack ADD atomic) and turns
every failure into the CNI code a runtime can act on:

  7   config errors (from ipam.config)    100 a range set is full
  5   filesystem errors                   101 duplicate / requested address taken
  11  the lock was not granted in time    50  STATUS: a range set is full
  3   CHECK: the container holds no lease
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from foundation.addresses import IPAddress, parse_address
from foundation.cni import spec
from foundation.cni.skel import Request
from foundation.cni.spec import Attachment, CniError
from ipam.allocator import (
    AllocationError,
    Allocator,
    DuplicateAllocation,
    RangeExhausted,
    RequestedInvalid,
    allocate,
)
from ipam.config import IpamConfig, parse_config, parse_resolv_conf
from ipam.store import DiskStore, LockTimeout, OpenStore, Store

if TYPE_CHECKING:
    from ipam.leasecache import LeaseCache
    from ipam.spare import Spares

LOCK_TIMEOUT_ENV = "SKEIN_IPAM_LOCK_TIMEOUT"
# Long enough for a burst of pods on a busy node (each holder needs
# milliseconds), short enough that a wedged holder surfaces as "try again".
DEFAULT_LOCK_TIMEOUT = 30.0


def _lock_timeout(environ: dict[str, str]) -> float:
    raw = environ.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return float(raw)
    except ValueError:
        raise CniError(spec.ERR_INVALID_ENV, f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number",
                       "give the lock timeout in seconds, e.g. 30") from None


@contextmanager
def _locked_store(req: Request, cfg: IpamConfig, open_store: OpenStore) -> Iterator[Store]:
    """The network's store under its lock; storage trouble becomes CNI errors."""
    where = os.path.join(cfg.data_dir, cfg.network)
    timeout = _lock_timeout(req.environ)
    try:
        with open_store(cfg.data_dir, cfg.network, timeout) as store:
            yield store
    except LockTimeout:
        raise CniError(spec.ERR_TRY_AGAIN_LATER,
                       f"timed out after {timeout:g} s waiting for the lock of network "
                       f"{cfg.network} ({where}/lock)",
                       "another IPAM process holds it; retry, or find the process that "
                       f"holds it (fuser {where}/lock)") from None
    except OSError as exc:
        raise CniError(spec.ERR_IO, f"I/O error on the leases of network {cfg.network} in "
                       f"{where}: {exc.strerror or exc}",
                       f"file: {exc.filename}" if exc.filename else "") from None


def _allocation_error(err: AllocationError, cfg: IpamConfig) -> CniError:
    msg = f"{err.msg} of network {cfg.network}"
    field = cfg.range_fields[err.range_id]
    if isinstance(err, RangeExhausted):
        count = cfg.range_sets[err.range_id].usable_count()
        return CniError(spec.ERR_ADDRESS_EXHAUSTED, msg,
                        f"all {count} addresses of {field} are leased: release leases "
                        "(DEL, GC) or widen the range")
    if isinstance(err, DuplicateAllocation):
        return CniError(spec.ERR_IPAM_FAILED, msg,
                        "duplicate allocation is not allowed: one ADD per container and "
                        "interface, run DEL first")
    if isinstance(err, RequestedInvalid):
        return CniError(spec.ERR_INVALID_CONFIG, msg, "request an address that can be handed out")
    return CniError(spec.ERR_IPAM_FAILED, msg, "request another address or release that lease")


class HostLocalIpam:
    """The `Plugin` of foundation.cni.skel for skein-ipam, on host-local's disk
    store (ipam/store.py) unless `open_store` gives another.  Inside skein-agent,
    `spares` writes new leases into files made ahead of time (ipam/spare.py)
    and `cache` reads only the leases that changed (ipam/leasecache.py)."""

    def __init__(self, spares: Spares | None = None, cache: LeaseCache | None = None,
                 open_store: OpenStore | None = None) -> None:
        self.open_store: OpenStore = open_store or functools.partial(
            DiskStore.open, spares=spares, cache=cache)

    def _store(self, req: Request, cfg: IpamConfig) -> AbstractContextManager[Store]:
        return _locked_store(req, cfg, self.open_store)

    def add(self, req: Request) -> dict[str, Any]:
        cfg = parse_config(req.config, req.args)
        dns = self._dns(cfg)
        att = Attachment(req.container_id, req.ifname)
        with self._store(req, cfg) as store:
            try:
                allocations = allocate(cfg.range_sets, store, att, cfg.requested_addresses())
            except AllocationError as err:
                raise _allocation_error(err, cfg) from None
        return {
            "ips": [{"address": str(a.address), "gateway": str(a.gateway)}
                    for a in allocations],
            "routes": [dict(route) for route in cfg.routes],
            "dns": dns,
        }

    def delete(self, req: Request) -> None:
        # Idempotent: releasing what is not leased is success (CNI's DEL rule).
        cfg = parse_config(req.config, req.args)
        with self._store(req, cfg) as store:
            store.release_by_id(Attachment(req.container_id, req.ifname))

    def check(self, req: Request) -> None:
        cfg = parse_config(req.config, req.args)
        att = Attachment(req.container_id, req.ifname)
        with self._store(req, cfg) as store:
            held = store.get_by_id(att)
        if not held:
            raise CniError(spec.ERR_UNKNOWN_CONTAINER,
                           f"{att} holds no address in network {cfg.network}",
                           "the lease is gone (GC, manual removal): recreate the container")
        for address in self._prev_addresses(req.config):
            if any(rs.contains(address) for rs in cfg.range_sets) and address not in held:
                raise CniError(spec.ERR_IPAM_FAILED,
                               f"{att} does not hold {address} of its prevResult in network "
                               f"{cfg.network}", f"it holds {', '.join(map(str, held))}")

    def status(self, req: Request) -> None:
        cfg = parse_config(req.config, req.args)
        with self._store(req, cfg) as store:
            full = [(rs, cfg.range_fields[i]) for i, rs in enumerate(cfg.range_sets)
                    if Allocator(rs, store, i).free_count() <= 0]
        if full:
            # ADD takes one address from every range set, so one full set is enough to fail.
            plural = "s" if len(full) > 1 or len(full[0][0].ranges) > 1 else ""
            ranges = "; ".join(str(rs) for rs, _ in full)
            raise CniError(spec.ERR_NOT_AVAILABLE,
                           f"no free address in range{plural} {ranges} of network {cfg.network}",
                           f"{', '.join(p for _, p in full)} fully leased: ADD would fail "
                           "until leases are released (DEL, GC) or the range is widened")

    def gc(self, req: Request) -> None:
        cfg = parse_config(req.config, req.args)
        valid = spec.valid_attachments(req.config)
        valid_ids = {att.container_id for att in valid}
        with self._store(req, cfg) as store:
            store.remove_stale_temp()
            for address, lease in store.leases().items():
                # Legacy leases carry no ifname: any attachment of the container keeps them.
                keep = (lease.container_id in valid_ids if lease.ifname is None
                        else Attachment(lease.container_id, lease.ifname) in valid)
                if not keep:
                    store.release(address)

    @staticmethod
    def _dns(cfg: IpamConfig) -> dict[str, Any]:
        if not cfg.resolv_conf:
            return {}
        try:
            with open(cfg.resolv_conf, encoding="utf-8", errors="replace") as f:
                return parse_resolv_conf(f.read())
        except OSError as exc:
            raise CniError(spec.ERR_IO, f"cannot read ipam.resolvConf {cfg.resolv_conf}: "
                           f"{exc.strerror or exc}",
                           "point resolvConf at a readable file or leave it out") from None

    @staticmethod
    def _prev_addresses(config: dict[str, Any]) -> list[IPAddress]:
        prev = config.get("prevResult")
        if not isinstance(prev, dict):
            return []
        out = []
        for entry in prev.get("ips") or []:
            text = entry.get("address", "") if isinstance(entry, dict) else ""
            try:
                out.append(parse_address(str(text).split("/")[0]))
            except ValueError:
                raise CniError(spec.ERR_DECODE, f"prevResult address {text!r} is not an "
                               "address", "prevResult must be the result of ADD") from None
        return out
