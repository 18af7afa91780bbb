"""The suite tier: Kubernetes' own networking conformance tests pass on Skein.

`skein-lab kube up` then `skein-lab kube e2e` (the upstream e2e.test of the cluster's
version, its default focus: every [sig-network] [Conformance] test and every [sig-network]
Networking Granular Checks: Pods test, less lab/kube/e2e_skips.py) on a cluster of its own,
which is removed at the end (also on failure).  Any failed test fails the tier.  The fast
tests before it check what that run rests on: the focus, the skip list (each name one of the
suite's tests, the README's list the same), the image names, the JUnit summary, the CoreDNS
add-on.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.kube import e2e
from lab.kube.build import ensure_e2e
from lab.kube.cluster import CLUSTER_DNS, KubeLab
from lab.kube.coredns import kubernetes_module, manifest
from lab.kube.e2e_skips import SKIPS, active
from lab.kube.image import (
    AGNHOST_IMAGE,
    COREDNS_IMAGE,
    E2E_BUSYBOX_IMAGE,
    JESSIE_DNSUTILS_IMAGE,
    NGINX_IMAGE,
)

REPO = Path(__file__).resolve().parents[2]
# "    k8s.io/kubernetes@v1.34.4/test/e2e/network/dns.go:54: [sig-network] DNS should ..."
LISTED = re.compile(r"^\s*\S+\.go:\d+: (?P<name>.+)$")


def log(line: str) -> None:
    print(line, flush=True)


@pytest.fixture(scope="module")
def e2e_bin() -> Path:
    return ensure_e2e(log=log)


@pytest.fixture(scope="module")
def suite_tests(e2e_bin: Path) -> list[str]:
    out = subprocess.run([str(e2e_bin / "e2e.test"), "-list-tests"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    names = [m.group("name") for line in out.splitlines() if (m := LISTED.match(line))]
    assert len(names) > 1000, out[-2000:]
    return names


def focused(names: list[str]) -> list[str]:
    return [n for n in names if re.search(e2e.DEFAULT_FOCUS, n)]


def test_default_focus_is_networking_conformance_and_granular_pod_checks(
        suite_tests: list[str]) -> None:
    chosen = set(focused(suite_tests))
    conformance = {n for n in suite_tests if "[sig-network]" in n and "[Conformance]" in n}
    granular = {n for n in suite_tests
                if n.startswith("[sig-network] Networking Granular Checks: Pods ")}
    assert chosen == conformance | granular
    assert len(conformance) == 45 and len(granular) == 6 and len(chosen) == 47


def test_every_skip_is_a_focused_suite_test_with_a_reason(suite_tests: list[str]) -> None:
    chosen = focused(suite_tests)
    for skip in SKIPS:
        assert skip.name in chosen, skip.name
        assert len(skip.reason) > 40, skip
        # The regex e2e.test gets matches this test and no other one of the suite.
        regex = e2e.skip_regex([skip])
        assert [n for n in suite_tests if re.search(regex, n)] == [skip.name]
    assert len({s.name for s in SKIPS}) == len(SKIPS)


def test_go_quote_matches_literally() -> None:
    name = "a.b [c] (d) e+f? g|h {i} ^j$ k*l\\m"
    quoted = e2e.go_quote(name)
    assert re.fullmatch(quoted, name)
    assert not re.fullmatch(quoted, name.replace(".", "x"))
    assert e2e.skip_regex([], "Slow") == "(?:Slow)"


def readme_conformance() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Conformance\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_states_the_skip_list() -> None:
    section = " ".join(readme_conformance().split())
    for skip in SKIPS:
        assert skip.name in section, skip.name
        assert " ".join(skip.reason.split()) in section, skip.reason


def test_images_are_named_as_the_suite_and_the_addon_ask(e2e_bin: Path) -> None:
    out = subprocess.run([str(e2e_bin / "e2e.test"), "-list-images"], capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    for name in (AGNHOST_IMAGE, JESSIE_DNSUTILS_IMAGE, NGINX_IMAGE, E2E_BUSYBOX_IMAGE):
        assert name in out, name
    assert f"image: {COREDNS_IMAGE}\n" in manifest(kubernetes_module(log))


def test_coredns_is_upstreams_addon_at_the_kubelets_cluster_dns() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in yaml.safe_load_all(manifest(kubernetes_module(log))) if d}
    service = docs[("Service", "kube-dns")]
    assert service["metadata"]["namespace"] == "kube-system"
    assert service["spec"]["clusterIP"] == CLUSTER_DNS
    assert {p["port"] for p in service["spec"]["ports"]} == {53, 9153}
    corefile = docs[("ConfigMap", "coredns")]["data"]["Corefile"]
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in corefile
    assert "forward . /etc/resolv.conf" in corefile and "loop" in corefile
    deployment = docs[("Deployment", "coredns")]
    assert deployment["spec"]["template"]["spec"]["dnsPolicy"] == "Default"
    assert ("ClusterRoleBinding", "system:coredns") in docs


JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="6" disabled="2" errors="0" failures="1" time="754.5">
  <testsuite name="Kubernetes e2e suite" tests="6" skipped="3" failures="1" time="754.5">
    <testcase name="[SynchronizedBeforeSuite]" status="passed" time="0.1"></testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for the cluster [Conformance]"
              status="passed" time="2.1"></testcase>
    <testcase name="[It] {failed}" status="failed" time="300.0">
      <failure type="failed">[FAILED] Timed out after 300.001s.
more</failure>
    </testcase>
    <testcase name="[It] {skipped}" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] {self_skipped}" status="skipped" time="0.1">
      <skipped message="skipped - Skipping SCTP node to pod test"></skipped>
    </testcase>
    <testcase name="[It] [sig-storage] out of focus" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
  </testsuite>
</testsuites>
"""


