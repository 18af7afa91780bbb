"""Items 2 and 5: a hostile or half-written manifests file, and Services the
speaker cannot announce as written.

Item 2.  Before: a flow sequence nested 25,000 deep (200,000 here: where the
stack runs out depends on the thread) killed skein-speaker and skein-agent
with SIGSEGV under a PyYAML linked with libyaml 0.2.5 (Debian 12's
python3-yaml), which has no depth limit: PyYAML's composer recursed in C until
the stack ran out, with no log line and no last good state.  The daemons run
here with such a PyYAML first on their path, when the machine has one.

Item 5.  Before: an empty manifests file withdrew every address while a
missing one kept them; a Service whose address is in no pool, or two Services
on one address without a sharing key, went unannounced or merged in silence.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from foundation.kube.sources.file import MAX_DEPTH
from lab.cluster import Lab, Node
from lab.netns import Netns
from lab.speakers import address_pool, arping_macs, l2_advertisement, lb_service, poll

LB4, SHARED, NO_POOL, UNSELECTED = "10.99.0.200", "10.99.0.201", "10.99.0.230", "10.98.0.5"
POOLS = [address_pool("lab", "10.99.0.200-10.99.0.215"), address_pool("lonely", "10.98.0.0/28"),
         l2_advertisement("l2", pools=["lab"])]
DEEP_FLOW = "apiVersion: v1\nkind: ConfigMap\ndata: " + "[" * 200_000 + "]" * 200_000 + "\n"
DEEP_BLOCK = "- " * 200_000 + "x\n"
DEEP_LINES = "a:\u2028" + "".join(" " * i + f"k{i}:\u2028" for i in range(1, 3000)) + "  v\n"
ROOT = str(Path(__file__).resolve().parents[2])


def _old_libyaml_shims() -> Iterator[str]:
    """Directories holding a PyYAML on this machine, to put first on sys.path:
    Debian's python3-yaml, and the base interpreter's (a virtualenv hides it)."""
    yield "/usr/lib/python3/dist-packages"
    yield sysconfig.get_path("purelib", vars={"base": sys.base_prefix})


_PROBE = ("import sys; sys.path.insert(0, sys.argv[1]); import yaml; "
          "print(yaml._yaml.get_version_string())")


@pytest.fixture(scope="module")
def old_yaml(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory with only a libyaml < 0.2.6 PyYAML in it (the version that
    crashes on deep nesting); without one, the tests run with the venv's."""
    shim = tmp_path_factory.mktemp("yaml-shim")
    for site in _old_libyaml_shims():
        package = os.path.join(site, "yaml")
        if not os.path.isdir(package):
            continue
        link = shim / "yaml"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(package)
        probe = subprocess.run([sys.executable, "-c", _PROBE, str(shim)], capture_output=True,
                               text=True, check=False)
        version = probe.stdout.strip()
        if probe.returncode == 0 and tuple(map(int, version.split("."))) < (0, 2, 6):
            return str(shim)
    pytest.fail("no PyYAML linked with libyaml < 0.2.6 on this machine: "
                "apt-get install python3-yaml (install/host-deps.sh does)")


_RUN = "import sys; sys.path[:0] = {path!r}; from {module} import main; sys.exit(main())"


def daemon(lab: Lab, node: Node, shim: str | None, module: str, name: str, *args: str) -> Any:
    """A daemon's entry point in `node`, with the PyYAML of `shim` (None: the venv's)."""
    code = _RUN.format(path=[shim] if shim else [], module=module)
    return lab.spawn(node.ns, sys.executable, "-c", code, *args,
                     log=os.path.join(node.workdir, f"{name}.log"))


def log_of(node: Node, name: str) -> str:
    try:
        return Path(node.workdir, f"{name}.log").read_text()
    except FileNotFoundError:
        return ""


def answered(client: Netns, address: str) -> bool:
    return bool(arping_macs(client, address, count=1, wait=1))


def write(lab: Lab, text: str, atomic: bool = True) -> None:
    if not atomic:  # as `> FILE` or an editor that truncates first
        with open(lab.manifests_path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    tmp = lab.manifests_path + ".tmp"
    Path(tmp).write_text(text)
    os.replace(tmp, lab.manifests_path)


def test_deep_nesting_is_refused_by_the_parser_under_libyaml_0_2_5(old_yaml: str) -> None:
    """The parser alone, in a process of its own (a crash is a signal, not an exception)."""
    script = (f"import sys; sys.path.insert(0, {old_yaml!r}); sys.path.insert(1, {ROOT!r})\n"
              "from foundation.kube.sources.file import parse_manifests\n"
              "import yaml\n"
              "for text in (sys.stdin.read().split('\\x00')):\n"
              "    try:\n"
              "        parse_manifests(text)\n"
              "        print('parsed')\n"
              "    except yaml.YAMLError as exc:\n"
              "        print('refused', str(exc).splitlines()[0])\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          input="\x00".join((DEEP_FLOW, DEEP_BLOCK, DEEP_LINES)), timeout=120,
                          check=False)
    assert proc.returncode == 0, f"exit {proc.returncode} (SIGSEGV is -11): {proc.stderr}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all(f"nested deeper than {MAX_DEPTH} levels" in x
                                   for x in lines), lines


