"""Smoke test of `bench/bgp_scale.py`: all three speakers (ours, BIRD 2, ExaBGP) at 500
prefixes.  Checks that the table is printed and that no namespace is left behind;
no timing is asserted.  Needs root, bird2 and ExaBGP (`pip install exabgp`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW = r"^\s+500\s+{}\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+"


def _need_tools() -> None:
    missing = [tool for tool in ("bird", "ip") if not shutil.which(tool)]
    probe = subprocess.run([sys.executable, "-c", "import exabgp"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        missing.append("exabgp (PyPI)")
    if os.geteuid() != 0 or missing:
        pytest.fail(f"the benchmark smoke test needs root and {', '.join(missing) or 'no more'}")


def test_bench_prints_table_and_cleans_up() -> None:
    _need_tools()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bgp_scale.py"), "--sizes", "500"],
                          capture_output=True, text=True, timeout=240, check=False, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    tag = re.search(r"namespaces bgs([0-9a-f]{4})r ", out)
    assert tag, out
    assert "start->Est s" in out and "peak RSS MB" in out, out
    for impl in ("ours", "bird", "exabgp"):
        assert re.search(ROW.format(impl), out, re.MULTILINE), out
    for ratio in ("ours/bird", "ours/exabgp"):
        assert re.search(rf"^\s+500\s+{ratio}\s", out, re.MULTILINE), out
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout
    assert f"bgs{tag.group(1)}" not in left, left
