"""The kube lab's cgroups: one subtree per lab in every hierarchy of the host.

Every process the lab starts (the control plane, each node's containerd,
kubelet and kube-proxy, and through the kubelet every container) lives under
`/skein-lab-TAG`, so stopping the lab is: freeze the subtree, kill what is in
it, thaw, remove the directories bottom-up.  Nothing is left behind, whatever
forked when.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    fstype: str          # "cgroup" (v1) or "cgroup2"
    options: str         # v1: the controllers or name=..., as mount -o wants them

    @property
    def v1(self) -> bool:
        return self.fstype == "cgroup"


_MOUNT_FLAGS = {"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "nsdelegate",
                "memory_recursiveprot", "clone_children", "xattr"}


def hierarchies(mountinfo: str | None = None) -> list[Hierarchy]:
    """The cgroup hierarchies mounted on this host (from /proc/self/mountinfo)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            mountinfo = f.read()
    found: dict[Path, Hierarchy] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = ",".join(o for o in tail[2].split(",") if o not in _MOUNT_FLAGS)
        mountpoint = Path(fields[4].replace("\\040", " "))
        found.setdefault(mountpoint, Hierarchy(mountpoint, tail[0], options))
    return sorted(found.values(), key=lambda h: str(h.mountpoint))


def create(path: str, hier: list[Hierarchy] | None = None) -> None:
    """mkdir -p `path` (e.g. /skein-lab-ab12/node1) in every hierarchy; cpuset
    children get their parent's cpus and mems, without which no task may join."""
    for h in hier if hier is not None else hierarchies():
        current = h.mountpoint
        for part in Path(path.strip("/")).parts:
            parent, current = current, current / part
            if current.is_dir():
                continue
            current.mkdir()
            if h.v1 and "cpuset" in h.options.split(","):
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (current / name).write_text((parent / name).read_text())


def join(path: str, pid: int = 0, hier: list[Hierarchy] | None = None) -> None:
    """Move process `pid` (0: the caller) into `path` in every hierarchy."""
    for h in hier if hier is not None else hierarchies():
        procs = h.mountpoint / path.strip("/") / "cgroup.procs"
        with open(procs, "w", encoding="ascii") as f:
            f.write(str(pid or os.getpid()))


def _subtree(h: Hierarchy, path: str) -> list[Path]:
    """Every directory of `path` in `h`, deepest first."""
    top = h.mountpoint / path.strip("/")
    if not top.is_dir():
        return []
    dirs = [Path(d) for d, _, _ in os.walk(top)]
    return sorted(dirs, key=lambda d: len(d.parts), reverse=True)


def pids(path: str, hier: list[Hierarchy] | None = None) -> set[int]:
    found: set[int] = set()
    for h in hier if hier is not None else hierarchies():
        for d in _subtree(h, path):
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def kill_all(path: str, timeout: float = 20.0, hier: list[Hierarchy] | None = None) -> set[int]:
    """SIGKILL every process under `path`, the freezer holding them still so
    nothing forks away meanwhile; returns what would not die in `timeout`."""
    hier = hier if hier is not None else hierarchies()
    freezer = next((h for h in hier if h.v1 and "freezer" in h.options.split(",")), None)
    state = freezer.mountpoint / path.strip("/") / "freezer.state" if freezer else None
    deadline = time.monotonic() + timeout
    while True:
        alive = pids(path, hier)
        if not alive or time.monotonic() > deadline:
            if state is not None and state.exists():
                state.write_text("THAWED")
            return alive
        if state is not None and state.exists():
            state.write_text("FROZEN")
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if state is not None and state.exists():
            state.write_text("THAWED")
        time.sleep(0.1)


def remove(path: str, hier: list[Hierarchy] | None = None) -> list[str]:
    """rmdir the subtree in every hierarchy; returns the directories that stayed."""
    stayed = []
    for h in hier if hier is not None else hierarchies():
        for d in _subtree(h, path):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still populated for a moment after the kill
                    time.sleep(0.1)
            else:
                stayed.append(str(d))
    return stayed
