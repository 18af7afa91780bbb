"""skein-agent's lease cache (ipam/leasecache.py): always what a full read
from disk would give, whoever changed the directory, while reading only what
changed."""

from __future__ import annotations

import os
import random
import shutil
from ipaddress import ip_address as A
from ipaddress import ip_network as N
from pathlib import Path

import pytest

from foundation import inotify
from foundation.cni.spec import Attachment
from ipam import store
from ipam import store as store_module
from ipam.leasecache import LeaseCache
from ipam.ranges import RangeSet, SubnetRange
from ipam.store import DiskStore, Lease, LeaseIndex
from tests.ipam.helpers import HOST_LOCAL, call, net_config


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every lease file read from disk, by path."""
    seen: list[str] = []
    real = store.read_small

    def counting(path: str) -> bytes:
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(store, "read_small", counting)
    return seen


def cached(tmp_path: Path, cache: LeaseCache, network: str = "mynet") -> dict[A, Lease]:
    with DiskStore.open(str(tmp_path), network, cache=cache) as view:
        return view.leases()


def from_disk(tmp_path: Path, network: str = "mynet") -> dict[A, Lease]:
    with DiskStore.open(str(tmp_path), network) as view:
        return view.leases()


def test_only_what_changed_is_read_again(tmp_path: Path, reads: list[str]) -> None:
    cache = LeaseCache()
    with DiskStore.open(str(tmp_path), "mynet") as plain:
        for n in range(2, 12):
            assert plain.reserve(Attachment(f"c{n}", "eth0"), A(f"10.1.0.{n}"), 0)
    assert len(cached(tmp_path, cache)) == 10
    assert len(reads) == 10
    reads.clear()
    assert len(cached(tmp_path, cache)) == 10
    assert reads == []  # nothing changed, nothing read
    with DiskStore.open(str(tmp_path), "mynet") as plain:
        assert plain.release(A("10.1.0.5"))
        assert plain.reserve(Attachment("c20", "eth0"), A("10.1.0.20"), 0)
    leases = cached(tmp_path, cache)
    assert sorted(reads) == ["10.1.0.20"]  # the deleted one is gone without a read
    assert A("10.1.0.5") not in leases and leases[A("10.1.0.20")] == Lease("c20", "eth0")
    assert leases == from_disk(tmp_path)
    cache.close()


def test_leases_of_the_reference_host_local_are_seen(tmp_path: Path) -> None:
    conf = net_config(tmp_path, version="1.0.0")
    cache = LeaseCache()
    assert call("ADD", conf, "s1").code == 0
    assert cached(tmp_path, cache) == {A("10.1.0.2"): Lease("s1", "eth0")}
    assert call("ADD", conf, "h1", binary=HOST_LOCAL).ips() == ["10.1.0.3"]
    assert cached(tmp_path, cache) == {A("10.1.0.2"): Lease("s1", "eth0"),
                                       A("10.1.0.3"): Lease("h1", "eth0")}
    assert call("DEL", conf, "s1", binary=HOST_LOCAL).code == 0
    assert cached(tmp_path, cache) == {A("10.1.0.3"): Lease("h1", "eth0")}
    cache.close()


def test_any_change_by_anyone_matches_a_full_read(tmp_path: Path) -> None:
    """Random edits of the directory, as host-local, an old host-local, an
    exec'd skein-ipam or a confused admin would make them: after each, the
    cache says exactly what a full read does."""
    rng = random.Random(7)
    cache = LeaseCache()
    net = tmp_path / "mynet"
    names = [f"10.1.0.{n}" for n in range(2, 14)] + ["fd00::5", "not-an-address"]
    assert cached(tmp_path, cache) == {}
    for step in range(300):
        name = rng.choice(names)
        path = net / name
        action = rng.choice(["create", "delete", "rewrite", "rename", "dir", "symlink",
                             "legacy"])
        if path.is_dir() and not path.is_symlink():
            os.rmdir(path)
        elif action == "delete" or (path.exists() or path.is_symlink()) and action != "rewrite":
            path.unlink(missing_ok=True)
        if action == "create":
            path.write_bytes(f"c{step}\r\neth0".encode())
        elif action == "legacy":
            path.write_bytes(f"c{step}".encode())
        elif action == "rewrite" and path.is_file() and not path.is_symlink():
            with open(path, "r+b") as f:  # in place: no directory event at all
                f.write(f"x{step}\r\neth1".encode())
                f.truncate()
        elif action == "rename":
            temp = net / ".temp"
            temp.write_bytes(f"r{step}\r\neth0".encode())
            os.rename(temp, path)
        elif action == "dir":
            path.mkdir()
        elif action == "symlink":
            path.symlink_to(net / "lock")
        assert cached(tmp_path, cache) == from_disk(tmp_path), (step, action, name)
    cache.close()


def test_a_removed_and_recreated_directory_is_read_whole(tmp_path: Path) -> None:
    cache = LeaseCache()
    with DiskStore.open(str(tmp_path), "mynet") as plain:
        plain.reserve(Attachment("c1", "eth0"), A("10.1.0.2"), 0)
    assert cached(tmp_path, cache) == {A("10.1.0.2"): Lease("c1", "eth0")}
    shutil.rmtree(tmp_path / "mynet")
    with DiskStore.open(str(tmp_path), "mynet") as plain:
        plain.reserve(Attachment("c2", "eth0"), A("10.1.0.3"), 0)
    assert cached(tmp_path, cache) == {A("10.1.0.3"): Lease("c2", "eth0")}
    assert cached(tmp_path, cache) == {A("10.1.0.3"): Lease("c2", "eth0")}
    os.rename(tmp_path / "mynet", tmp_path / "elsewhere")
    assert cached(tmp_path, cache) == {}
    cache.close()


def test_a_lost_event_means_a_full_read(tmp_path: Path, reads: list[str]) -> None:
    """IN_Q_OVERFLOW: the kernel dropped events, so nothing cached can be trusted."""
    cache = LeaseCache()
    with DiskStore.open(str(tmp_path), "mynet") as plain:
        for n in range(2, 6):
            plain.reserve(Attachment(f"c{n}", "eth0"), A(f"10.1.0.{n}"), 0)
    assert len(cached(tmp_path, cache)) == 4
    reads.clear()
    assert cache._inotify is not None
    real = cache._inotify.read
    cache._inotify.read = lambda: [*real(), inotify.Event(-1, inotify.IN_Q_OVERFLOW, "")]
    assert len(cached(tmp_path, cache)) == 4
    assert sorted(reads) == [f"10.1.0.{n}" for n in range(2, 6)]
    cache.close()


def test_without_inotify_the_directory_is_read_every_time(
        tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: inotify.Inotify, path: str, mask: int) -> int:
        raise OSError(28, "No space left on device", path)  # max_user_watches reached

    monkeypatch.setattr(inotify.Inotify, "add_watch", refuse)
    cache = LeaseCache()
    with DiskStore.open(str(tmp_path), "mynet") as plain:
        plain.reserve(Attachment("c1", "eth0"), A("10.1.0.2"), 0)
    for _ in range(2):
        assert cached(tmp_path, cache) == {A("10.1.0.2"): Lease("c1", "eth0")}
    assert reads == ["10.1.0.2", "10.1.0.2"]
    cache.close()


def test_events_are_parsed_as_the_kernel_lays_them_out() -> None:
    import struct

    data = (struct.pack("iIII", 1, inotify.IN_CREATE, 0, 16) + b"10.1.0.2".ljust(16, b"\0")
            + struct.pack("iIII", -1, inotify.IN_Q_OVERFLOW, 0, 0)
            + struct.pack("iIII", 1, inotify.IN_DELETE_SELF, 0, 0))
    assert inotify.parse_events(data) == [
        inotify.Event(1, inotify.IN_CREATE, "10.1.0.2"),
        inotify.Event(-1, inotify.IN_Q_OVERFLOW, ""),
        inotify.Event(1, inotify.IN_DELETE_SELF, "")]


def index_answers(index: LeaseIndex, atts: list[Attachment], range_sets: list[RangeSet]
                  ) -> tuple[object, ...]:
    return (dict(index.leases),
            [sorted(index.held(att), key=str) for att in atts],
            [sorted(index.exact(att), key=str) for att in atts],
            [sorted(index.legacy(att), key=str) for att in atts],
            [index.taken(rs) for rs in range_sets])


def test_the_kept_index_answers_as_one_built_from_a_full_read(tmp_path: Path) -> None:
    """What an ADD asks (held by this attachment? how many taken in this range
    set?) from the index the cache keeps change by change equals what an index
    built from the disk says, whatever happens to the directory."""
    rng = random.Random(11)
    cache = LeaseCache()
    net = tmp_path / "mynet"
    net.mkdir()
    names = [f"10.1.0.{n}" for n in range(0, 12)] + ["10.9.0.1", "fd00::5", "fd00::0"]
    atts = [Attachment(f"c{n}", ifname) for n in range(4) for ifname in ("eth0", "net1")]
    range_sets = [RangeSet((SubnetRange.build(N("10.1.0.0/28")),)),
                  RangeSet((SubnetRange.build(N("10.1.0.0/29"), A("10.1.0.2"), A("10.1.0.5")),)),
                  RangeSet((SubnetRange.build(N("fd00::/64")),))]
    for step in range(400):
        path = net / rng.choice(names)
        owner = f"c{rng.randrange(4)}"
        action = rng.choice(["create", "legacy", "delete", "rename"])
        path.unlink(missing_ok=True)
        if action == "create":
            path.write_bytes(f"{owner}\r\n{rng.choice(['eth0', 'net1'])}".encode())
        elif action == "legacy":
            path.write_bytes(owner.encode())
        elif action == "rename":
            (net / ".temp").write_bytes(f" {owner} \r\neth0".encode())
            os.rename(net / ".temp", path)
        with DiskStore.open(str(tmp_path), "mynet", cache=cache) as kept:
            answers = index_answers(kept.index(), atts, range_sets)
        with DiskStore.open(str(tmp_path), "mynet") as plain:
            assert answers == index_answers(plain.index(), atts, range_sets), (step, action)
    cache.close()


def test_an_add_costs_the_same_with_a_thousand_leases(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With the agent's cache, an ADD reads no lease and looks at no address
    but the few it considers: nothing in it grows with the node's pods."""
    from ipam import allocator

    net = tmp_path / "mynet"
    net.mkdir()
    subnet = N("10.8.0.0/20")
    for n, address in enumerate(list(subnet.hosts())[1:1001]):
        (net / str(address)).write_bytes(f"pod{n}\r\neth0".encode())
    range_set = RangeSet((SubnetRange.build(subnet),))
    cache = LeaseCache()
    with DiskStore.open(str(tmp_path), "mynet", cache=cache) as store:
        assert store.index().taken(range_set) == 1000   # counted once, here
    looked_at = 0
    real_range_for = RangeSet.range_for

    def counting(self: RangeSet, address: A) -> object:
        nonlocal looked_at
        looked_at += 1
        return real_range_for(self, address)

    monkeypatch.setattr(RangeSet, "range_for", counting)
    read: list[str] = []
    real_read = store_module.read_small
    monkeypatch.setattr(store_module, "read_small", lambda p: read.append(p) or real_read(p))
    previous: list[str] = []
    for n in range(3):
        looked_at = 0
        read.clear()
        with DiskStore.open(str(tmp_path), "mynet", cache=cache) as store:
            [got] = allocator.allocate([range_set], store, Attachment(f"new{n}", "eth0"))
        assert looked_at <= 8, looked_at
        # Read from disk: the one lease that appeared since the last ADD (and
        # the round-robin hint), none of the thousand.
        assert [os.path.basename(p) for p in read
                if not os.path.basename(p).startswith("last_reserved")] == previous
        previous = [str(got.address.ip)]
    with DiskStore.open(str(tmp_path), "mynet", cache=cache) as store:
        assert store.index().taken(range_set) == 1003
        assert store.get_by_id(Attachment("new1", "eth0")) != []
    cache.close()
