"""Leases written through spare files (ipam/spare.py): same files, same
content, nothing visible before the lease is, nothing left by a kill -9."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from ipaddress import ip_address as A
from pathlib import Path

import pytest

from foundation.cni.spec import Attachment
from ipam import spare
from ipam.spare import Spares
from ipam.store import DiskStore, Lease
from tests.ipam.helpers import unnamed_files_held


def held_spares(directory: Path) -> list[str]:
    return unnamed_files_held("self", directory)


def test_a_lease_from_a_spare_is_the_same_file_as_one_without(tmp_path: Path) -> None:
    spares = Spares()
    net = tmp_path / "net"
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        # No spare yet: the first lease goes through the temporary file.
        assert store.reserve(Attachment("c1", "eth0"), A("10.1.0.2"), 0)
    assert held_spares(net) == []
    spares.replenish()
    assert len(held_spares(net)) == 1
    assert sorted(p.name for p in net.iterdir()) == ["10.1.0.2", "last_reserved_ip.0", "lock"]
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        assert store.reserve(Attachment("c2", "eth1"), A("10.1.0.3"), 0)
        assert store.leases() == {A("10.1.0.2"): Lease("c1", "eth0"),
                                  A("10.1.0.3"): Lease("c2", "eth1")}
    assert held_spares(net) == []  # used up
    assert (net / "10.1.0.3").read_bytes() == b"c2\r\neth1"
    assert (net / "10.1.0.3").stat().st_mode == (net / "10.1.0.2").stat().st_mode
    assert (net / "10.1.0.3").stat().st_nlink == 1
    assert (net / "last_reserved_ip.0").read_bytes() == b"10.1.0.3"
    spares.replenish()
    spares.close()
    assert held_spares(net) == []


def test_a_spare_does_not_take_a_leased_address(tmp_path: Path) -> None:
    spares = Spares()
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        assert store.reserve(Attachment("c1", "eth0"), A("10.1.0.2"), 0)
    spares.replenish()
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        assert not store.reserve(Attachment("c2", "eth0"), A("10.1.0.2"), 0)
        assert store.leases() == {A("10.1.0.2"): Lease("c1", "eth0")}
        assert store.last_reserved(0) == A("10.1.0.2")
    assert held_spares(tmp_path / "net") == []  # consumed all the same, nothing leaked


def test_spares_that_cannot_be_linked_fall_back_to_the_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(fd: int, directory_fd: int, name: str) -> None:
        raise OSError(errno.ENOENT, "No such file or directory", f"/proc/self/fd/{fd}")

    spares = Spares()
    net = tmp_path / "net"
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        assert store.reserve(Attachment("c1", "eth0"), A("10.1.0.2"), 0)
    spares.replenish()
    monkeypatch.setattr(spare, "link_unnamed", no_proc)
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        assert store.reserve(Attachment("c2", "eth0"), A("10.1.0.3"), 0)
    assert (net / "10.1.0.3").read_bytes() == b"c2\r\neth0"
    spares.replenish()  # the directory is off the list now
    assert held_spares(net) == []
    assert spares.take(str(net)) is None


def test_a_missing_directory_gets_no_spare_until_it_is_back(tmp_path: Path) -> None:
    spares = Spares()
    net = tmp_path / "net"
    assert spares.take(str(net)) is None
    spares.replenish()  # does not raise
    assert spares.take(str(net)) is None
    net.mkdir()
    spares.replenish()
    fd = spares.take(str(net))
    assert fd is not None
    os.close(fd)


def test_a_killed_holder_of_spares_leaves_nothing_on_disk(tmp_path: Path) -> None:
    """An unnamed file has no name to leave behind: kill -9 the process that
    holds it and the directory holds exactly the leases."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from ipaddress import ip_address as A
        from ipam.spare import Spares
        from foundation.cni.spec import Attachment
        from ipam.store import DiskStore
        spares = Spares()
        with DiskStore.open({str(tmp_path)!r}, "net", spares=spares) as store:
            store.reserve(Attachment("c1", "eth0"), A("10.1.0.2"), 0)
        spares.replenish()
        with open({str(tmp_path / "spare")!r}, "w") as out:
            out.write(os.readlink(f"/proc/self/fd/{{spares._ready[{str(tmp_path / 'net')!r}]}}"))
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            cwd=str(Path(__file__).parents[2]), text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert (tmp_path / "spare").read_text().startswith(f"{tmp_path / 'net'}/#")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == [
        "10.1.0.2", "last_reserved_ip.0", "lock"]


def test_a_lease_is_on_disk_before_it_has_its_name(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of writing a lease (a temporary file, a spare) fsync its
    content before link(2) names it: a power loss cannot leave a named, empty
    lease that no DEL would match."""
    events: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def link(src: str, dst: str, **kwargs: object) -> None:
        events.append(("link", dst))
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    spares = Spares()
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        assert store.reserve(Attachment("c1", "eth0"), A("10.1.0.2"), 0)   # temporary file
    spares.replenish()
    with DiskStore.open(str(tmp_path), "net", spares=spares) as store:
        assert store.reserve(Attachment("c2", "eth0"), A("10.1.0.3"), 0)   # the spare
    assert [kind for kind, _ in events] == ["fsync", "link", "fsync", "link"]
    assert events[0][1].endswith(".skein-ipam.tmp")
    assert "(deleted)" in events[2][1] or "#" in events[2][1]        # an unnamed O_TMPFILE
    assert [os.path.basename(dst) for kind, dst in events if kind == "link"] == [
        "10.1.0.2", "10.1.0.3"]
    spares.close()
