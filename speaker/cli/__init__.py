"""skeinctl: the speaker's gRPC API from the command line.

    skeinctl [--socket PATH | --address tcp://HOST:PORT [--tls-*]] [-o table|wide|json|yaml]
             COMMAND
        peers              BGP sessions and the other speakers, with state and uptime
        routes             LoadBalancer addresses: mode, owner, whether this node announces
        announce IP        announce IP by hand from this node (labs)
        withdraw IP        withdraw an address announced by hand
        events             stream what changes (after the current state)
        status, diagram    the node's network (speaker/cli/status.py)
        completion SHELL   the bash, zsh or fish completion script
    skeinctl --version

Each command is a module of this package; they are registered at the bottom.
"""

from __future__ import annotations

import click

from foundation.kube.cli import version_option
from speaker.api.client import Endpoint
from speaker.cli.common import OUTPUTS, Client

DEFAULT_SOCKET = "/run/skein/speaker.sock"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              envvar="SKEIN_SPEAKER_SOCKET", help="the speaker's API socket")
@click.option("--address", default=None, metavar="tcp://HOST:PORT",
              help="a speaker's TCP API (TLS) instead of the socket")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA certificate to verify the speaker with (default: the system's)")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="client certificate, for a speaker asking for one (mutual TLS)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the client certificate's key")
@click.option("--tls-server-name", default=None,
              help="name to check the speaker's certificate against (default: the host)")
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table",
              show_default=True, help="how commands print: a table, a wide table, JSON or YAML")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="seconds per call (not for events)")
@click.pass_context
def main(ctx: click.Context, socket_path: str, address: str | None, tls_ca: str | None,
         tls_cert: str | None, tls_key: str | None, tls_server_name: str | None, output: str,
         timeout: float) -> None:
    """Talk to a Skein speaker: peers, announcements, manual announce/withdraw, events."""
    if address is not None and not address.startswith("tcp://"):
        raise click.BadParameter("expected tcp://HOST:PORT", param_hint="--address")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    ctx.obj = Client(Endpoint(socket_path, address, tls_ca, tls_cert, tls_key,
                              tls_server_name), output, timeout)


# -- registration: one line per command; other modules add theirs here --------------------

from speaker.cli import announce, completion, events, peers, routes, status  # noqa: E402

main.add_command(peers.peers)
main.add_command(routes.routes)
main.add_command(announce.announce)
main.add_command(announce.withdraw)
main.add_command(events.events)
for _command in status.COMMANDS:  # skeinctl status, skeinctl diagram
    main.add_command(_command)
main.add_command(completion.completion)
