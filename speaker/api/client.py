"""Channels to a speaker's API, for skeinctl (and anything else in Python).

    with connect(Endpoint(socket="/run/skein/speaker.sock")) as stub: stub.ListPeers(...)
    Endpoint(address="tcp://10.0.0.5:50051", tls_ca="ca.pem",
             tls_cert="client.pem", tls_key="client-key.pem")   # mutual TLS
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from speaker.api.stubs import rpc


@dataclass(frozen=True)
class Endpoint:
    socket: str = "/run/skein/speaker.sock"
    address: str | None = None  # tcp://HOST:PORT: TLS, instead of the socket
    tls_ca: str | None = None  # verify the server with this CA (default: the system's)
    tls_cert: str | None = None  # client certificate (mutual TLS)
    tls_key: str | None = None
    server_name: str | None = None  # the name to verify the server's certificate against

    @property
    def target(self) -> str:
        if self.address is None:
            return f"unix:{os.path.abspath(self.socket)}"
        if not self.address.startswith("tcp://"):
            raise ValueError(f"expected tcp://HOST:PORT, got {self.address!r}")
        return self.address[len("tcp://"):]

    def channel(self) -> grpc.Channel:
        if self.address is None:
            return grpc.insecure_channel(self.target)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(self.tls_ca), private_key=_read(self.tls_key),
            certificate_chain=_read(self.tls_cert))
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.secure_channel(self.target, creds, options=options)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


@contextmanager
def connect(endpoint: Endpoint) -> Iterator[Any]:
    """A `SpeakerStub` on a channel closed on exit."""
    channel = endpoint.channel()
    try:
        yield rpc.SpeakerStub(channel)
    finally:
        channel.close()
