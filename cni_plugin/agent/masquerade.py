"""The node's masquerade rule set, kept by skein-agent (flannel's `--ip-masq`).

Masquerading is the node's, not the pod's: one nftables table, `inet skein`,
owned by the agent and by nothing else, holds one rule per address family:

    ip saddr CLUSTER ip daddr != { CLUSTER, 224.0.0.0/4 } masquerade fully-random

(`ip6` and ff00::/8 for IPv6), where CLUSTER is the cluster's pod network
(`--cluster-cidr`).  Traffic between pods keeps its source address, traffic
leaving the cluster network takes the node's, multicast is left alone, as in
flannel's rules.  The rule set depends on the agent's configuration only, never
on the pods: it is written at start, no pod ADD or DEL runs `nft`, and a node
with a thousand pods holds the same two rules as an empty one.

Kept true: every resync lists the table and compares the listing with the one
read back right after the agent last wrote it (nft prints its own canonical
form, so the agent compares nft's text with nft's text); any difference, or a
missing table, and the whole table is replaced in one transaction (`add`,
`delete`, define: atomic, so no packet ever sees the node without the rule).
The table outlives the agent on purpose (pods keep reaching the outside while
it restarts); `skein-agent --uninstall` removes it.

`nft` runs behind an injectable runner (`Nft`), as in knftables: `NftCommand`
executes the binary, `FakeNft` keeps tables in memory for unit tests.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
from collections.abc import Iterable, Sequence
from typing import Protocol

log = logging.getLogger("skein.agent.masquerade")

FAMILY = "inet"
TABLE = "skein"
CHAIN = "postrouting"
COMMENT = "skein-agent: pod traffic leaving the cluster network"
_MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
_KEYWORD = {4: "ip", 6: "ip6"}


class NftError(Exception):
    """`nft` failed; `missing` when the table it was asked about does not exist."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class Nft(Protocol):
    """Runs one `nft` command: `args` as on its command line, `script` on its
    stdin (for `-f -`).  Returns stdout; raises NftError."""

    def run(self, args: Sequence[str], script: str | None = None) -> str: ...


class NftCommand:
    """The real runner: one `nft` process per call (a few per resync, none per pod)."""

    def __init__(self, binary: str = "nft", timeout: float = 30.0) -> None:
        self.binary = binary
        self.timeout = timeout

    def run(self, args: Sequence[str], script: str | None = None) -> str:
        try:
            proc = subprocess.run([self.binary, *args], input=script, capture_output=True,
                                  text=True, check=False, timeout=self.timeout)
        except FileNotFoundError:
            raise NftError(f"{self.binary} not found: the node's masquerade rules need "
                           "nftables") from None
        except subprocess.TimeoutExpired:
            raise NftError(f"{self.binary} {' '.join(args)}: no answer in "
                           f"{self.timeout:g} s") from None
        if proc.returncode != 0:
            error = proc.stderr.strip()
            raise NftError(f"{self.binary} {' '.join(args)}: {error}",
                           missing="No such file or directory" in error)
        return proc.stdout


