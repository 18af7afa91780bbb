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

`nft` runs behind the injectable runner of cni_plugin/nft.py (`Nft`), the
one the plugin's own `ipMasq` uses too: `NftCommand` executes the binary,
`FakeNft` keeps tables in memory for unit tests.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence

from cni_plugin.nft import Nft, NftCommand, NftError

log = logging.getLogger("skein.agent.masquerade")

FAMILY = "inet"
TABLE = "skein"
CHAIN = "postrouting"
COMMENT = "skein-agent: pod traffic leaving the cluster network"
_MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
_KEYWORD = {4: "ip", 6: "ip6"}


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
