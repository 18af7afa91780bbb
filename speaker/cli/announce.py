"""skeinctl announce IP / withdraw IP: addresses announced by hand (labs)."""

from __future__ import annotations

import ipaddress

import click

from speaker.api.stubs import pb
from speaker.cli.common import (
    ANNOUNCEMENT_HEADERS,
    Client,
    announcement_dict,
    announcement_rows,
    emit,
    output_option,
    pass_client,
)


def _address(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter(f"not an IP address: {value!r}") from None


@click.command()
@click.argument("address", callback=_address)
@output_option
@pass_client
def announce(client: Client, address: str) -> None:
    """Announce ADDRESS from this node by every mechanism it runs (L2: answer ARP/NDP for
    it; BGP: a host route to every peer).  Returns once the speaker has applied it."""
    reply = client.call("Announce", pb.AnnounceRequest(address=address))
    emit(client, {"announcements": [announcement_dict(a) for a in reply.announcements]},
         announcement_rows(reply.announcements), ANNOUNCEMENT_HEADERS,
         f"{address}: recorded, but no announcer took it (see the speaker's log)")


@click.command()
@click.argument("address", callback=_address)
@output_option
@pass_client
def withdraw(client: Client, address: str) -> None:
    """Withdraw ADDRESS, announced by hand before; addresses of Services follow the cluster."""
    client.call("Withdraw", pb.WithdrawRequest(address=address))
    emit(client, {"address": address, "withdrawn": True}, [(address, "withdrawn")],
         ("ADDRESS", "STATE"), "")