def test_junit_summary_counts_and_names_failures(tmp_path: Path) -> None:
    path = tmp_path / "junit_01.xml"
    skip = SKIPS[0]
    path.write_text(JUNIT.format(
        failed="[sig-network] Services should serve a basic endpoint from pods [Conformance]",
        skipped=skip.name, self_skipped=SKIPS[1].name), encoding="utf-8")
    summary = e2e.parse_junit(path, SKIPS)
    assert [c.title for c in summary.passed] == [
        "[sig-network] DNS should provide DNS for the cluster [Conformance]"]
    assert len(summary.failed) == 1 and not summary.ok
    assert summary.skipped_by_list == [skip]
    assert [c.title for c in summary.skipped_at_run_time] == [SKIPS[1].name]
    text = e2e.format_summary(summary)
    assert text.startswith("e2e: 1 passed, 1 failed, 2 skipped in 12.6 min")
    assert "Services should serve a basic endpoint" in text
    assert "Timed out after 300.001s." in text and skip.reason in text


def test_verbose_headers_lose_the_label_list() -> None:
    assert e2e.strip_labels("[sig-network] DNS should x [Conformance] "
                            "[sig-network, Conformance]") == \
        "[sig-network] DNS should x [Conformance]"
    assert e2e.strip_labels("[sig-network] a [b]") == "[sig-network] a [b]"


# --------------------------------------------------------------------------- the suite tier


def skein_lab(*args: str, timeout: float) -> tuple[int, str]:
    """`skein-lab ARGS` as a user runs it; its output echoed as it comes."""
    proc = subprocess.Popen([sys.executable, "-m", "lab.main", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            log(line.rstrip("\n"))
        code = proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return code, "".join(lines)


@pytest.mark.timeout(3600)
def test_networking_conformance_passes_on_skein(suite_tests: list[str]) -> None:
    workdir = Path(f"/var/tmp/skein-lab/e2e-{secrets.token_hex(3)}")
    report = workdir.with_name(workdir.name + "-report")
    tag = None
    passed = False
    try:
        code, out = skein_lab("kube", "up", "--workdir", str(workdir), timeout=1800)
        state = KubeLab(workdir).state
        tag = state.tag if state else None
        assert code == 0, out[-3000:]
        code, out = skein_lab("kube", "e2e", "--workdir", str(workdir), "--report-dir",
                              str(report), timeout=3000)
        summary = e2e.parse_junit(report / e2e.JUNIT, active())
        failures = "\n".join(f"{c.title}: {e2e.first_line(c.message)}" for c in summary.failed)
        assert code == 0 and not summary.failed, failures or out[-3000:]
        skipped = {s.name for s in active()} | {c.title for c in summary.skipped_at_run_time}
        expected = set(focused(suite_tests)) - skipped
        assert {c.title for c in summary.passed} == expected
        assert "DNS should provide DNS for services [Conformance]" in out
        # Every image was on the nodes already: no node's containerd was asked to pull.
        for node in KubeLab(workdir).node_specs():
            logged = (node.workdir / "log" / "containerd.log").read_text(errors="replace")
            assert "PullImage" not in logged, (node.name, [
                line for line in logged.splitlines() if "PullImage" in line][:5])
        passed = True
    finally:
        lab = KubeLab(workdir, log=log)
        problems = lab.down() if lab.state is not None else []
        if passed:
            subprocess.run(["rm", "-rf", str(report)], check=False)
        else:
            log(f"e2e.log and junit_01.xml kept in {report}")
        assert not problems, problems
        if tag:
            from lab.cluster import leftovers

            assert leftovers(tag) == []
