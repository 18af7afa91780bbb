"""Shared fixtures: tagged network namespaces that are always removed, and a way
to exec CNI plugins inside a node namespace exactly as a runtime would."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.cluster import REFERENCE_CNI_DIR, scripts_dir
from lab.netns import Netns, new_tag


def _console_script_dir() -> str:
    directory = scripts_dir()
    if not os.access(os.path.join(directory, "skein"), os.X_OK):
        raise RuntimeError("the skein console script is not installed: pip install -e .[test]")
    return directory


@pytest.fixture
def tag() -> str:
    return new_tag()


@pytest.fixture
def netns_factory(tag: str) -> Iterator[Any]:
    """Create namespaces named sk<tag><suffix>; every one is deleted at teardown."""
    made: list[Netns] = []

    def make(suffix: str) -> Netns:
        ns = Netns(f"sk{tag}{suffix}").create()
        made.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in reversed(made):
            ns.delete()


@dataclass
class PluginResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


@dataclass
class CniRunner:
    """Execs a plugin binary inside `node` with CNI_* variables and a config on stdin."""

    node: Netns
    cni_path: str
    agent_socket: str | None = None  # set: `skein` configs name the agent (fast path)
    agent_calls: int = 0
    agent_pid: int | None = None
    agent_log: str | None = None

    def wait_quiet(self, timeout: float = 30.0) -> None:
        """Until no plugin process runs in the node namespace and the agent (if
        any) has stopped working on requests whose client is gone."""
        import time

        deadline = time.monotonic() + timeout
        last_size = -1
        while True:
            pids = subprocess.run(["ip", "netns", "pids", self.node.name], capture_output=True,
                                  text=True, check=False).stdout.split()
            busy = [p for p in pids if int(p) != self.agent_pid]
            size = os.path.getsize(self.agent_log) if self.agent_log else 0
            if not busy and size == last_size:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"node namespace still busy: {busy}")
            last_size = size
            time.sleep(0.3)

    def _prepare(self, plugin: str, command: str, config: dict[str, Any] | str,
                 container_id: str, netns: str, ifname: str, args: str
                 ) -> tuple[dict[str, str], str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_PATH": self.cni_path,
        }
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        if netns:
            env["CNI_NETNS"] = netns
        if ifname:
            env["CNI_IFNAME"] = ifname
        if args:
            env["CNI_ARGS"] = args
        if self.agent_socket and plugin == "skein" and isinstance(config, dict):
            config = {**config, "agentSocket": self.agent_socket}
            if command != "VERSION":
                self.agent_calls += 1
        return env, config if isinstance(config, str) else json.dumps(config)

    def call(self, plugin: str, command: str, config: dict[str, Any] | str, *,
             container_id: str = "", netns: str = "", ifname: str = "eth0",
             args: str = "", timeout: float = 60) -> PluginResult:
        env, stdin = self._prepare(plugin, command, config, container_id, netns, ifname, args)
        proc = self.node.run(self.find(plugin), check=False, input=stdin, env=env,
                             timeout=timeout)
        return PluginResult(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, plugin: str, command: str, config: dict[str, Any], *,
              container_id: str = "", netns: str = "", ifname: str = "eth0"
              ) -> subprocess.Popen[str]:
        """Start a call without waiting (stdout/stderr piped), for parallel runs."""
        import tempfile

        env, stdin = self._prepare(plugin, command, config, container_id, netns, ifname, "")
        with tempfile.TemporaryFile("w+") as data:
            data.write(stdin)
            data.seek(0)
            return subprocess.Popen(self.node.exec_argv([self.find(plugin)]), stdin=data,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    text=True)

    def find(self, plugin: str) -> str:
        for directory in self.cni_path.split(":"):
            candidate = os.path.join(directory, plugin)
            if os.access(candidate, os.X_OK):
                return candidate
        raise FileNotFoundError(plugin)


@pytest.fixture
def cni_path() -> str:
    """Our console scripts first, then Debian's reference plugins."""
    return f"{_console_script_dir()}:{REFERENCE_CNI_DIR}"


@pytest.fixture
def node(netns_factory: Any) -> Netns:
    return netns_factory("n")


@pytest.fixture
def cni(node: Netns, cni_path: str) -> CniRunner:
    return CniRunner(node, cni_path)


# -- the kube tiers: their builds start first and run while the other tiers do --
KUBE_TIERS = ("tests/kube_lab/", "tests/install/test_containerd_versions.py")
_prepare: subprocess.Popen[bytes] | None = None


def _is_kube(item: pytest.Item) -> bool:
    path = str(item.path)
    return any(f"/{tier}" in path for tier in KUBE_TIERS)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """The real-cluster tiers last (their one-time Kubernetes build is the longest
    step of a fresh run), and that build started now, in the background, so that
    it overlaps everything else; the tiers' fixtures wait on the cache's lock."""
    global _prepare
    kube = [i for i in items if _is_kube(i)]
    if not kube:
        return
    items[:] = [i for i in items if not _is_kube(i)] + kube
    if _prepare is None and not os.environ.get("SKEIN_KUBE_LAB"):
        import sys

        log = open(os.path.join(config.rootpath, ".kube-prepare.log"), "ab")  # noqa: SIM115
        _prepare = subprocess.Popen(
            [sys.executable, "-m", "lab.kube.prepare",
             *(["--with-e2e"] if any("e2e" in i.nodeid for i in kube) else [])],
            cwd=config.rootpath, stdout=log, stderr=subprocess.STDOUT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _prepare is not None and _prepare.poll() is None:
        _prepare.terminate()
        _prepare.wait()
