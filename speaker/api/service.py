"""skein-speaker's flags for the API and the metrics, and running them beside the daemon.

    --api-socket PATH        unix socket of the gRPC API (default /run/skein/speaker.sock;
                             "none": no unix socket)
    --api-address tcp://HOST:PORT   also serve the API over TCP, with TLS:
    --api-tls-cert FILE --api-tls-key FILE   the server's certificate and key (required)
    --api-tls-ca FILE        require client certificates signed by this CA (mutual TLS)
    --metrics-address HOST:PORT     serve Prometheus metrics on http://HOST:PORT/metrics

speaker.main takes `@api_options` (click), calls `check_arguments(args)` (a
usage error in one line, or None) and, on the daemon's loop once its first plan
is applied, `services = await start(daemon, args)` ... `await services.stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from foundation.addresses import parse_listen_address

if TYPE_CHECKING:
    from speaker.api.server import ApiServer
    from speaker.daemon import Daemon

log = logging.getLogger("speaker.api")

F = TypeVar("F", bound=Callable[..., Any])

POLL_INTERVAL = 1.0  # BGP sessions change state without waking the daemon


SHOWN_SOCKET = "/run/skein/speaker.sock"  # speaker.api.server.DEFAULT_SOCKET, for --help


def _default_socket() -> str:
    # Resolved only when the flag is absent: the server module takes a while to import.
    from speaker.api.server import DEFAULT_SOCKET

    return DEFAULT_SOCKET


def api_options(func: F) -> F:
    """The flags above, as click options (shown under the command's own)."""
    for option in reversed((
            click.option("--api-socket", default=_default_socket, metavar="PATH",
                         show_default=SHOWN_SOCKET,
                         help="Unix socket of the gRPC API, 0600 in a 0700 directory ('none' "
                              "for no socket)."),
            click.option("--api-address", default=None, metavar="tcp://HOST:PORT",
                         help="Also serve the API over TCP, with TLS (--api-tls-cert, "
                              "--api-tls-key)."),
            click.option("--api-tls-cert", default=None, metavar="FILE",
                         help="PEM certificate (chain) of the TCP API."),
            click.option("--api-tls-key", default=None, metavar="FILE",
                         help="PEM private key of --api-tls-cert."),
            click.option("--api-tls-ca", default=None, metavar="FILE",
                         help="Require TCP API clients to present a certificate signed by "
                              "this CA."),
            click.option("--metrics-address", default=None, metavar="HOST:PORT",
                         help="Serve Prometheus metrics on http://HOST:PORT/metrics.  "
                              "[default: off]"))):
        func = option(func)
    return func


def tcp_listen_address(text: str) -> str:
    """"tcp://HOST:PORT" -> "HOST:PORT" for grpc; ValueError if malformed."""
    if not text.startswith("tcp://"):
        raise ValueError(f"expected tcp://HOST:PORT, got {text!r}")
    rest = text[len("tcp://"):]
    parse_listen_address(rest)
    return rest


def check_arguments(args: Any) -> str | None:
    """What is wrong with the API flags together, in one line; None if nothing."""
    tls = (args.api_tls_cert, args.api_tls_key, args.api_tls_ca)
    if args.api_address is None:
        if any(tls):
            return "--api-tls-* apply to --api-address (the unix socket has no TLS)"
    else:
        try:
            tcp_listen_address(args.api_address)
        except ValueError as exc:
            return f"--api-address: {exc}"
        if not (args.api_tls_cert and args.api_tls_key):
            return "--api-address needs --api-tls-cert and --api-tls-key: the TCP API is TLS only"
    for flag, path in zip(("--api-tls-cert", "--api-tls-key", "--api-tls-ca"), tls, strict=True):
        if path is not None and not os.access(path, os.R_OK):
            return f"{flag}: cannot read {path}"
    if args.metrics_address is not None:
        try:
            parse_listen_address(args.metrics_address)
        except ValueError as exc:
            return f"--metrics-address: {exc}"
    return None


class Services:
    """The API server, the metrics and the event poller of one daemon."""

    def __init__(self, daemon: Daemon, api: ApiServer | None) -> None:
        self.daemon = daemon
        self.api = api
        self._poller = asyncio.create_task(self._poll(), name="api-poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            self.daemon.events.observe(self.daemon)

    async def stop(self) -> None:
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        if self.api is not None:
            await self.api.stop()


async def start(daemon: Daemon, args: Any) -> Services:
    """Start what the flags ask for; OSError (or RuntimeError from grpc) if a listener fails."""
    api = None
    socket_path = None if args.api_socket in ("", "none") else args.api_socket
    if socket_path is not None or args.api_address is not None:
        # Loaded in a thread: the loop meanwhile serves the first BGP sessions.
        await asyncio.to_thread(importlib.import_module, "speaker.api.server")
        from speaker.api.server import ApiServer, TlsFiles

        tls = None
        if args.api_address is not None:
            tls = TlsFiles(args.api_tls_cert, args.api_tls_key, args.api_tls_ca)
        api = ApiServer(daemon, socket_path,
                        None if args.api_address is None else tcp_listen_address(
                            args.api_address), tls)
        await api.start()
    if args.metrics_address is not None:
        from speaker.metrics import SpeakerMetrics, serve

        metrics = SpeakerMetrics(daemon.announcers)
        daemon.events.listeners.append(metrics.observe)
        host, port = serve(args.metrics_address)
        log.info("metrics on http://%s:%d/metrics", host, port)
    return Services(daemon, api)
