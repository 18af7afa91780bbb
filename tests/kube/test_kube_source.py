"""KubeSource with the official client against the API-server STAND-IN
(tests/kube/apiserver.py): list, watch from the list's resourceVersion with
bookmarks, resume after a server timeout, re-list on 410 Gone (event and HTTP),
back-off on errors, missing CRDs, bad objects, paging; then the controller in
API mode as a process.

Waits poll an observable (the snapshot, the stand-in's request log, a log line)
against a deadline; nothing asserts on durations.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from foundation.kube.model import ClusterState
from foundation.kube.sources.kube import CONTROLLER_KINDS, KubeClient, KubeSource
from foundation.sequences import identity_delta
from tests.controller.helpers import DEADLINE, wait_until
from tests.kube import apiserver
from tests.kube.apiserver import FakeApiServer

LOGGER = "foundation.kube.sources.kube"


def service(name: str, port: Any = 80, namespace: str = "default", **extra: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, **extra},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port}]}}


def pool(name: str, cidr: str) -> dict:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": [cidr]}}




def service_names(state: ClusterState) -> list[str]:
    return [s.key for s in state.services]


@pytest.fixture(params=["event", "http"])
def api(request: pytest.FixtureRequest) -> Iterator[FakeApiServer]:
    server = FakeApiServer(gone_as=request.param).start()
    server.put(pool("lab", "192.168.50.0/29"))
    server.put(service("web"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(api: FakeApiServer, tmp_path: Path) -> Iterator[KubeClient]:
    c = KubeClient.from_kubeconfig(str(api.kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def source_factory(client: KubeClient, caplog: pytest.LogCaptureFixture
                   ) -> Iterator[Callable[..., KubeSource]]:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    made: list[KubeSource] = []

    def make(**kwargs: Any) -> KubeSource:
        options: dict[str, Any] = {"kinds": CONTROLLER_KINDS, "backoff_initial": 0.05,
                                   "backoff_max": 0.2, "coalesce": 0.01, **kwargs}
        src = KubeSource(client, **options)
        made.append(src)
        src.start()
        return src

    try:
        yield make
    finally:
        for src in made:
            src.close()


def logged(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


def test_list_then_watch_events(api: FakeApiServer, source_factory: Callable[..., KubeSource]
                                ) -> None:
    src = source_factory()
    # start() listed synchronously: the snapshot is useful at once.
    first = src.snapshot()
    assert src.synced and service_names(first) == ["default/web"]
    assert [p.name for p in first.ip_address_pools] == ["lab"]
    # The pool list was namespaced to MetalLB's namespace.
    assert any(r.path == "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools"
               for r in api.requests())
    watch = wait_until("a service watch", lambda: [
        r for r in api.requests(watch=True) if r.path == "/api/v1/services"])[0]
    list_rv = [r for r in api.requests(watch=False) if r.path == "/api/v1/services"]
    assert watch.query["allowWatchBookmarks"] == "true" and list_rv
    assert int(watch.query["resourceVersion"]) >= 102  # the list's, not "" or 0

    api.put(service("db", 5432))
    wait_until("ADDED", lambda: service_names(src.snapshot()) == ["default/db", "default/web"])
    api.put(service("db", 5433))
    wait_until("MODIFIED", lambda: [p.port for s in src.snapshot().services
                                    if s.name == "db" for p in s.ports] == [5433])
    api.delete("v1", "Service", "default", "db")
    wait_until("DELETED", lambda: service_names(src.snapshot()) == ["default/web"])
    assert len(api.requests(watch=False)) == 3  # one list per kind: no re-list was needed


def test_resume_from_bookmark_after_server_timeout(
        api: FakeApiServer, source_factory: Callable[..., KubeSource]) -> None:
    source_factory()
    wait_until("watches", lambda: len(api.requests(watch=True)) == 3)
    api.put(pool("other", "10.9.0.0/30"))  # moves the resourceVersion past the services
    rv = api.state.rv
    api.bookmark()
    wait_until("the bookmark sent", lambda: ("", "v1", "services") in api.state.bookmarks_sent)
    api.end_watches()  # as a server's timeoutSeconds does
    resumed = wait_until("resumed service watch", lambda: [
        r for r in api.requests(watch=True)[3:] if r.path == "/api/v1/services"])
    assert resumed[0].query["resourceVersion"] == str(rv)
    assert len(api.requests(watch=False)) == 3  # resumed, not re-listed


def test_410_gone_relists(api: FakeApiServer, source_factory: Callable[..., KubeSource],
                          caplog: pytest.LogCaptureFixture) -> None:
    src = source_factory()
    wait_until("watches", lambda: len(api.requests(watch=True)) == 3)
    api.put(service("gone-soon"))
    wait_until("gone-soon", lambda: "default/gone-soon" in service_names(src.snapshot()))
    # History is compacted and the watches end: the resume point is too old, and
    # a change made meanwhile (the delete) is only visible to a fresh list.
    api.delete("v1", "Service", "default", "gone-soon")
    api.put(service("new"))
    api.compact()
    wait_until("the re-listed state", lambda: service_names(src.snapshot()) == [
        "default/new", "default/web"])
    assert logged(caplog, "is gone (410); listing again")
    assert len([r for r in api.requests(watch=False) if r.path == "/api/v1/services"]) >= 2


def test_errors_back_off_and_recover(api: FakeApiServer,
                                     source_factory: Callable[..., KubeSource],
                                     caplog: pytest.LogCaptureFixture) -> None:
    src = source_factory()
    wait_until("watches", lambda: len(api.requests(watch=True)) == 3)
    api.fail(4, status=500)
    api.end_watches()
    api.put(service("after-outage"))
    wait_until("recovery", lambda: "default/after-outage" in service_names(src.snapshot()))
    lines = logged(caplog, "retrying in")
    assert lines and all("HTTP 500" in line and "\n" not in line for line in lines)


def test_api_down_at_start_then_up(client: KubeClient, api: FakeApiServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    api.fail(3, status=503)  # the first lists fail
    src = KubeSource(client, CONTROLLER_KINDS, backoff_initial=0.05, backoff_max=0.2,
                     coalesce=0.01)
    src.start()
    try:
        assert logged(caplog, "list failed: HTTP 503")
        assert src.wait_synced(DEADLINE)
        # Synced means the snapshot holds every kind: a controller acting now must
        # not see Services without their pools.
        state = src.snapshot()
        assert service_names(state) == ["default/web"]
        assert [p.name for p in state.ip_address_pools] == ["lab"]
    finally:
        src.close()


def test_missing_crd_is_empty_and_logged_once(api: FakeApiServer,
                                              source_factory: Callable[..., KubeSource],
                                              caplog: pytest.LogCaptureFixture) -> None:
    src = source_factory(kinds=(*CONTROLLER_KINDS, ("metallb.io", "Community"),
                                ("metallb.io", "BGPPeer")))
    assert src.synced
    wait_until("a second look for the CRD", lambda: len(
        [r for r in api.requests() if r.path.endswith("/communities")]) >= 3)
    assert len(logged(caplog, "communities.metallb.io: not served by the API")) == 1
    # BGPPeer: v1beta2 then v1beta1 were tried.
    tried = {r.path.split("/")[3] for r in api.requests() if r.path.endswith("/bgppeers")}
    assert tried == {"v1beta1", "v1beta2"}
    assert [p.name for p in src.snapshot().ip_address_pools] == ["lab"]


def test_bad_object_is_one_line_and_skipped(api: FakeApiServer,
                                            source_factory: Callable[..., KubeSource],
                                            caplog: pytest.LogCaptureFixture) -> None:
    api.put(service("bad", port="http"))
    src = source_factory()
    assert service_names(src.snapshot()) == ["default/web"]
    lines = logged(caplog, "skipped Service default/bad")
    assert lines == ["skipped Service default/bad: spec.ports[0].port: expected an integer "
                     "1-65535, got \"http\""]
    api.put(service("bad", port=8080))  # fixed by a MODIFIED event
    wait_until("the fixed service", lambda: "default/bad" in service_names(src.snapshot()))


def test_paged_list(api: FakeApiServer, source_factory: Callable[..., KubeSource]) -> None:
    for i in range(5):
        api.put(service(f"s{i}"))
    src = source_factory(page_size=2)
    assert len(src.snapshot().services) == 6
    assert any("continue" in r.query for r in api.requests(watch=False))


def test_close_stops_every_thread(api: FakeApiServer,
                                  source_factory: Callable[..., KubeSource]) -> None:
    src = source_factory()
    wait_until("watches", lambda: len(api.requests(watch=True)) == 3)
    threads = list(src._threads)
    src.close()
    assert threads and not any(t.is_alive() for t in threads)


def test_patch_status_and_event(api: FakeApiServer, client: KubeClient) -> None:
    import ipaddress

    client.patch_service_status("default", "web", [ipaddress.ip_address("192.168.50.1")])
    assert api.get("v1", "Service", "default", "web")["status"] == {
        "loadBalancer": {"ingress": [{"ip": "192.168.50.1"}]}}
    client.patch_service_status("default", "web", [])
    assert api.get("v1", "Service", "default", "web")["status"] == {"loadBalancer": {}}
    client.create_event("default", "web", "AllocationFailed", "no luck", "skein-controller")
    event = api.state.events[0]
    assert event["involvedObject"]["name"] == "web" and event["type"] == "Warning"


# -- the controller in API mode, as a process ---------------------------------------


def test_controller_against_the_api(api: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    api.put(service("db", 5432))
    api.put(service("tiny", 1, annotations={"metallb.universe.tf/address-pool": "nope"}))
    exe = os.path.join(sysconfig.get_path("scripts"), "skein-controller")
    log = tmp_path / "controller.log"

    def run() -> subprocess.Popen[bytes]:
        return subprocess.Popen([exe, "--kubeconfig", str(kubeconfig)],
                                stdout=subprocess.DEVNULL, stderr=log.open("a"))

    def ingress(name: str) -> list[str]:
        status = api.get("v1", "Service", "default", name).get("status") or {}
        return [i["ip"] for i in status.get("loadBalancer", {}).get("ingress", [])]

    proc = run()
    try:
        wait_until("statuses", lambda: ingress("db") == ["192.168.50.0"]
                   and ingress("web") == ["192.168.50.1"])
        event = wait_until("the failure event", lambda: api.state.events)[0]
        assert event["reason"] == "AllocationFailed"
        assert event["message"] == "pool nope does not exist"
        assert "Service default/tiny: AllocationFailed: pool nope does not exist" in \
            log.read_text()
        api.delete("v1", "Service", "default", "db")
        api.put(service("late", 443))
        wait_until("the released address reused", lambda: ingress("late") == ["192.168.50.0"])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
    # Restart: rebuilt from statuses, nothing re-patched.
    patches = len(api.state.patches)
    proc = run()
    try:
        wait_until("the restarted controller's watches", lambda: len(
            api.requests(watch=True)) >= 6)
        wait_until("a reconcile after restart", lambda: log.read_text().count(
            "revision 1:") == 2)
        api.put(service("later", 8443))
        wait_until("later addressed", lambda: ingress("later") == ["192.168.50.2"])
        assert [p[1] for p in api.state.patches[patches:]] == ["later"]
        # MetalLB's annotation naming the pool, on the Service itself.
        wait_until("the pool annotation", lambda: api.get(
            "v1", "Service", "default", "later")["metadata"].get(
            "annotations", {}).get("metallb.io/ip-allocated-from-pool") is not None)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0


def secret(name: str, namespace: str, password: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": {"password": password}}


def test_secrets_are_read_where_the_bgppeers_are_only(
        api: FakeApiServer, source_factory: Callable[..., KubeSource],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The stand-in serves the kinds of its table: Secrets are one more.
    monkeypatch.setitem(apiserver.SERVED, ("", "v1", "secrets"), "Secret")
    api.state.served[("", "v1", "secrets")] = "Secret"
    api.put(secret("bgp", "metallb-system", "one"))
    api.put(secret("other", "kube-system", "never"))
    src = source_factory(kinds=(*CONTROLLER_KINDS, ("", "Secret")),
                         metallb_namespace="metallb-system", own_namespace="skein-system")
    assert [(s.namespace, s.name) for s in src.snapshot().secrets] == [("metallb-system", "bgp")]
    assert {r.path for r in api.requests() if "secrets" in r.path} == {
        "/api/v1/namespaces/metallb-system/secrets"}
    api.put(secret("bgp", "metallb-system", "two"))
    wait_until("the changed password", lambda: [
        s.password for s in src.snapshot().secrets] == ["two"])


def test_a_change_replaces_only_the_objects_it_names(
        api: FakeApiServer, source_factory: Callable[..., KubeSource]) -> None:
    for i in range(20):
        api.put(service(f"s{i:02}", 80 + i))
    src = source_factory()
    before = src.snapshot()
    published = [before]
    src.subscribe(published.append)
    assert len(before.services) == 21
    api.put(service("s07", 9999))
    api.delete("v1", "Service", "default", "s11")
    api.put(service("new", 1))
    after = wait_until("the three changes", lambda: (
        lambda s: s if len(s.services) == 21 and s.service("default", "new") else None)(
            src.snapshot()))
    assert service_names(after) == sorted(service_names(after))  # ClusterState's order
    old = {s.key: s for s in before.services}
    replaced = [s.key for s in after.services if old.get(s.key) is not s]
    assert replaced == ["default/new", "default/s07"]
    assert after.ip_address_pools is before.ip_address_pools  # an unchanged kind: same tuple
    assert after == ClusterState.from_objects([*after.services, *after.ip_address_pools])
    # Each state published records the Services that came and went since the one
    # before it: what comparing the two would find.
    changed = [(a, b) for a, b in itertools.pairwise(published) if b.services is not a.services]
    assert changed
    for earlier, later in changed:
        changes = later.service_changes
        assert changes is not None and changes.before is earlier.services
        expected = identity_delta(earlier.services, later.services)
        assert sorted(map(id, changes.came)) == sorted(map(id, expected[0]))
        assert sorted(map(id, changes.went)) == sorted(map(id, expected[1]))


def test_refused_objects_are_listed_until_fixed_or_deleted(
        api: FakeApiServer, source_factory: Callable[..., KubeSource]) -> None:
    bad = pool("bad", "not-an-address")
    api.put(bad)
    src = source_factory()
    wait_until("the refusal", lambda: len(src.refusals()) == 1)
    (line,) = src.refusals()
    assert line.startswith("IPAddressPool metallb-system/bad: spec.addresses"), line
    api.put(pool("bad", "192.168.60.0/28"))
    wait_until("the fixed pool", lambda: src.refusals() == () and any(
        p.name == "bad" for p in src.snapshot().ip_address_pools))
    api.put(bad)
    wait_until("refused again", lambda: len(src.refusals()) == 1)
    api.delete("metallb.io/v1beta1", "IPAddressPool", "metallb-system", "bad")
    wait_until("forgotten with the object", lambda: src.refusals() == ())
