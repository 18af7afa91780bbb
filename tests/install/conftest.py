"""The zipapps and the node runtime are built once per test session, by the
build scripts' CLIs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.install.helpers import INSTALL, node_python


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapps")
    proc = subprocess.run([sys.executable, str(INSTALL / "build_zipapps.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="session")
def runtime(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """install/runtime.py run by the machine's bare python3 (Debian's, as in the
    image): its binary, libraries and the modules the executables import."""
    out = tmp_path_factory.mktemp("runtime") / "runtime"
    proc = subprocess.run([node_python(), str(INSTALL / "runtime.py"), "--cni", str(built),
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out
