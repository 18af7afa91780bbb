"""How Skein runs `nft`: one injectable runner, as knftables has one.

Both users of nftables go through `Nft`: the node's masquerade table that
skein-agent keeps (cni_plugin/agent/masquerade.py) and the plugin's per-pod
`ipMasq` without the agent (cni_plugin/masq.py).  `NftCommand` executes the
binary, one process per call (a transaction per call: `-f -` with a script on
stdin); `FakeNft` keeps tables in memory so that both are unit-tested without
root or a kernel.

Standard library only: the plugin executable carries this module.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class NftError(Exception):
    """`nft` failed; `missing` when what it was asked about does not exist,
    `absent` when there is no `nft` to run at all."""

    def __init__(self, message: str, missing: bool = False, absent: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
        self.absent = absent


class Nft(Protocol):
    """Runs one `nft` command: `args` as on its command line, `script` on its
    stdin (for `-f -`).  Returns stdout; raises NftError."""

    def run(self, args: Sequence[str], script: str | None = None) -> str: ...


class NftCommand:
    """The real runner: one `nft` process per call."""

    def __init__(self, binary: str = "nft", timeout: float = 30.0) -> None:
        self.binary = binary
        self.timeout = timeout

    def run(self, args: Sequence[str], script: str | None = None) -> str:
        try:
            proc = subprocess.run([self.binary, *args], input=script, capture_output=True,
                                  text=True, check=False, timeout=self.timeout)
        except FileNotFoundError:
            raise NftError(f"{self.binary} not found: install nftables", absent=True) from None
        except subprocess.TimeoutExpired:
            raise NftError(f"{self.binary} {' '.join(args)}: no answer in "
                           f"{self.timeout:g} s") from None
        if proc.returncode != 0:
            error = proc.stderr.strip()
            raise NftError(f"{self.binary} {' '.join(args)}: {error}",
                           missing="No such file or directory" in error)
        return proc.stdout


@dataclass
class _Rule:
    handle: int
    text: str
    comment: str | None


@dataclass
class _Chain:
    header: str  # what follows the chain's name in `add chain`, without the braces
    rules: list[_Rule] = field(default_factory=list)


_MISSING = "Error: No such file or directory"
_COMMENT = re.compile(r'\s+comment\s+"([^"]*)"\s*$')


class FakeNft:
    """An in-memory `nft` for unit tests (knftables' fake, in small).  It knows
    the commands Skein sends: `list table`, `-j -a list chain`, and `-f -`
    scripts of `add table`, `delete table`, whole `table ... { }` blocks,
    `add chain`, `add rule` and `delete rule ... handle N`, each script one
    transaction (all or nothing).

    `tables` maps (family, name) to the text `list table` prints for a table
    written as a block; tests edit it to play someone changing the rules by
    hand.  A table built rule by rule is kept in `chains` ((family, table,
    chain) -> its rules, each with the handle nft would give it).  Set `fail`
    to make the next call fail; `calls` records every call's arguments."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], str] = {}
        self.chains: dict[tuple[str, str, str], _Chain] = {}
        self.calls: list[tuple[str, ...]] = []
        self.fail: str | None = None
        self._handle = 0

    def rules(self, family: str, table: str, chain: str) -> list[str]:
        """The rules of a chain as `add rule` gave them (comment included)."""
        found = self.chains.get((family, table, chain))
        return [rule.text for rule in found.rules] if found else []

    def run(self, args: Sequence[str], script: str | None = None) -> str:
        self.calls.append(tuple(args))
        if self.fail is not None:
            message, self.fail = self.fail, None
            raise NftError(message)
        if list(args[:2]) == ["list", "table"] and len(args) == 4:
            return self._list_table(args[2], args[3])
        if list(args[:4]) == ["-j", "-a", "list", "chain"] and len(args) == 7:
            return self._list_chain_json(args[4], args[5], args[6])
        if list(args) == ["-f", "-"] and script is not None:
            tables = dict(self.tables)
            chains = {key: _Chain(c.header, list(c.rules)) for key, c in self.chains.items()}
            handle = self._handle
            for command in _statements(script):
                handle = self._apply(tables, chains, handle, command)
            self.tables, self.chains, self._handle = tables, chains, handle
            return ""
        raise NftError(f"FakeNft: unsupported command {' '.join(args)}")

    def _list_table(self, family: str, name: str) -> str:
        if (family, name) not in self.tables:
            raise NftError(_MISSING, missing=True)
        mine = [(key[2], chain) for key, chain in self.chains.items()
                if key[:2] == (family, name)]
        if not mine:
            return self.tables[(family, name)]
        lines = [f"table {family} {name} {{"]
        for chain_name, chain in mine:
            lines += [f"\tchain {chain_name} {{", f"\t\t{chain.header.strip()}"]
            lines += [f"\t\t{rule.text}" for rule in chain.rules]
            lines.append("\t}")
        return "\n".join([*lines, "}"]) + "\n"

    def _list_chain_json(self, family: str, table: str, name: str) -> str:
        chain = self.chains.get((family, table, name))
        if chain is None:
            raise NftError(_MISSING, missing=True)
        items: list[dict[str, object]] = [
            {"metainfo": {"json_schema_version": 1}},
            {"chain": {"family": family, "table": table, "name": name}}]
        for rule in chain.rules:
            entry: dict[str, object] = {"family": family, "table": table, "chain": name,
                                        "handle": rule.handle, "expr": []}
            if rule.comment is not None:
                entry["comment"] = rule.comment
            items.append({"rule": entry})
        return json.dumps({"nftables": items})

    @staticmethod
    def _apply(tables: dict[tuple[str, str], str], chains: dict[tuple[str, str, str], _Chain],
               handle: int, command: str) -> int:
        words = command.split()
        if words[:2] == ["add", "table"]:
            tables.setdefault((words[2], words[3]), f"table {words[2]} {words[3]} {{\n}}\n")
        elif words[:2] == ["delete", "table"]:
            if tables.pop((words[2], words[3]), None) is None:
                raise NftError(_MISSING, missing=True)
            for key in [k for k in chains if k[:2] == (words[2], words[3])]:
                del chains[key]
        elif words[0] == "table":
            tables[(words[1], words[2])] = command + "\n"
        elif words[:2] == ["add", "chain"]:
            if (words[2], words[3]) not in tables:
                raise NftError(_MISSING, missing=True)
            header = command.partition("{")[2].rpartition("}")[0]
            chains.setdefault((words[2], words[3], words[4]), _Chain(header))
        elif words[:2] == ["add", "rule"]:
            chain = chains.get((words[2], words[3], words[4]))
            if chain is None:
                raise NftError(_MISSING, missing=True)
            text = command.split(None, 5)[5]
            comment = _COMMENT.search(text)
            handle += 1
            chain.rules.append(_Rule(handle, text, comment.group(1) if comment else None))
        elif words[:2] == ["delete", "rule"] and words[5:6] == ["handle"]:
            chain = chains.get((words[2], words[3], words[4]))
            gone = int(words[6])
            if chain is None or all(rule.handle != gone for rule in chain.rules):
                raise NftError(_MISSING, missing=True)
            chain.rules = [rule for rule in chain.rules if rule.handle != gone]
        else:
            raise NftError(f"FakeNft: unsupported statement {command!r}")
        return handle


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
