"""skein-controller as a process in lab mode: it follows a manifests file and
writes the statuses back into it; metrics are scraped over HTTP; a restart
reads the statuses back and rewrites nothing.

Waits poll an observable (file content, a log line) against a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sysconfig
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from foundation.kube.sources.file import FileSource, parse_manifests
from tests.controller.helpers import DEADLINE, wait_until

POOL = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lab, namespace: metallb-system}
spec: {addresses: [192.168.50.1-192.168.50.2]}
"""


def service(name: str, port: int, extra: str = "") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}{extra}}}\n"
            f"spec: {{type: LoadBalancer, ports: [{{port: {port}}}]}}\n")


def write(path: Path, *docs: str) -> None:
    tmp = path.with_suffix(".edit")
    tmp.write_text("---\n".join(docs))
    os.replace(tmp, path)


def ingress(path: Path) -> dict[str, list[str]]:
    state = parse_manifests(path.read_text()).state
    return {s.key: [str(i) for i in s.ingress_ips] for s in state.services}




class Daemon:
    def __init__(self, manifests: Path, log: Path) -> None:
        self.log = log
        exe = os.path.join(sysconfig.get_path("scripts"), "skein-controller")
        self.proc = subprocess.Popen(
            [exe, "--manifests", str(manifests), "--metrics-address", "127.0.0.1:0",
             "--log-level", "DEBUG"], stdout=subprocess.DEVNULL,
            stderr=log.open("w"))

    def text(self) -> str:
        return self.log.read_text()

    def metrics_url(self) -> str:
        found = wait_until("the metrics line", lambda: re.search(
            r"metrics on (http://\S+/metrics)", self.text()))
        return str(found.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    write(path, "# the lab\n" + POOL, service("web", 80), service("dns", 53))
    return path


@pytest.fixture
def daemons(tmp_path: Path, manifests: Path) -> Iterator[Callable[[], Daemon]]:
    started: list[Daemon] = []

    def start() -> Daemon:
        daemon = Daemon(manifests, tmp_path / f"controller{len(started)}.log")
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("skein_controller_")}


def test_lab_mode_end_to_end(manifests: Path, daemons: Callable[[], Daemon]) -> None:
    ctl = daemons()
    wait_until("both services addressed", lambda: ingress(manifests) == {
        "default/dns": ["192.168.50.1"], "default/web": ["192.168.50.2"]})
    assert manifests.read_text().startswith("# the lab\n")
    url = ctl.metrics_url()
    wait_until("pool gauges", lambda: scrape(url).get(
        'skein_controller_pool_addresses_in_use{pool="lab"}') == 2)
    assert scrape(url)['skein_controller_pool_addresses_total{pool="lab"}'] == 2

    # A speaker following the same file sees the addresses.
    with FileSource(str(manifests)) as speaker_view:
        web = speaker_view.snapshot().service("default", "web")
        assert web is not None and [str(i) for i in web.ingress_ips] == ["192.168.50.2"]

    # A third service does not fit: one clear line, a failure counted, no status.
    current = manifests.read_text()
    write(manifests, current, service("extra", 8080))
    wait_until("the failure line", lambda: "Service default/extra: AllocationFailed: "
               "no available IPs in pool lab" in ctl.text())
    wait_until("the failure counter", lambda: scrape(url).get(
        "skein_controller_allocation_failures_total") == 1)
    assert ingress(manifests)["default/extra"] == []

    # dns goes away: its address is released and handed to extra.
    text = manifests.read_text()
    kept = [d for d in text.split("---\n") if "name: dns" not in d]
    write(manifests, *kept)
    wait_until("extra addressed", lambda: ingress(manifests).get("default/extra") == [
        "192.168.50.1"])
    assert ingress(manifests)["default/web"] == ["192.168.50.2"]

    # Restart: statuses are read back; nothing is rewritten.
    ctl.stop()
    assert ctl.proc.returncode == 0
    before, inode = manifests.read_text(), manifests.stat().st_ino
    again = daemons()
    wait_until("the restarted controller to read the file", lambda: "revision 1" in again.text())
    again_url = again.metrics_url()
    wait_until("pool gauges after restart", lambda: scrape(again_url).get(
        'skein_controller_pool_addresses_in_use{pool="lab"}') == 2)
    assert manifests.stat().st_ino == inode and manifests.read_text() == before


def test_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    exe = os.path.join(sysconfig.get_path("scripts"), "skein-controller")
    bad = subprocess.run([exe, "--manifests", "x", "--metrics-address", "nope"],
                         capture_output=True, text=True, timeout=DEADLINE)
    assert bad.returncode == 2 and "--metrics-address" in bad.stderr
    missing = tmp_path / "nope.kubeconfig"
    api = subprocess.run([exe, "--kubeconfig", str(missing)], capture_output=True, text=True,
                         timeout=DEADLINE)
    assert api.returncode == 2 and "cannot reach the Kubernetes API" in api.stderr
