"""skeinctl events: what changes in the speaker, as it happens."""

from __future__ import annotations

import json
import time
from typing import Any

import click
import grpc

from speaker.api.client import connect
from speaker.api.stubs import pb
from speaker.cli.common import (
    Client,
    dump,
    duration,
    output_option,
    pass_client,
    peer_dict,
)


def event_dict(e: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": pb.Event.Kind.Name(e.kind).lower(), "time": e.time,
                           "node": e.node, "initial": e.initial}
    if e.kind in (pb.Event.ANNOUNCE, pb.Event.WITHDRAW, pb.Event.OWNER):
        out.update(address=e.address, mode=e.mode, owner=e.owner)
    if e.kind == pb.Event.OWNER:
        out["previous_owner"] = e.previous_owner
    if e.kind == pb.Event.PEER:
        out.update(peer=peer_dict(e.peer), previous_state=e.previous_state)
    if e.kind == pb.Event.CONFLICT:
        out.update(address=e.address, mode=e.mode, interface=e.interface, mac=e.mac,
                   detail=e.detail)
    return out


def event_line(e: Any) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(e.time)) + f".{int(e.time % 1 * 1000):03d}"
    kind = pb.Event.Kind.Name(e.kind).lower()
    if e.kind == pb.Event.SYNCED:
        return f"{stamp} {e.node}: watching"
    if e.kind == pb.Event.PEER:
        change = f"{e.previous_state} -> {e.peer.state}" if e.previous_state else e.peer.state
        up = f" (up {duration(e.peer.uptime_seconds)})" if e.peer.has_uptime else ""
        text = f"{e.peer.kind} {e.peer.name} {change}{up}"
    elif e.kind == pb.Event.CONFLICT:
        text = (f"{e.address} ({e.mode}) on {e.interface} claimed by {e.mac} ({e.detail}); "
                "announced again")
    elif e.kind == pb.Event.OWNER:
        text = f"{e.address} ({e.mode}) owner {e.previous_owner or '-'} -> {e.owner or '-'}"
        if e.initial:
            text = f"{e.address} ({e.mode}) owner {e.owner or '-'}"
    else:
        text = f"{e.address} ({e.mode})"
    return f"{stamp} {e.node}: {kind} {text}"


@click.command()
@click.option("--initial/--no-initial", default=True, show_default=True,
              help="first the current state (peers, owners, announcements)")
@output_option
@pass_client
def events(client: Client, initial: bool) -> None:
    """Stream announcements, withdrawals, owner changes, peer state changes and address
    conflicts (another host claiming an address this node announces) (JSON: one object per
    line; YAML: one document each).  A "synced" event marks the end of the current state."""
    try:
        with connect(client.endpoint) as stub:
            for event in stub.WatchEvents(pb.WatchEventsRequest(initial_state=initial)):
                if client.output == "json":
                    click.echo(json.dumps(event_dict(event)))
                elif client.output == "yaml":
                    click.echo("---\n" + dump(event_dict(event), "yaml").rstrip("\n"))
                else:
                    click.echo(event_line(event))
    except grpc.RpcError as exc:
        raise client.failure(exc) from None
    except KeyboardInterrupt:
        pass