class FakeNft:
    """An in-memory `nft` for unit tests (knftables' fake, in small): it knows
    the commands this module sends.  `tables` maps (family, name) to the text
    `list table` prints; tests edit it to play someone changing the rules by
    hand, and set `fail` to make the next call fail.  `calls` records every
    call's arguments."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, ...]] = []
        self.fail: str | None = None

    def run(self, args: Sequence[str], script: str | None = None) -> str:
        self.calls.append(tuple(args))
        if self.fail is not None:
            message, self.fail = self.fail, None
            raise NftError(message)
        if list(args[:2]) == ["list", "table"] and len(args) == 4:
            key = (args[2], args[3])
            if key not in self.tables:
                raise NftError("Error: No such file or directory", missing=True)
            return self.tables[key]
        if list(args) == ["-f", "-"] and script is not None:
            tables = dict(self.tables)  # one transaction: all or nothing
            for command in _statements(script):
                self._apply(tables, command)
            self.tables = tables
            return ""
        raise NftError(f"FakeNft: unsupported command {' '.join(args)}")

    @staticmethod
    def _apply(tables: dict[tuple[str, str], str], command: str) -> None:
        words = command.split()
        if words[:2] == ["add", "table"]:
            tables.setdefault((words[2], words[3]), f"table {words[2]} {words[3]} {{\n}}\n")
        elif words[:2] == ["delete", "table"]:
            if tables.pop((words[2], words[3]), None) is None:
                raise NftError("Error: No such file or directory", missing=True)
        elif words[0] == "table":
            tables[(words[1], words[2])] = command + "\n"
        else:
            raise NftError(f"FakeNft: unsupported statement {command!r}")


def _statements(script: str) -> list[str]:
    """The top-level statements of an nft script: single lines, and blocks from
    `table ... {` to its closing brace (kept whole, as nft would list them)."""
    out: list[str] = []
    block: list[str] = []
    depth = 0
    for line in script.splitlines():
        if not line.strip() and not block:
            continue
        if depth or line.rstrip().endswith("{"):
            block.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0:
                out.append("\n".join(block))
                block = []
        else:
            out.append(line.strip())
    return out


def _set(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def ruleset(cluster_cidrs: Iterable[str]) -> str | None:
    """The table's definition for this pod network (pure), or None when there
    is nothing to masquerade.  Written as `nft list` prints it.  Overlapping
    networks are merged first: nft refuses overlapping elements in a set."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cluster_cidrs]
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    by_version = {4: [str(n) for n in ipaddress.collapse_addresses(v4)],
                  6: [str(n) for n in ipaddress.collapse_addresses(v6)]}
    rules = []
    for version, cidrs in by_version.items():
        if not cidrs:
            continue
        key = _KEYWORD[version]
        rules.append(f"\t\t{key} saddr {_set(cidrs)} {key} daddr != "
                     f"{_set([*cidrs, _MULTICAST[version]])} masquerade fully-random "
                     f'comment "{COMMENT}"')
    if not rules:
        return None
    return "\n".join([
        f"table {FAMILY} {TABLE} {{",
        f"\tchain {CHAIN} {{",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        *rules,
        "\t}",
        "}",
    ]) + "\n"


def _normal(listing: str) -> str:
    """A listing without its blank lines and trailing blanks (nft versions differ
    in those, never in the rules)."""
    return "\n".join(line.rstrip() for line in listing.splitlines() if line.strip())


class NodeMasquerade:
    """The `inet skein` table for `cluster_cidrs` (none: the node must not
    masquerade, and the table is removed if an earlier run left one)."""

    def __init__(self, cluster_cidrs: Iterable[str], nft: Nft | None = None) -> None:
        self.desired = ruleset(list(cluster_cidrs))
        self.nft: Nft = nft or NftCommand()
        # nft's own listing of what this agent last wrote: a later listing that
        # differs means someone changed the table.
        self._written: str | None = None

    def current(self) -> str | None:
        """The table as nft lists it, None when it does not exist."""
        try:
            return self.nft.run(["list", "table", FAMILY, TABLE])
        except NftError as err:
            if err.missing:
                return None
            raise

    def sync(self) -> bool:
        """Make the kernel hold exactly the desired table; True when it changed."""
        current = self.current()
        if self.desired is None:
            return current is not None and self.remove()
        if current is not None and _normal(current) in (_normal(self.desired),
                                                        _normal(self._written or "")):
            return False
        # Replace in one transaction: `add` first, so that `delete` cannot fail.
        self.nft.run(["-f", "-"], f"add table {FAMILY} {TABLE}\n"
                                  f"delete table {FAMILY} {TABLE}\n{self.desired}")
        self._written = self.current()
        if current is None:
            log.info("masquerade: created table %s %s: %s to outside it", FAMILY, TABLE,
                     ", ".join(_sources(self.desired)))
        else:
            log.warning("masquerade: table %s %s differed from the agent's; rewritten",
                        FAMILY, TABLE)
        return True

    def remove(self) -> bool:
        """Delete the table (uninstall); False when there was none."""
        try:
            self.nft.run(["-f", "-"], f"delete table {FAMILY} {TABLE}\n")
        except NftError as err:
            if err.missing:
                return False
            raise
        self._written = None
        log.info("masquerade: removed table %s %s", FAMILY, TABLE)
        return True


def _sources(definition: str) -> list[str]:
    return re.findall(r"saddr (\{[^}]*\}|\S+)", definition)
