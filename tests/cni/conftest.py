"""Every CNI test runs twice: with `skein` working in-process, and with
skein-agent running in the node namespace so that `skein` forwards to it over
the fast path.  Same assertions, same results: the agent is an accelerator,
never a different plugin."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from lab.cluster import scripts_dir
from lab.netns import Netns
from tests.conftest import CniRunner


def start_agent(node: Netns, socket_path: str, log_path: str,
                extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    proc = node.popen(os.path.join(scripts_dir(), "skein-agent"), "--node", "test",
                      "--no-overlay", "--socket", socket_path, "--log-level", "DEBUG",
                      stdout=log, stderr=subprocess.STDOUT,
                      env={**os.environ, **(extra_env or {})})
    deadline = time.monotonic() + 20
    while not os.path.exists(socket_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"skein-agent did not start: {open(log_path).read()}")
        time.sleep(0.02)
    return proc


def served(log_path: str) -> int:
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return sum(" served " in line for line in f)


@pytest.fixture(params=["in-process", "agent"])
def cni(request, node: Netns, cni_path: str, tmp_path_factory) -> Iterator[CniRunner]:
    runner = CniRunner(node, cni_path)
    if request.param == "in-process":
        yield runner
        return
    workdir = tmp_path_factory.mktemp("agent")
    socket_path = str(workdir / "run" / "agent.sock")
    log_path = str(workdir / "agent.log")
    proc = start_agent(node, socket_path, log_path)
    runner.agent_socket = socket_path
    runner.agent_pid = proc.pid
    runner.agent_log = log_path
    try:
        yield runner
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # Every forwarded call was answered by the agent, not by the fallback.
    assert served(log_path) >= runner.agent_calls, open(log_path).read()[-3000:]
