"""A minimal process around `BgpSpeaker`, for the lab and the interop tests:
`python -m speaker.bgp.runner CONFIG.json` run inside a node's network namespace
(so every socket lives there), driven by JSON lines on stdin, answering with one
JSON line per command on stdout.  Logs go to stderr.

Config: {"router_id": "...", "listen": ["0.0.0.0"] or null, "port": 179,
         "batch_delay": 0.02, "peers": [{PeerConfig fields; families as
         ["ipv4-unicast", "ipv6-unicast"]; optional "bfd": {BFDProfile fields,
         e.g. "transmit_interval_ms": 300, "detect_multiplier": 3}}]}
A peer with "bfd" runs a BFD session beside it (multihop with ebgp_multihop);
"status" then answers "bfd": {peer: {"state", "remote_state", ...}} too.
Commands: {"cmd": "announce", "prefixes": [...], "attrs": {...}, "peers": [...]},
          {"cmd": "announce_range", "start": "10.200.0.0", "count": 10000},
          {"cmd": "withdraw", "prefixes": [...]}, {"cmd": "status"},
          {"cmd": "shutdown", "reason": "..."}.  EOF or SIGTERM shuts down too.

Prefixes are parsed here, at the edge, into `ipaddress` networks; the runner keeps
each peer's desired table and hands the speaker the whole of it after every
command, as a daemon does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Iterable
from typing import Any

from foundation.kube.model.communities import parse_community
from foundation.kube.model.metallb import BFDProfile
from speaker.bfd.endpoint import BfdConfig
from speaker.bfd.profile import bfd_config
from speaker.bgp.nlri import IPV4_UNICAST, IPV6_UNICAST, Network, family_name
from speaker.bgp.peer import PeerConfig, RouteAttrs
from speaker.bgp.sockopts import unmap
from speaker.bgp.speaker import BgpSpeaker

_FAMILIES = {family_name(f): f for f in (IPV4_UNICAST, IPV6_UNICAST)}


def peer_config(raw: dict[str, Any]) -> PeerConfig:
    raw = dict(raw)
    if "families" in raw:
        raw["families"] = tuple(_FAMILIES[name] for name in raw["families"])
    return PeerConfig(**raw)


def peer_bfd(raw: dict[str, Any] | None, *, multihop: bool) -> BfdConfig | None:
    """A peer's "bfd" object (BFDProfile's fields, snake_case) as a session config."""
    if raw is None:
        return None
    return bfd_config(BFDProfile(namespace="runner", name="bfd", **raw), multihop=multihop)


def bfd_status(speaker: BgpSpeaker) -> dict[str, dict[str, Any]]:
    return {key: {"state": sess.state.text, "remote_state": sess.vars.remote_state.text,
                  "local_diag": sess.vars.local_diag.text,
                  "remote_discriminator": sess.vars.remote_discr,
                  "packets_in": sess.packets_in, "packets_out": sess.packets_out}
            for key, sess in speaker.bfd_sessions.items()}


def route_attrs(raw: dict[str, Any] | None) -> RouteAttrs:
    """RouteAttrs from JSON; "communities" are texts as a BGPAdvertisement writes them
    ("65000:100", "large:65000:1:2"), split here into standard and large."""
    raw = dict(raw or {})
    parsed = [parse_community(c) for c in raw.pop("communities", ())]
    raw["communities"] = tuple(c.value for c in parsed if not c.large)
    large = [tuple(c) for c in raw.pop("large_communities", ())]
    large += [c.parts for c in parsed if c.large]
    if large:
        raw["large_communities"] = tuple(large)
    return RouteAttrs(**raw)


def prefix(text: str) -> Network:
    """'addr/len', or a bare address for a host route; host bits must be zero."""
    return ipaddress.ip_network(text)


def host_routes(start: str, count: int) -> list[Network]:
    """`count` consecutive host routes (/32 or /128) from address `start`, built from
    integers: no text per prefix, for announcing large ranges."""
    first = ipaddress.ip_address(start)
    width = first.max_prefixlen
    if count < 0 or int(first) + count > 1 << width:
        raise ValueError(f"{count} addresses from {start} run past the address space")
    network = ipaddress.IPv4Network if first.version == 4 else ipaddress.IPv6Network
    return [network((n, width)) for n in range(int(first), int(first) + count)]


class Tables:
    """The desired table of every peer; each change hands the speaker the whole table."""

    def __init__(self, speaker: BgpSpeaker) -> None:
        self.speaker = speaker
        self.tables: dict[str, dict[Network, RouteAttrs]] = {}

    def _peers(self, peers: Iterable[str] | None) -> list[str]:
        keys = list(self.speaker.peers) if peers is None else [unmap(p) for p in peers]
        for key in keys:
            if key not in self.speaker.peers:
                raise KeyError(f"no peer {key}")
        return keys

    def announce(self, prefixes: Iterable[Network], attrs: RouteAttrs,
                 peers: Iterable[str] | None) -> None:
        added = dict.fromkeys(prefixes, attrs)
        for key in self._peers(peers):
            table = self.tables.setdefault(key, {})
            table.update(added)
            self.speaker.set_routes(key, table)

    def withdraw(self, prefixes: Iterable[Network], peers: Iterable[str] | None) -> None:
        gone = list(prefixes)
        for key in self._peers(peers):
            table = self.tables.setdefault(key, {})
            for network in gone:
                table.pop(network, None)
            self.speaker.set_routes(key, table)


async def serve(config: dict[str, Any]) -> None:
    speaker = BgpSpeaker(config["router_id"], listen_addresses=config.get("listen"),
                         listen_port=config.get("port", 179),
                         batch_delay=config.get("batch_delay", 0.02))
    for raw in config.get("peers", []):
        raw = dict(raw)
        bfd = raw.pop("bfd", None)
        cfg = peer_config(raw)
        speaker.add_peer(cfg, peer_bfd(bfd, multihop=cfg.ebgp_multihop))
    await speaker.start()
    tables = Tables(speaker)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def commands() -> None:
        while True:
            line = await reader.readline()
            if not line:
                stop.set()
                return
            try:
                cmd = json.loads(line)
                op = cmd["cmd"]
                if op == "announce":
                    tables.announce([prefix(p) for p in cmd["prefixes"]],
                                    route_attrs(cmd.get("attrs")), cmd.get("peers"))
                elif op == "announce_range":
                    tables.announce(host_routes(cmd["start"], cmd["count"]),
                                    route_attrs(cmd.get("attrs")), cmd.get("peers"))
                elif op == "withdraw":
                    tables.withdraw([prefix(p) for p in cmd["prefixes"]], cmd.get("peers"))
                elif op == "status":
                    reply({"ok": True, "peers": [dataclasses.asdict(s)
                                                 for s in speaker.status()],
                           "bfd": bfd_status(speaker)})
                    continue
                elif op == "shutdown":
                    await speaker.shutdown(cmd.get("reason", ""))
                    reply({"ok": True})
                    stop.set()
                    return
                else:
                    raise ValueError(f"unknown command {op!r}")
                reply({"ok": True})
            except Exception as exc:  # a bad command must not kill the speaker
                reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    task = loop.create_task(commands())
    await stop.wait()
    if not task.done():
        task.cancel()
        await speaker.shutdown("speaker stopping")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m speaker.bgp.runner CONFIG.json")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args[0]) as fh:
        config = json.load(fh)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
