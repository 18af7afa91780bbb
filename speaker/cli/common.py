"""What every skeinctl command shares: the connection, the -o option, tables, JSON.

A command module defines a click command that takes `@pass_client` and
`@output_option`, calls `client.call("ListPeers", pb.ListPeersRequest())` (errors
become one line on stderr and exit status 1) and prints with `emit`.

Output follows kubectl (and gobgp's -j): `-o table` (default), `-o wide` (more
columns), `-o json`, `-o yaml`, the last two the same document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import grpc

from speaker.api.client import Endpoint
from speaker.status.speaker_state import unreachable_message

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = ("table", "wide", "json", "yaml")
@dataclass
class Client:
    endpoint: Endpoint
    output: str = "table"
    timeout: float = 30.0

    def describe(self) -> str:
        return self.endpoint.address or f"unix:{self.endpoint.socket}"

    def call(self, method: str, request: Any) -> Any:
        from speaker.api.client import connect

        try:
            with connect(self.endpoint) as stub:
                return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self.failure(exc) from None
        except (OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None

    def failure(self, exc: grpc.RpcError) -> click.ClickException:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return click.ClickException(unreachable_message(self.endpoint, details))
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return click.ClickException(f"the speaker at {self.describe()} did not answer "
                                        f"within {self.timeout:g} s (--timeout)")
        name = code.name if code is not None else "error"
        return click.ClickException(f"{name}: {' '.join(str(details).split())}")


pass_client = click.make_pass_decorator(Client)


def output_option(func: F) -> F:
    """`-o table|wide|json|yaml` on a subcommand too (`skeinctl peers -o json`): it
    overrides the group's."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.find_object(Client).output = value  # type: ignore[union-attr]

    return click.option("-o", "--output", type=click.Choice(OUTPUTS), default=None,
                        expose_value=False, callback=remember, is_eager=False,
                        help="table (default), wide, json or yaml")(func)


def dump(data: Any, output: str) -> str:
    """`data` as JSON or YAML text (keys in their order)."""
    if output == "yaml":
        import yaml

        text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return text
    return json.dumps(data, indent=2)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell; the last column unpadded."""
    widths = [max(len(str(r[i])) for r in (headers, *rows)) for i in range(len(headers))]
    lines = []
    for row in (headers, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def emit(client: Client, data: Any, rows: Iterable[Sequence[str]], headers: Sequence[str],
         empty: str, wide: tuple[Iterable[Sequence[str]], Sequence[str]] | None = None) -> None:
    """`data` as JSON or YAML, or `rows` as a table (`empty` when there are none);
    `wide`: the rows and headers of `-o wide`, when it shows more."""
    if client.output in ("json", "yaml"):
        click.echo(dump(data, client.output).rstrip("\n"))
        return
    if client.output == "wide" and wide is not None:
        rows, headers = wide
    rows = list(rows)
    click.echo(table(rows, headers) if rows else empty)


def duration(seconds: float | None) -> str:
    """3d4h, 2h5m, 4m7s, 12s; "-" for none."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                     ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // subsize}{sub}"
    return f"{s}s"


# -- messages as plain JSON-able dicts (stable keys, every field present) ---------------------

def peer_dict(p: Any) -> dict[str, Any]:
    return {"kind": p.kind, "name": p.name, "state": p.state,
            "uptime": p.uptime_seconds if p.has_uptime else None, "peer_asn": p.peer_asn,
            "local_asn": p.local_asn, "last_error": p.last_error,
            "prefixes_advertised": p.prefixes_advertised, "addresses": list(p.addresses)}


def announcement_dict(a: Any) -> dict[str, Any]:
    return {"address": a.address, "mode": a.mode, "owner": a.owner, "local": a.local,
            "manual": a.manual, "services": list(a.services), "interfaces": list(a.interfaces)}


def announcement_rows(announcements: Iterable[Any]) -> list[tuple[str, ...]]:
    return [(a.address, a.mode, a.owner or "-", "yes" if a.local else "no",
             ",".join(a.services) or ("(by hand)" if a.manual else "-"))
            for a in announcements]


ANNOUNCEMENT_HEADERS = ("ADDRESS", "MODE", "OWNER", "HERE", "SERVICES")
WIDE_ANNOUNCEMENT_HEADERS = (*ANNOUNCEMENT_HEADERS[:-1], "BY HAND", "INTERFACES", "SERVICES")


def wide_announcement_rows(announcements: Iterable[Any]) -> list[tuple[str, ...]]:
    return [(a.address, a.mode, a.owner or "-", "yes" if a.local else "no",
             "yes" if a.manual else "no", ",".join(a.interfaces) or "auto",
             ",".join(a.services) or "-") for a in announcements]
