"""The namespace lab of tests/bgp (router with BIRD's bridge, three nodes), and a
directory FRR's daemons (running as the frr user) can write to."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bgp.conftest import lab

__all__ = ["frr_dir", "lab"]

# Each FRR daemon keeps a directory of its own here, <daemon>.<pid>, left behind
# when it is killed.
FRR_RUN_TMP = Path("/var/tmp/frr")


@pytest.fixture
def frr_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="skein-frr-"))
    try:
        shutil.chown(directory, "frr", "frr")
        yield directory
    finally:
        for pidfile in directory.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                shutil.rmtree(FRR_RUN_TMP / f"{pidfile.stem}.{pid}")
        shutil.rmtree(directory, ignore_errors=True)
