"""`skein-lab kube e2e`: Kubernetes' own end-to-end suite against the kube lab.

    skein-lab kube e2e [--workdir DIR] [--focus REGEX] [--skip REGEX]

Against the cluster that `skein-lab kube up --workdir DIR` started:

1. lab.kube.build.ensure_e2e: e2e.test (k8s.io/kubernetes/test/e2e at the cluster's
   version), agnhost and coredns, built from their Go modules (cached);
2. lab.kube.image.ensure_e2e_images: the images the focused tests run, under the exact
   names e2e.test asks for (test/utils/image/manifest.go), imported into every node's
   containerd (skipped where the node already holds the same manifest): nothing is pulled;
3. lab.kube.coredns.ensure: the cluster's DNS (a no-op when `up` deployed it);
4. e2e.test inside the control plane's namespace (every packet stays in the lab), with
   `--ginkgo.focus` (by default every `[sig-network]` `[Conformance]` test and every
   `[sig-network] Networking Granular Checks: Pods` test) and `--ginkgo.skip` made of the
   names in lab.kube.e2e_skips (each with its reason) and the caller's --skip;
5. the JUnit report's summary: passed, failed, skipped (with reasons), the failures' names.

Everything e2e.test writes goes to WORKDIR/e2e/ (or --report-dir): e2e.log (the whole verbose
output), junit_01.xml.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.kube import coredns
from lab.kube.cluster import KubeLab, KubeLabError
from lab.kube.e2e_skips import Skip, active
from lab.kube.node import CONTAINERD_SOCKET, NodeSpec

DEFAULT_FOCUS = (r"\[sig-network\].*\[Conformance\]"
                 r"|\[sig-network\] Networking Granular Checks: Pods")
DEFAULT_TIMEOUT = "60m"
JUNIT = "junit_01.xml"
# Characters with a meaning in Go's RE2 syntax (regexp/syntax), escaped to match literally.
_GO_META = set("\\.+*?()|[]{}^$")

Log = Callable[[str], None]


def go_quote(text: str) -> str:
    """`text` as a Go regular expression matching exactly it (regexp.QuoteMeta)."""
    return "".join("\\" + c if c in _GO_META else c for c in text)


def skip_regex(skips: Sequence[Skip], extra: str | None = None) -> str:
    """--ginkgo.skip: each skipped test by its whole name, and the caller's own regex.

    A name is anchored at its end only: ginkgo matches the regex against the spec's full
    text, which does not start where `e2e.test -list-tests`'s names start."""
    parts = [f"{go_quote(s.name)}$" for s in skips]
    if extra:
        parts.append(f"(?:{extra})")
    return "|".join(parts)


def focused(focus: str, name: str) -> bool:
    """Whether the focus selects `name` (Python's re reads the default focus as RE2 does;
    a regex it cannot read counts as selecting)."""
    try:
        return re.search(focus, name) is not None
    except re.error:
        return True


# --------------------------------------------------------------------------- the report


@dataclass
class Case:
    name: str
    status: str          # passed, failed, skipped, ...
    seconds: float
    message: str = ""

    @property
    def spec(self) -> bool:
        """An It (a test), not one of the suite's own nodes ([SynchronizedBeforeSuite]...)."""
        return self.name.startswith("[It] ")

    @property
    def title(self) -> str:
        return self.name.removeprefix("[It] ")


@dataclass
class Summary:
    cases: list[Case] = field(default_factory=list)
    seconds: float = 0.0
    focus: str = DEFAULT_FOCUS
    skips: list[Skip] = field(default_factory=list)

    @property
    def passed(self) -> list[Case]:
        return [c for c in self.cases if c.spec and c.status == "passed"]

    @property
    def failed(self) -> list[Case]:
        """Failed tests, and failed suite nodes (a BeforeSuite that failed fails them all)."""
        return [c for c in self.cases if c.status not in ("passed", "skipped")]

    @property
    def skipped_by_list(self) -> list[Skip]:
        """The skip list's tests that the focus selects and that did not run."""
        names = {c.title for c in self.cases if c.spec and c.status == "skipped"
                 and not c.message.startswith("skipped - ")}
        return [s for s in self.skips if s.name in names and focused(self.focus, s.name)]

    @property
    def skipped_at_run_time(self) -> list[Case]:
        """Tests that ran and skipped themselves (e2eskipper, ginkgo.Skip: "skipped - why").
        The specs the focus or the skip list left out are "skipped" with no reason."""
        return [c for c in self.cases if c.spec and c.status == "skipped"
                and c.message.startswith("skipped - ")]

    @property
    def ok(self) -> bool:
        return not self.failed and bool(self.passed)


