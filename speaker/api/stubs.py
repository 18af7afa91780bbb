"""The generated gRPC stubs, with a clear error when the build step never ran."""

from __future__ import annotations

try:
    from speaker.api import skein_pb2 as pb
    from speaker.api import skein_pb2_grpc as rpc
except ImportError as exc:  # pragma: no cover - a source tree nobody built
    raise ImportError(
        "the speaker API's gRPC stubs (speaker/api/skein_pb2*.py) are missing: they are "
        "generated from speaker/api/skein.proto at build time; run `pip install -e .`") from exc

__all__ = ["pb", "rpc"]