@pytest.fixture
def one_node(request: pytest.FixtureRequest) -> Iterator[tuple[Lab, Netns]]:
    with Lab(nodes=1) as lab:
        client = lab.add_client("cl", 100)
        yield lab, client
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            node = lab.nodes["node1"]
            print(log_of(node, "speaker"), log_of(node, "agent"), file=sys.stderr)


def test_deeply_nested_manifests_leave_the_daemons_serving(one_node, old_yaml) -> None:
    lab, client = one_node
    node = lab.nodes["node1"]
    lab.write_manifests(extra=[*POOLS, lb_service("web", LB4)])
    speaker = daemon(lab, node, old_yaml, "speaker.main", "speaker", "--node", "node1",
                     "--manifests", lab.manifests_path, "--assign-to-lo", "--api-socket", "none")
    agent = daemon(lab, node, old_yaml, "cni_plugin.agent.main", "agent", "--node", "node1",
                   "--manifests", lab.manifests_path, "--cni-conf-dir", node.conf_dir,
                   "--ipam-data-dir", node.data_dir, "--no-fastpath", "--resync", "1")
    poll(lambda: answered(client, LB4), 20, f"{LB4} to be announced")
    poll(lambda: os.path.exists(node.conflist_path), 20, "the agent's conflist")
    good = Path(lab.manifests_path).read_text()
    for deep in (DEEP_FLOW, DEEP_BLOCK):
        write(lab, good + "---\n" + deep)
        for name, proc in (("speaker", speaker), ("agent", agent)):
            def refused(name: str = name, proc: Any = proc) -> bool:
                assert proc.poll() is None, f"{name} exited with {proc.poll()} (SIGSEGV: -11)"
                return f"nested deeper than {MAX_DEPTH}" in log_of(node, name)

            poll(refused, 20, f"the {name} to refuse the file")
        assert speaker.poll() is None and agent.poll() is None, (speaker.poll(), agent.poll())
        assert answered(client, LB4)  # the last good state is kept
        write(lab, good)
        for name in ("speaker", "agent"):  # the next refusal is counted from here
            Path(node.workdir, f"{name}.log").write_text("")


def test_an_emptied_file_keeps_the_last_state_and_an_empty_one_at_start_is_nothing(
        one_node, tmp_path) -> None:
    lab, client = one_node
    node = lab.nodes["node1"]
    services = [lb_service("web", LB4),
                lb_service("nopool", NO_POOL),
                lb_service("unselected", UNSELECTED),
                lb_service("a", SHARED, port=80), lb_service("b", SHARED, port=80)]
    write(lab, "")  # empty at start: a valid "nothing", the speaker starts
    speaker = daemon(lab, node, None, "speaker.main", "speaker",
                     "--node", "node1", "--manifests", lab.manifests_path, "--assign-to-lo",
                     "--api-socket", "none", "--resync", "0.3")
    poll(lambda: "empty: no objects" in log_of(node, "speaker"), 20, "the speaker to start")
    lab.write_manifests(extra=[*POOLS, *services])
    poll(lambda: answered(client, LB4), 20, f"{LB4} to be announced")

    # Item 5's lines: said once each (not at every resync), naming Service and reason.
    poll(lambda: "which do not share one" in log_of(node, "speaker"), 10, "the sharing warning")
    for fragment in (f"Service default/nopool: {NO_POOL} is in no IPAddressPool",
                     f"Service default/unselected: {UNSELECTED} is in IPAddressPool lonely, "
                     "which no L2Advertisement or BGPAdvertisement selects",
                     f"{SHARED} is the address of Services default/a, default/b, which do not "
                     "share one metallb.io/allow-shared-ip key"):
        assert log_of(node, "speaker").count(fragment) == 1, fragment
    assert not answered(client, NO_POOL)

    good = Path(lab.manifests_path).read_text()
    write(lab, "", atomic=False)  # truncated: a half-written edit, not "delete everything"
    poll(lambda: "empty; keeping the last good state" in log_of(node, "speaker"), 10,
         "the speaker to notice the empty file")
    assert answered(client, LB4)
    os.unlink(lab.manifests_path)  # missing: the same
    poll(lambda: "missing; keeping the last state" in log_of(node, "speaker"), 10,
         "the speaker to notice the missing file")
    assert answered(client, LB4)
    write(lab, good)
    write(lab, "---\n# nothing here, on purpose\n")  # a file with no objects: withdraw
    poll(lambda: not answered(client, LB4), 20, f"{LB4} to be withdrawn")
    assert speaker.poll() is None
