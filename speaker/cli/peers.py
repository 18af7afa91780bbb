"""skeinctl peers: BGP sessions and the other speakers of the liveness protocol."""

from __future__ import annotations

import click

from speaker.api.stubs import pb
from speaker.cli.common import Client, duration, emit, output_option, pass_client, peer_dict


@click.command()
@output_option
@pass_client
def peers(client: Client) -> None:
    """BGP sessions (state, uptime, AS numbers) and the other speakers (alive or dead)."""
    reply = client.call("ListPeers", pb.ListPeersRequest())
    rows = [(p.kind, p.name, p.state, duration(p.uptime_seconds if p.has_uptime else None),
             f"{p.peer_asn}" if p.kind == "bgp" else "-",
             p.last_error or ", ".join(p.addresses) or "-") for p in reply.peers]
    wide = [(p.kind, p.name, p.state, duration(p.uptime_seconds if p.has_uptime else None),
             f"{p.peer_asn}" if p.kind == "bgp" else "-",
             f"{p.local_asn}" if p.kind == "bgp" else "-",
             f"{p.prefixes_advertised}" if p.kind == "bgp" else "-",
             ", ".join(p.addresses) or "-", p.last_error or "-") for p in reply.peers]
    emit(client, {"node": reply.node, "peers": [peer_dict(p) for p in reply.peers]}, rows,
         ("KIND", "PEER", "STATE", "UPTIME", "PEER-AS", "DETAIL"),
         f"{reply.node}: no peers",
         wide=(wide, ("KIND", "PEER", "STATE", "UPTIME", "PEER-AS", "LOCAL-AS", "PREFIXES",
                      "ADDRESSES", "LAST ERROR")))
