"""`skein-lab kube up` interrupted halfway (Ctrl-C while the nodes boot) leaves
nothing behind, and `down` after a failed `up` removes what it made."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.kube.cluster import KubeLab, KubeLabError, State
from tests.kube_lab.conftest import assert_nothing_left


def test_ctrl_c_during_up_removes_everything() -> None:
    workdir = Path(f"/var/tmp/skein-lab/int-{secrets.token_hex(3)}")
    up = subprocess.Popen([sys.executable, "-m", "lab.main", "kube", "up", "--no-dns",
                           "--workdir", str(workdir)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        # Interrupted once the nodes are booting: namespaces, processes, mounts
        # and cgroups all exist by then.
        assert up.stdout is not None
        for line in up.stdout:
            if "booting" in line:
                break
        state = State.load(workdir)
        assert state is not None and state.netns
        time.sleep(2)
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=120)
        assert up.returncode == 130, out
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert_nothing_left(state.tag, state.cgroup, workdir)


def test_down_after_a_failed_up(tmp_path: Path) -> None:
    """An `up` that fails (its control plane never starts: every binary is
    `false`) is left for a look, and `down` then removes all it made."""
    workdir = Path(f"/var/tmp/skein-lab/fail-{secrets.token_hex(3)}")
    lab = KubeLab(workdir)
    broken = tmp_path / "bin"
    broken.mkdir()
    for name in ("etcd", "kube-apiserver", "kubectl"):
        (broken / name).symlink_to("/bin/false")
    with pytest.raises(KubeLabError, match="kube-apiserver not ready"):
        lab.up([], broken, timeout=5)
    state = State.load(workdir)
    assert state is not None and state.netns
    assert KubeLab(workdir).down() == []
    assert_nothing_left(state.tag, state.cgroup, workdir)
