"""The host-local disk layout, the lock, and the states a kill -9 can leave behind."""

from __future__ import annotations

import fcntl
import os
import signal
from ipaddress import ip_address as A
from pathlib import Path

import pytest

from foundation.cni.spec import Attachment
from ipam.store import TEMP_FILE, DiskStore, Lease, LockTimeout

ATT = Attachment("c1", "eth0")


def test_layout_is_host_locals(tmp_path: Path) -> None:
    with DiskStore.open(str(tmp_path), "net") as store:
        assert store.reserve(ATT, A("10.1.0.2"), 0)
        assert store.reserve(ATT, A("fd00::2"), 1)
    net = tmp_path / "net"
    assert sorted(p.name for p in net.iterdir()) == [
        "10.1.0.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    assert (net / "10.1.0.2").read_bytes() == b"c1\r\neth0"
    assert (net / "last_reserved_ip.0").read_bytes() == b"10.1.0.2"
    assert (net / "last_reserved_ip.1").read_bytes() == b"fd00::2"


def test_last_reserved_is_rewritten_whole_when_it_shrinks_or_grows(tmp_path: Path) -> None:
    """The hint is rewritten in place (no rename): no byte of a longer
    predecessor may survive, and host-local must read what it expects."""
    last = tmp_path / "net" / "last_reserved_ip.0"
    with DiskStore.open(str(tmp_path), "net") as store:
        inode = None
        for address in ("10.1.0.100", "10.1.0.9", "10.1.0.10", "10.1.0.7"):
            assert store.reserve(Attachment(address, "eth0"), A(address), 0)
            assert last.read_bytes() == address.encode()
            assert store.last_reserved(0) == A(address)
            inode = inode or last.stat().st_ino
            assert last.stat().st_ino == inode


def test_reserve_refuses_a_taken_address_and_keeps_its_owner(tmp_path: Path) -> None:
    with DiskStore.open(str(tmp_path), "net") as store:
        assert store.reserve(ATT, A("10.1.0.2"), 0)
        assert not store.reserve(Attachment("c2", "eth0"), A("10.1.0.2"), 0)
        assert store.leases() == {A("10.1.0.2"): Lease("c1", "eth0")}
        assert store.release(A("10.1.0.2")) and not store.release(A("10.1.0.2"))


def test_release_by_id_prefers_exact_leases_over_legacy_ones(tmp_path: Path) -> None:
    net = tmp_path / "net"
    with DiskStore.open(str(tmp_path), "net") as store:
        store.reserve(ATT, A("10.1.0.2"), 0)
        store.reserve(Attachment("c1", "eth1"), A("10.1.0.3"), 0)
        (net / "10.1.0.4").write_text("c1")  # written by an old host-local
        assert store.get_by_id(ATT) == [A("10.1.0.2"), A("10.1.0.4")]
        # As the reference: the exact lease goes, the legacy one only when no exact is left.
        assert store.release_by_id(ATT) == [A("10.1.0.2")]
        assert store.release_by_id(ATT) == [A("10.1.0.4")]
        assert store.release_by_id(ATT) == []
        assert store.leases() == {A("10.1.0.3"): Lease("c1", "eth1")}


def test_leases_are_files_named_by_an_address_only(tmp_path: Path) -> None:
    net = tmp_path / "net"
    with DiskStore.open(str(tmp_path), "net") as store:
        store.reserve(ATT, A("10.1.0.2"), 0)
        (net / "notes.txt").write_text("c1\r\neth0")
        (net / "10.1.0.9").mkdir()
        (net / "10.1.0.8").write_bytes(b"")
        assert store.leases() == {A("10.1.0.2"): Lease("c1", "eth0"),
                                  A("10.1.0.8"): Lease("", None)}


def test_last_reserved_tolerates_garbage(tmp_path: Path) -> None:
    with DiskStore.open(str(tmp_path), "net") as store:
        assert store.last_reserved(0) is None
        (tmp_path / "net" / "last_reserved_ip.0").write_text("garbage")
        assert store.last_reserved(0) is None
        (tmp_path / "net" / "last_reserved_ip.0").write_text("10.1.0.7\n")
        assert store.last_reserved(0) == A("10.1.0.7")


def test_a_leftover_temp_linked_to_a_lease_does_not_clobber_it(tmp_path: Path) -> None:
    """A process killed between link(2) and unlink(2) leaves the temp as a second
    name of a live lease; the next reserve must not write through it."""
    net = tmp_path / "net"
    with DiskStore.open(str(tmp_path), "net") as store:
        store.reserve(ATT, A("10.1.0.2"), 0)
        os.link(net / "10.1.0.2", net / TEMP_FILE)
        assert store.reserve(Attachment("c2", "eth0"), A("10.1.0.3"), 0)
        assert (net / "10.1.0.2").read_bytes() == b"c1\r\neth0"
        assert (net / "10.1.0.3").read_bytes() == b"c2\r\neth0"
        assert not (net / TEMP_FILE).exists()
        assert not store.remove_stale_temp()


def test_lock_times_out_while_another_holder_has_it(tmp_path: Path) -> None:
    with DiskStore.open(str(tmp_path), "net"):
        pass
    # flock belongs to the open file description: a second open() conflicts
    # even inside one process, just as another plugin process would.
    fd = os.open(tmp_path / "net" / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        handler = signal.getsignal(signal.SIGALRM)
        before, _ = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if any
        for timeout in (0.0, 0.2):
            with pytest.raises(LockTimeout), DiskStore.open(str(tmp_path), "net", timeout):
                pytest.fail("the lock was granted while held")
        # SIGALRM was only borrowed: the handler and any pending alarm are back.
        assert signal.getsignal(signal.SIGALRM) == handler
        after, _ = signal.getitimer(signal.ITIMER_REAL)
        assert (after > 0) == (before > 0) and after <= before
    finally:
        os.close(fd)
    with DiskStore.open(str(tmp_path), "net", 0.2) as store:
        assert store.leases() == {}


def test_open_fails_with_os_error_when_data_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError), DiskStore.open(str(tmp_path / "file"), "net"):
        pass
