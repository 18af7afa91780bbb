"""The zipapps are built once per test session, by the build script's CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.install.helpers import INSTALL


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapps")
    proc = subprocess.run([sys.executable, str(INSTALL / "build_zipapps.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out
