"""Build step: generate the speaker API's gRPC stubs from speaker/api/skein.proto.

Everything else about the package is in pyproject.toml.  The stubs
(speaker/api/skein_pb2.py, .pyi, skein_pb2_grpc.py) are written into the source
tree before the regular build_py copies the package, so a wheel, an sdist build
and `pip install -e .` all get them; they are not committed (.gitignore).
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join("speaker", "api", "skein.proto")


def generate_stubs() -> None:
    from grpc_tools import protoc  # build-system requirement (grpcio-tools)

    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}",
                        f"--python_out={ROOT}", f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}",
                        os.path.join(ROOT, PROTO)])
    if code != 0:
        raise SystemExit(f"protoc failed on {PROTO} (exit {code})")


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
