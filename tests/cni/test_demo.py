"""The README's main command works and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

from cni_plugin.lab.netns import NETNS_DIR


def test_demo_runs_and_cleans_up():
    import os

    before = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
    proc = subprocess.run([sys.executable, "-m", "cni_plugin.lab.demo", "--nodes", "2",
                           "--pods", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "vxlan    ok" in proc.stdout
    assert "leftover namespaces: none" in proc.stdout
    after = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
    assert not {n for n in after - before if n.startswith("sk")}
