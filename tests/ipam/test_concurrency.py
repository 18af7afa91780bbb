"""Many skein-ipam processes on one network at once, some of them killed mid-way."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ipam.store import TEMP_FILE
from tests.ipam.helpers import SKEIN_IPAM, call, cni_env, lease_files, net_config

N = 64
# Room for N and a few more, so that filling what is left stays cheap.
RANGES = [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.2", "rangeEnd": "10.1.0.73"}]]
USABLE = 72


def spawn_adds(tmp_path: Path, conf: dict[str, Any]) -> list[subprocess.Popen[str]]:
    stdin = tmp_path / "config.json"
    stdin.write_text(json.dumps(conf))
    procs = []
    for i in range(N):
        with open(stdin) as f:
            procs.append(subprocess.Popen([SKEIN_IPAM], stdin=f, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          env=cni_env("ADD", f"pod{i}")))
    return procs


def finish(procs: list[subprocess.Popen[str]]) -> dict[str, str]:
    """Wait for all; container ID -> address for every ADD that succeeded."""
    done = {}
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            ips = json.loads(out)["ips"]
            assert len(ips) == 1
            done[f"pod{i}"] = ips[0]["address"].split("/")[0]
        else:
            # The only acceptable failure is our own SIGKILL.
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err)
    return done


def assert_leases_match(tmp_path: Path, done: dict[str, str]) -> None:
    leases = lease_files(tmp_path)
    assert len(set(done.values())) == len(done), "an address was handed out twice"
    for cid, address in done.items():
        assert leases[address] == f"{cid}\r\neth0"
    owners = [content for content in leases.values()]
    assert len(owners) == len(set(owners)), "an attachment holds two leases"


def test_parallel_adds_get_distinct_addresses(tmp_path: Path) -> None:
    conf = net_config(tmp_path, RANGES)
    done = finish(spawn_adds(tmp_path, conf))
    assert len(done) == N
    assert_leases_match(tmp_path, done)
    assert len(lease_files(tmp_path)) == N
    assert set(done.values()) == {f"10.1.0.{i}" for i in range(2, 2 + N)}


def test_kill_9_mid_way_never_duplicates_and_gc_reclaims(tmp_path: Path) -> None:
    conf = net_config(tmp_path, RANGES)
    procs = spawn_adds(tmp_path, conf)
    killed = set()
    # Some die before they even start, some while others hold the lock...
    for i in range(0, N, 8):
        procs[i].send_signal(signal.SIGKILL)
        killed.add(i)
    # ...and some once allocation is under way: wait for progress, not for time.
    while len(lease_files(tmp_path)) < N // 4 and any(p.poll() is None for p in procs):
        time.sleep(0.002)
    for i in range(3, N, 8):
        if procs[i].poll() is None:
            procs[i].send_signal(signal.SIGKILL)
            killed.add(i)
    done = finish(procs)
    assert len(done) >= N - len(killed)
    assert_leases_match(tmp_path, done)

    valid = [{"containerID": cid, "ifname": "eth0"} for cid in done]
    assert call("GC", {**conf, "cni.dev/valid-attachments": valid}).code == 0
    assert lease_files(tmp_path) == {address: f"{cid}\r\neth0" for cid, address in done.items()}
    assert not (tmp_path / "mynet" / TEMP_FILE).exists()
    # Everything the killed processes might have held is free again.
    free = USABLE - len(done)
    for k in range(free):
        call("ADD", conf, f"late{k}").ips()
    assert call("ADD", conf, "one-too-many").error()[0] == 100