def parse_junit(path: Path, skips: Sequence[Skip] = (), focus: str = DEFAULT_FOCUS) -> Summary:
    """The JUnit report e2e.test writes into --report-dir."""
    root = ET.parse(path).getroot()
    summary = Summary(seconds=float(root.get("time") or 0), focus=focus, skips=list(skips))
    for case in root.iter("testcase"):
        status = case.get("status") or "passed"
        message = ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                message = element.get("message") or (element.text or "").strip()
                if tag in ("failure", "error") and status == "passed":
                    status = "failed"
                elif tag == "skipped" and status == "passed":
                    status = "skipped"
        summary.cases.append(Case(case.get("name") or "", status,
                                  float(case.get("time") or 0), message))
    return summary


def first_line(text: str, limit: int = 300) -> str:
    """The first line of a failure that says something ("[FAILED]" alone does not)."""
    for line in text.splitlines():
        line = line.strip().removeprefix("[FAILED]").strip()
        if line:
            return line if len(line) <= limit else line[:limit] + "..."
    return ""


def format_summary(summary: Summary) -> str:
    out = [f"e2e: {len(summary.passed)} passed, {len(summary.failed)} failed, "
           f"{len(summary.skipped_by_list) + len(summary.skipped_at_run_time)} skipped "
           f"in {summary.seconds / 60:.1f} min"]
    if summary.failed:
        out.append("failed:")
        for c in summary.failed:
            reason = first_line(c.message)
            out.append(f"  - {c.title}" + (f"\n      {reason}" if reason else ""))
    if summary.skipped_by_list or summary.skipped_at_run_time:
        out.append("skipped:")
        for s in summary.skipped_by_list:
            out.append(f"  - {s.name}\n      (lab/kube/e2e_skips.py) {s.reason}")
        for c in summary.skipped_at_run_time:
            out.append(f"  - {c.title}\n      (by the test itself) "
                       f"{c.message.removeprefix('skipped - ')}")
    return "\n".join(out)


# --------------------------------------------------------------------------- images on nodes


def archive_digest(archive: Path) -> str:
    """The manifest digest of a one-image OCI archive (what containerd records as the
    image's target after `ctr images import`)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise KubeLabError(f"{archive}: no index.json (not an OCI archive)")
        index = json.load(member)
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise KubeLabError(f"{archive}: {len(manifests)} images, expected one")
    return str(manifests[0]["digest"])


def _ctr(*args: str) -> list[str]:
    return ["ctr", "--address", CONTAINERD_SOCKET, "-n", "k8s.io", *args]


def node_images(lab: KubeLab, node: NodeSpec) -> dict[str, str]:
    """Image name -> target digest in the node's containerd."""
    proc = lab.in_node(node, *_ctr("images", "ls"))
    if proc.returncode != 0:
        raise KubeLabError(f"{node.name}: ctr images ls: {proc.stderr.strip()}")
    out = {}
    for line in proc.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            out[fields[0]] = fields[2]
    return out


