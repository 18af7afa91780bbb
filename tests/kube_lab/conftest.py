"""The real-cluster tier: one `skein-lab kube` cluster for the whole session.

Kubernetes (built once from its Go modules, lab.kube.build), containerd and
Skein installed from install/manifests/ by kubectl; every client of a lab
address runs inside a lab namespace.  The cluster is removed at the end and the
test fails if anything of it is left.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.kube.build import ensure_kubernetes
from lab.kube.cluster import KubeLab, KubeLabError
from lab.kube.image import ensure_images


def log(line: str) -> None:
    print(line, flush=True)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeLab]:
    existing = os.environ.get("SKEIN_KUBE_LAB")
    if existing:
        # A cluster a developer keeps between runs (skein-lab kube up --workdir DIR).
        yield KubeLab(Path(existing), log=log)
        return
    workdir = Path(f"/var/tmp/skein-lab/test-{secrets.token_hex(3)}")
    bin_dir = ensure_kubernetes(log=log)
    images = ensure_images(bin_dir=bin_dir, log=log)
    lab = KubeLab(workdir, nodes=3, log=log)
    try:
        lab.up(images, bin_dir)
        yield lab
    finally:
        state = lab.state
        problems = lab.down()
        assert not problems, problems
        if state is not None:
            assert_nothing_left(state.tag, state.cgroup, workdir)


def assert_nothing_left(tag: str, cgroup: str, workdir: Path) -> None:
    """No namespace, process, mount, cgroup or file of lab `tag` remains."""
    from lab.cluster import leftovers
    from lab.kube import cgroups

    assert leftovers(tag) == []
    assert cgroups.pids(cgroup) == set()
    assert not any((h.mountpoint / cgroup.strip("/")).exists() for h in cgroups.hierarchies())
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        assert not [line for line in f if str(workdir) in line]
    assert not workdir.exists()


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except (KubeLabError, json.JSONDecodeError, KeyError, IndexError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s: {what} (last: {last!r})")


def apply(kube: KubeLab, manifest: str) -> None:
    kube.kubectl("apply", "-f", "-", input=manifest)


def running_pods(kube: KubeLab, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.kubectl_json("-n", namespace, "get", "pods", "-l",
                                                    selector)["items"]
    return [p for p in items if p["status"].get("phase") == "Running"
            and p["status"].get("podIP") and all(c.get("ready") for c in
                                                  p["status"].get("containerStatuses", []))
            and not p["metadata"].get("deletionTimestamp")]


def wait_pods(kube: KubeLab, namespace: str, selector: str, count: int,
              timeout: float = 180) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        pods = running_pods(kube, namespace, selector)
        return pods if len(pods) == count else None

    pods: list[dict[str, Any]] = wait_for(enough, timeout,
                                          f"{count} running pods {selector} in {namespace}")
    return pods


def exec_in(kube: KubeLab, namespace: str, pod: str, *argv: str,
            timeout: float = 60) -> tuple[int, str]:
    proc = kube.kubectl("-n", namespace, "exec", pod, "--", *argv, check=False,
                        timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def client_get(kube: KubeLab, url: str, timeout: float = 3.0) -> str | None:
    """GET `url` from the client namespace on the underlay; None if it fails."""
    code = ("import sys, urllib.request\n"
            f"sys.stdout.write(urllib.request.urlopen({url!r}, timeout={timeout}).read()"
            ".decode())")
    proc = kube.client_ns.run("python3", "-c", code, check=False, timeout=timeout + 10)
    return proc.stdout.strip() if proc.returncode == 0 else None
