"""skeinctl routes: the LoadBalancer addresses the speaker knows, with their owners."""

from __future__ import annotations

import click

from speaker.api.stubs import pb
from speaker.cli.common import (
    ANNOUNCEMENT_HEADERS,
    WIDE_ANNOUNCEMENT_HEADERS,
    Client,
    announcement_dict,
    announcement_rows,
    emit,
    output_option,
    pass_client,
    wide_announcement_rows,
)


@click.command()
@click.option("--here", is_flag=True, help="only what this node announces")
@output_option
@pass_client
def routes(client: Client, here: bool) -> None:
    """Every L2 address with its elected owner, and what this node announces (L2, BGP,
    by hand)."""
    reply = client.call("ListAnnouncements", pb.ListAnnouncementsRequest())
    shown = [a for a in reply.announcements if a.local or not here]
    emit(client, {"node": reply.node, "announcements": [announcement_dict(a) for a in shown]},
         announcement_rows(shown), ANNOUNCEMENT_HEADERS, f"{reply.node}: no announcements",
         wide=(wide_announcement_rows(shown), WIDE_ANNOUNCEMENT_HEADERS))
