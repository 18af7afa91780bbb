"""ipMasq: masquerade pod traffic that leaves the pod subnet, with nftables.

One rule per pod address in the node namespace's `inet skein_masq` table,
tagged with a comment naming network, container and interface.  The comment is
the key: DEL removes exactly its own rules, GC removes the rules of
attachments the runtime no longer knows, and rules Skein did not write are
never touched.  Traffic to multicast stays unmasqueraded, as in the
reference plugin.  `nft` is executed (one transaction per change) rather than
linked, which keeps the plugin free of a netfilter library; it runs behind
the injectable runner of cni_plugin/nft.py, as the agent's does.

This is `skein` without skein-agent, as the reference `bridge` plugin.  The
conflist of a node with the agent leaves `ipMasq` off: the agent masquerades
for the whole node with one rule set (cni_plugin/agent/masquerade.py), and no
ADD or DEL runs `nft`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from cni_plugin.nft import Nft, NftCommand, NftError
from foundation.cni import spec
from foundation.cni.spec import Attachment, CniError

TABLE = "skein_masq"
CHAIN = "postrouting"
_PREFIX = "skein-masq"


def _network_key(network: str) -> str:
    if len(network) <= 48 and re.fullmatch(r"[A-Za-z0-9_.\-]+", network):
        return network
    return "h" + hashlib.sha256(network.encode()).hexdigest()[:16]


def rule_comment(network: str, container_id: str, ifname: str) -> str:
    """`skein-masq NETWORK ATTACHMENT`: the network readable when it can be, the
    attachment a hash (nft comments hold 128 bytes; IDs are often 64)."""
    attachment = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:24]
    return f"{_PREFIX} {_network_key(network)} {attachment}"


def rule_lines(comment: str, addresses: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """The nft rules for one attachment (pure, so it can be tested without nft).
    `exclude` are further destinations reached without NAT: on an overlay,
    the other nodes' pod subnets (pod-to-pod traffic keeps its source)."""
    lines = []
    for cidr in addresses:
        iface = ipaddress.ip_interface(cidr)
        keyword, multicast = ("ip", "224.0.0.0/4") if iface.version == 4 else ("ip6", "ff00::/8")
        dests = [str(iface.network), multicast] + [
            str(net) for net in map(ipaddress.ip_network, exclude)
            if net.version == iface.version]
        match = f"{keyword} saddr {iface.ip} " + " ".join(
            f"{keyword} daddr != {dest}" for dest in dests)
        lines.append(f'add rule inet {TABLE} {CHAIN} {match} masquerade comment "{comment}"')
    return lines


def _nft(nft: Nft, args: list[str], script: str | None = None) -> str:
    try:
        return nft.run(args, script)
    except NftError as err:
        if err.absent:
            raise CniError(spec.ERR_IO, "ipMasq needs the nft command",
                           "install nftables on the node, or set \"ipMasq\": false") from None
        raise CniError(spec.ERR_IO, f"nft {' '.join(args)} failed", str(err)) from None


def _rules(nft: Nft) -> list[dict[str, Any]]:
    """The rules of our chain, [] when the table does not exist yet."""
    try:
        listing = nft.run(["-j", "-a", "list", "chain", "inet", TABLE, CHAIN])
    except NftError as err:
        if err.missing:
            return []
        raise CniError(spec.ERR_IO, f"cannot list nft chain inet {TABLE} {CHAIN}",
                       str(err)) from None
    items = json.loads(listing).get("nftables", [])
    return [item["rule"] for item in items if "rule" in item]


def _delete_lines(nft: Nft, predicate: Callable[[str], bool]) -> list[str]:
    return [f"delete rule inet {TABLE} {CHAIN} handle {rule['handle']}"
            for rule in _rules(nft) if str(rule.get("comment", "")).startswith(_PREFIX)
            and predicate(rule["comment"])]


def setup(network: str, container_id: str, ifname: str, addresses: list[str],
          exclude: tuple[str, ...] = (), nft: Nft | None = None) -> None:
    nft = nft or NftCommand()
    comment = rule_comment(network, container_id, ifname)
    script = [
        f"add table inet {TABLE}",
        f"add chain inet {TABLE} {CHAIN} {{ type nat hook postrouting priority srcnat; }}",
        *_delete_lines(nft, lambda c: c == comment),
        *rule_lines(comment, addresses, exclude),
    ]
    _nft(nft, ["-f", "-"], "\n".join(script) + "\n")


def teardown(network: str, container_id: str, ifname: str, nft: Nft | None = None) -> None:
    nft = nft or NftCommand()
    comment = rule_comment(network, container_id, ifname)
    lines = _delete_lines(nft, lambda c: c == comment)
    if lines:
        _nft(nft, ["-f", "-"], "\n".join(lines) + "\n")


def collect_garbage(network: str, valid: Iterable[Attachment], nft: Nft | None = None) -> None:
    """Remove this network's rules whose attachment is not in `valid`."""
    nft = nft or NftCommand()
    keep = {rule_comment(network, att.container_id, att.ifname) for att in valid}
    mine = f"{_PREFIX} {_network_key(network)} "
    lines = _delete_lines(nft, lambda c: c.startswith(mine) and c not in keep)
    if lines:
        _nft(nft, ["-f", "-"], "\n".join(lines) + "\n")
