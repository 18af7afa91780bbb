"""Thin wrappers over `ip netns` for the lab: create, run inside, wire, delete.

Names are short because interface names are limited to 15 characters; every
name carries the lab's random tag so that parallel runs never collide and a
leftover is recognisable.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Sequence
from typing import Any

NETNS_DIR = "/var/run/netns"


def new_tag() -> str:
    """A short random tag for namespace and link names (4 hex digits)."""
    return secrets.token_hex(2)


def _run(cmd: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, text=True, capture_output=True, **kw)


class Netns:
    """A named network namespace (`ip netns add NAME`), lo up."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def path(self) -> str:
        return os.path.join(NETNS_DIR, self.name)

    def create(self) -> Netns:
        _run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        return self

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def delete(self) -> None:
        """Kill what still runs inside, then remove the namespace (idempotent)."""
        if not self.exists():
            return
        pids = _run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _run(["ip", "netns", "delete", self.name], check=False)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, input: str | None = None,
            env: dict[str, str] | None = None,
            timeout: float | None = 60) -> subprocess.CompletedProcess[str]:
        return _run(self.exec_argv(argv), check=check, input=input, env=env, timeout=timeout)

    def popen(self, *argv: str, **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.exec_argv(argv), **kw)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")


def veth_between(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair with one end in each namespace; created in `a`, never in the root ns."""
    a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    a.ip("link", "set", a_if, "up")
    b.ip("link", "set", b_if, "up")
