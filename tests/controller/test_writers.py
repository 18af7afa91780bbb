"""Statuses written into a manifests file: only changed Service documents are
re-serialised, everything else is kept byte for byte; the write is atomic."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.sources.file import parse_manifests
from speaker.controller.reconcile import StatusChange
from speaker.controller.writers import (
    _SEPARATOR,
    ManifestsWriter,
    _cuts,
    _occurrences,
    apply_statuses,
)

TEXT = """\
# a comment at the top, kept
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lab, namespace: metallb-system}   # flow style, kept
spec: {addresses: [192.168.50.0/28]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: LoadBalancer, ports: [{port: 80}]}
--- # a commented separator
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: infra}
spec: {type: LoadBalancer, ports: [{port: 53, protocol: UDP}]}
status: {loadBalancer: {ingress: [{ip: 192.168.50.9}]}}
---
apiVersion: v1
kind: ServiceList
apiVersion: v1
items:
- metadata: {name: listed}
  spec: {type: LoadBalancer, ports: [{port: 8080}]}
...
"""


def change(ns: str, name: str, *ips: str) -> StatusChange:
    return StatusChange(ns, name, tuple(ipaddress.ip_address(i) for i in ips))


def ingress_of(text: str) -> dict[str, list[str]]:
    state = parse_manifests(text).state
    return {s.key: [str(i) for i in s.ingress_ips] for s in state.services}


def test_only_changed_services_are_rewritten() -> None:
    out = apply_statuses(TEXT, [change("default", "web", "192.168.50.1"),
                                change("infra", "dns"),
                                change("default", "listed", "192.168.50.2")])
    assert ingress_of(out) == {"default/web": ["192.168.50.1"], "infra/dns": [],
                               "default/listed": ["192.168.50.2"]}
    first = TEXT.split("---")[0]
    assert out.startswith(first)  # the untouched pool document, comments and all
    docs = list(yaml.safe_load_all(out))
    assert docs[1]["spec"] == {"type": "LoadBalancer", "ports": [{"port": 80}]}
    assert list(docs[1]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert docs[2]["status"] == {"loadBalancer": {}}


def test_no_change_is_the_same_text() -> None:
    same = apply_statuses(TEXT, [change("infra", "dns", "192.168.50.9"),
                                 change("default", "absent", "192.168.50.3")])
    assert same == TEXT


def test_writer_replaces_the_file_atomically_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(TEXT)
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    writer = ManifestsWriter(str(path))
    assert writer.write([change("default", "web", "192.168.50.1")])
    assert path.stat().st_ino != inode  # renamed into place, not written in place
    assert path.stat().st_mode & 0o777 == 0o640
    assert ingress_of(path.read_text())["default/web"] == ["192.168.50.1"]
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.yaml"]
    inode = path.stat().st_ino
    assert writer.write([change("default", "web", "192.168.50.1")])
    assert path.stat().st_ino == inode  # nothing changed: not rewritten


def test_writer_reports_a_missing_file(tmp_path: Path) -> None:
    assert not ManifestsWriter(str(tmp_path / "nope.yaml")).write([change("default", "web")])


def test_pool_annotation_is_written_and_removed() -> None:
    named = StatusChange("default", "web", (ipaddress.ip_address("192.168.50.1"),), "lab")
    out = apply_statuses(TEXT, [named])
    state = parse_manifests(out).state
    web = state.service("default", "web")
    assert web is not None and web.annotations == {"metallb.io/ip-allocated-from-pool": "lab"}
    assert apply_statuses(out, [named]) == out
    # Withdrawn: the annotation goes with the address, and an empty map is not left behind.
    cleared = apply_statuses(out, [StatusChange("default", "web", ())])
    assert "annotations" not in list(yaml.safe_load_all(cleared))[1]["metadata"]


def test_one_change_in_a_large_file_touches_one_document() -> None:
    services = "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"
                       f"spec: {{type: LoadBalancer}}  # s{i} as written\n"
                       for i in range(2000))
    out = apply_statuses(services, [change("default", "s1234", "10.0.4.210")])
    before, after = services.split("---\n"), out.split("---\n")
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [1235]
    assert ingress_of(out)["default/s1234"] == ["10.0.4.210"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["---", "--- x", "----", "...", "... ", "...x", " ---", "a: b",
                                 "- c", "", "name: web", "web2"]), max_size=12),
       st.booleans())
def test_separators_found_by_find_are_the_regex_ones(lines: list[str], end: bool) -> None:
    text = "\n".join(lines) + ("\n" if end else "")
    assert _cuts(text) == [m.start() for m in _SEPARATOR.finditer(text)]


def test_names_are_found_whole() -> None:
    text = "name: web\n---\nname: web2\n---\n{name: web}\n---\nname: a.web\n"
    assert _occurrences(text, "web") == [6, 36]  # not in web2, not in a.web


class _Api:
    """The two requests KubeWriter makes, from several threads; one Service's status
    patch is refused, another Service is gone (404)."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        self.threads: set[int] = set()

    def _call(self, what: str, name: str) -> None:
        import threading
        import time

        from kubernetes.client.exceptions import ApiException

        with self.lock:
            self.calls.append((what, name))
            self.threads.add(threading.get_ident())
        time.sleep(0.01)  # a request's round trip: the others run meanwhile
        if name == "refused":
            raise ApiException(status=500, reason="Internal Server Error")
        if name == "gone":
            raise ApiException(status=404, reason="Not Found")

    def patch_service_status(self, namespace: str, name: str, ingress: object) -> None:
        self._call("status", name)

    def patch_service_annotations(self, namespace: str, name: str, annotations: object) -> None:
        self._call("annotation", name)


def test_the_api_writer_writes_a_batch_several_services_at_a_time() -> None:
    from speaker.controller.writers import KubeWriter

    api = _Api()
    writer = KubeWriter(api)  # type: ignore[arg-type]
    ip = ipaddress.ip_address("192.0.2.1")
    names = [f"s{i}" for i in range(40)]
    assert writer.write([StatusChange("d", n, [ip], "p") for n in names])
    assert len(api.threads) > 1
    for n in names:  # every Service both, its status first
        assert [w for w, name in api.calls if name == n] == ["status", "annotation"]
    # A refusal makes the batch fail (to be tried again); a Service gone does not.
    assert not writer.write([StatusChange("d", n, [ip], "p") for n in ("a", "refused", "b")])
    assert writer.write([StatusChange("d", n, [ip], "p") for n in ("gone", "c")])
    assert ("annotation", "b") in api.calls and ("annotation", "refused") not in api.calls
