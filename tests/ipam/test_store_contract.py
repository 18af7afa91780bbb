"""The disk store and the in-memory fake behave as one `Store`, and the plugin
runs on any `OpenStore` it is given (the reference's backend.Store with its
FakeStore): allocation and CNI error logic are proven without a filesystem."""

from __future__ import annotations

import tempfile
from ipaddress import ip_address as A
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from foundation.cni import spec
from foundation.cni.skel import Request
from foundation.cni.spec import Attachment, CniError
from ipam.allocator import allocate
from ipam.plugin import HostLocalIpam
from ipam.ranges import RangeSet, SubnetRange
from ipam.store import DiskStore, Store
from tests.ipam.fake_store import FakeStore, FakeStores
from tests.ipam.helpers import net_config

ADDRESSES = [A(f"10.9.0.{i}") for i in range(2, 8)]
ATTACHMENTS = [Attachment(f"c{i}", "eth0") for i in range(3)] + [Attachment("c0", "net1")]

operation = st.one_of(
    st.tuples(st.just("reserve"), st.sampled_from(ATTACHMENTS), st.sampled_from(ADDRESSES),
              st.integers(0, 1)),
    st.tuples(st.just("release"), st.sampled_from(ADDRESSES)),
    st.tuples(st.just("release_by_id"), st.sampled_from(ATTACHMENTS)),
    st.tuples(st.just("get_by_id"), st.sampled_from(ATTACHMENTS)),
    st.tuples(st.just("last_reserved"), st.integers(0, 1)),
    st.tuples(st.just("allocate"), st.sampled_from(ATTACHMENTS)),
)


def apply(store: Store, op: tuple[Any, ...]) -> object:
    name, *args = op
    if name == "allocate":
        rs = RangeSet((SubnetRange.build(ip_network("10.9.0.0/29")),))
        try:
            return [str(a.address) for a in allocate([rs], store, args[0], [])]
        except Exception as exc:  # noqa: BLE001 - the refusal is the result compared
            return type(exc).__name__
    return getattr(store, name)(*args)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=25))
# Two leases of one attachment: a set's order follows the address's hash, which
# is a string's, so it changed with the process's hash seed.
@example([("reserve", ATTACHMENTS[0], ADDRESSES[5], 0),
          ("reserve", ATTACHMENTS[0], ADDRESSES[4], 0), ("release_by_id", ATTACHMENTS[0])])
def test_fake_and_disk_agree(ops: list[tuple[Any, ...]]) -> None:
    fake = FakeStore()
    with tempfile.TemporaryDirectory() as tmp, DiskStore.open(tmp, "n") as disk:
        for op in ops:
            assert apply(fake, op) == apply(disk, op), op
            assert fake.leases() == disk.leases()
            assert fake.index().leases == disk.index().leases


def request(command: str, conf: dict[str, Any], container: str = "c1") -> Request:
    return Request(command, container, "/var/run/netns/x", "eth0", config=conf)


def test_the_plugin_runs_on_an_injected_store(tmp_path: Path) -> None:
    stores = FakeStores()
    ipam = HostLocalIpam(open_store=stores)
    conf = net_config(tmp_path, [[{"subnet": "10.1.0.0/29", "rangeStart": "10.1.0.2",
                                   "rangeEnd": "10.1.0.3"}]])
    assert ipam.add(request("ADD", conf, "c1"))["ips"] == [
        {"address": "10.1.0.2/29", "gateway": "10.1.0.1"}]
    assert ipam.add(request("ADD", conf, "c2"))["ips"][0]["address"] == "10.1.0.3/29"
    with pytest.raises(CniError) as full:
        ipam.add(request("ADD", conf, "c3"))
    assert full.value.code == spec.ERR_ADDRESS_EXHAUSTED
    with pytest.raises(CniError) as status:
        ipam.status(request("STATUS", conf))
    assert status.value.code == spec.ERR_NOT_AVAILABLE
    ipam.check(request("CHECK", conf, "c1"))
    ipam.delete(request("DEL", conf, "c1"))
    with pytest.raises(CniError) as gone:
        ipam.check(request("CHECK", conf, "c1"))
    assert gone.value.code == spec.ERR_UNKNOWN_CONTAINER
    gc = dict(conf, **{spec.VALID_ATTACHMENTS: []})
    store = stores.stores[(str(tmp_path), "mynet")]
    store.stale_temp = True
    ipam.gc(request("GC", gc, ""))
    assert store.leases() == {} and not store.stale_temp
    assert not any(tmp_path.iterdir())  # nothing of it touched the disk


def test_a_lock_not_granted_is_try_again_later(tmp_path: Path) -> None:
    stores = FakeStores()
    stores.held.add((str(tmp_path), "mynet"))
    with pytest.raises(CniError) as refused:
        HostLocalIpam(open_store=stores).add(request("ADD", net_config(tmp_path), "c1"))
    assert refused.value.code == spec.ERR_TRY_AGAIN_LATER
    assert "lock of network mynet" in refused.value.msg