def import_images(lab: KubeLab, images: Mapping[str, Path], log: Log = print) -> None:
    """Every image into every node's containerd, unless the node holds that manifest."""
    digests = {name: archive_digest(archive) for name, archive in images.items()}
    errors: list[str] = []

    def one(node: NodeSpec) -> None:
        try:
            have = node_images(lab, node)
            missing = [n for n in images if have.get(n) != digests[n]]
            for name in missing:
                start = time.monotonic()
                proc = lab.in_node(node, *_ctr("images", "import", str(images[name])),
                                   timeout=900)
                if proc.returncode != 0:
                    errors.append(f"{node.name}: ctr images import {images[name]}: "
                                  f"{proc.stderr.strip()}")
                    return
                log(f"{node.name}: imported {name} ({time.monotonic() - start:.0f} s)")
            have = node_images(lab, node)
            wrong = [n for n in images if have.get(n) != digests[n]]
            if wrong:
                errors.append(f"{node.name}: after import, not there: {', '.join(wrong)}")
        except (KubeLabError, OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{node.name}: {exc}")

    threads = [threading.Thread(target=one, args=(n,)) for n in lab.node_specs()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise KubeLabError("; ".join(errors))


# --------------------------------------------------------------------------- running it


def e2e_argv(lab: KubeLab, e2e_test: Path, focus: str, skip: str, report_dir: Path,
             timeout: str = DEFAULT_TIMEOUT) -> list[str]:
    """e2e.test inside the control plane's namespace, as Sonobuoy runs it (one process)."""
    assert lab.state is not None
    argv = ["ip", "netns", "exec", lab.cp_ns.name, str(e2e_test),
            f"--kubeconfig={lab.kubeconfig}",
            f"--kubectl-path={os.path.join(lab.state.bin_dir, 'kubectl')}",
            f"--report-dir={report_dir}",
            f"--dns-domain={coredns.CLUSTER_DOMAIN}",
            f"--ginkgo.focus={focus}",
            f"--ginkgo.timeout={timeout}",
            "--ginkgo.no-color", "--ginkgo.silence-skips", "--ginkgo.v"]
    if skip:
        argv.append(f"--ginkgo.skip={skip}")
    return argv


_SPEC_END = re.compile(r"^(?:•|S|P)?\s*(?P<what>\[[A-Z]+\])?\s*\[(?P<secs>[0-9.]+) seconds\]$")
_SPEC_SOURCE = re.compile(r"^\S+\.go:\d+$")
_LABELS = re.compile(r"^(?P<text>.*) \[(?P<labels>[^\[\]]+)\]$")


def strip_labels(header: str) -> str:
    """A verbose header's spec name without the label list ginkgo appends ("... [Conformance]
    [sig-network, Conformance]"): in this suite every label is also a [tag] of the name."""
    m = _LABELS.match(header)
    if m and all(f"[{label}]" in m.group("text") for label in m.group("labels").split(", ")):
        return m.group("text")
    return header


def _stream(proc: subprocess.Popen[str], log_file: Path, log: Log) -> None:
    """e2e.test's output into log_file; one console line per finished test (a header is
    the line before the spec's file:line, its end "• [FAILED] [12.3 seconds]")."""
    previous, current = "", ""
    with open(log_file, "w", encoding="utf-8") as out:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            text = line.rstrip("\n")
            if _SPEC_SOURCE.match(text) and previous:
                current = strip_labels(previous)
            m = _SPEC_END.match(text.strip())
            if m and current:
                verdict = (m.group("what") or "[PASSED]").strip("[]")
                log(f"  {verdict:<8} {float(m.group('secs')):6.1f} s  {current}")
                current = ""
            previous = text


def run(lab: KubeLab, *, focus: str | None = None, skip: str | None = None,
        report_dir: Path | None = None, timeout: str = DEFAULT_TIMEOUT,
        log: Log = print) -> Summary:
    """Build (cached), import, deploy DNS, run e2e.test; the JUnit summary."""
    from lab.kube.build import ensure_e2e
    from lab.kube.image import ensure_e2e_images

    if lab.state is None or lab.state.phase != "up":
        raise KubeLabError(f"no running kube lab in {lab.workdir} (`skein-lab kube up "
                           f"--workdir {lab.workdir}` first)")
    started = time.monotonic()
    e2e_bin = ensure_e2e(log=log)
    module = coredns.kubernetes_module(log)
    images = ensure_e2e_images(e2e_bin, module / "test/images/agnhost", log=log)
    import_images(lab, images, log)
    coredns.ensure(lab, e2e_bin / "coredns", module)
    report = (report_dir or lab.workdir / "e2e").resolve()
    report.mkdir(parents=True, exist_ok=True)
    (report / JUNIT).unlink(missing_ok=True)
    skips = active()
    argv = e2e_argv(lab, e2e_bin / "e2e.test", focus or DEFAULT_FOCUS, skip_regex(skips, skip),
                    report, timeout)
    log(f"ready in {time.monotonic() - started:.0f} s; e2e.test --ginkgo.focus "
        f"'{focus or DEFAULT_FOCUS}' ({len(skips)} skipped by name); log: {report / 'e2e.log'}")
    run_start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=report, stdin=subprocess.DEVNULL,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    try:
        _stream(proc, report / "e2e.log", log)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    log(f"e2e.test exited {code} after {(time.monotonic() - run_start) / 60:.1f} min")
    if not (report / JUNIT).is_file():
        raise KubeLabError(f"e2e.test exited {code} without a JUnit report; see "
                           f"{report / 'e2e.log'}")
    summary = parse_junit(report / JUNIT, skips, focus or DEFAULT_FOCUS)
    if code != 0 and not summary.failed:
        summary.cases.append(Case("[e2e.test]", "failed", 0.0,
                                  f"e2e.test exited {code}; see {report / 'e2e.log'}"))
    return summary
