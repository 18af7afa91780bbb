"""The speaker's control API: gRPC (speaker/api/skein.proto) on a unix socket, or TCP with TLS.

    view.py     what the API shows, read from a running Daemon (no gRPC)
    events.py   the in-process event bus the daemon publishes to (no gRPC)
    manual.py   addresses announced by hand, merged into the daemon's plan (no gRPC)
    server.py   the grpc.aio server, on the daemon's event loop
    client.py   channels for skeinctl (unix socket or TCP + TLS)
    service.py  skein-speaker's flags for all of it, and starting / stopping it

The stubs (skein_pb2*.py) are generated at build time by setup.py; `stubs.py`
imports them and says how to get them when they are missing.
"""
