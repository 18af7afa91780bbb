"""install/build_zipapps.py: self-contained `skein` (a launcher generated from
cni_plugin/fastpath.py, plus `skein.pyz`) and `skein-ipam` (a zipapp) that a
node's bare `python3` runs with their shebang's `-I -S`, importing nothing from
outside the archives but the standard library."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.install.helpers import (
    REPO,
    FakeAgent,
    assert_self_contained,
    interpreter_argv,
    load_script,
    module_loaders,
    node_env,
    node_python,
    startup_modules,
)

build_zipapps = load_script("build_zipapps")
SHEBANG = b"#!/usr/bin/env -S python3 -I -S\n"
ARCHIVE = {"skein": "skein.pyz", "skein-ipam": "skein-ipam"}  # where the modules are


def names(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as z:
        return set(z.namelist())


def test_skein_is_a_launcher_generated_from_fastpath(built):
    launcher = built / "skein"
    text = launcher.read_bytes()
    assert text.startswith(SHEBANG)
    assert launcher.stat().st_mode & stat.S_IXUSR
    assert not zipfile.is_zipfile(launcher)
    # The launcher carries fastpath.py plus its entry point compiled: it is
    # generated, never a hand-kept copy.
    source = build_zipapps.client_source(build_zipapps.APPS[0])
    assert source.startswith((REPO / "cni_plugin/fastpath.py").read_text().rstrip("\n"))
    assert "run_client(_in_process)" in source
    namespace: dict[str, object] = {}
    exec(text.decode().split("\nif _frozen_importlib_external")[0], namespace)
    code = compile(source, "skein (cni_plugin/fastpath.py)", "exec", optimize=2)
    assert isinstance(namespace["CODE"], bytes)
    assert marshal.loads(namespace["CODE"]) == code  # marshal's bytes depend on refcounts
    assert namespace["MAGIC"] == importlib.util.MAGIC_NUMBER
    assert zipfile.is_zipfile(built / "skein.pyz")
    assert not (built / "skein.pyz").read_bytes().startswith(b"#!")


def test_skein_ipam_is_a_zipapp_with_the_same_shebang(built):
    path = built / "skein-ipam"
    assert path.read_bytes().startswith(SHEBANG)
    assert path.stat().st_mode & stat.S_IXUSR
    assert zipfile.is_zipfile(path)
    assert build_zipapps.interpreter_options(path) == ["-I", "-S"]


def test_contents(built):
    skein = names(built / "skein.pyz")
    assert {"__main__.py", "cni_plugin/plugin.py", "cni_plugin/vxlan.py", "cni_plugin/main.py",
            "foundation/netlink/rtnl.py", "foundation/netlink/mac.py", "foundation/cni/skel.py",
            "ipam/ranges.py"} <= skein
    # Each module has a legacy-layout .pyc beside it (what zipimport reads).
    assert "cni_plugin/plugin.pyc" in skein and "foundation/netlink/rtnl.pyc" in skein
    # The lab, the agent, the daemons and the Kubernetes model stay out; so does
    # everything outside the standard library.
    assert not any(n.startswith(("lab/", "cni_plugin/agent/", "speaker/", "foundation/kube/"))
                   for n in skein)
    assert not any(n.startswith("pyroute2/") or n.endswith(".so") for n in skein)

    ipam = names(built / "skein-ipam")
    assert {"__main__.py", "ipam/main.py", "foundation/cni/skel.py"} <= ipam
    assert not any(n.startswith(("pyroute2/", "speaker/", "cni_plugin/", "foundation/kube/"))
                   for n in ipam)


@pytest.mark.parametrize("app", ["skein", "skein-ipam"])
def test_version_with_a_bare_interpreter(built, app):
    python = node_python()
    proc = subprocess.run(interpreter_argv(python, built / app, "-v"), input="",
                          env=node_env(CNI_COMMAND="VERSION"), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    loaders = assert_self_contained(proc.stderr, built / ARCHIVE[app], python)
    assert "foundation.cni.skel" in loaders
    # VERSION must not pay for the netlink modules, nor for `site` (-S).
    assert "foundation.netlink.rtnl" not in loaders and "site" not in loaders


@pytest.mark.parametrize("app", ["skein", "skein-ipam"])
def test_shebang_runs_the_nodes_python3(built, app):
    """Exec'd as a runtime does: `env -S` finds python3 on the node's PATH."""
    proc = subprocess.run([str(built / app)], input="", env=node_env(CNI_COMMAND="VERSION"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"


def test_launcher_answer_from_the_agent_loads_nothing_else(built, tmp_path):
    """With skein-agent answering, the launcher alone runs: no archive, no
    module beyond the interpreter's start-up but _socket."""
    python = node_python()
    sock = str(tmp_path / "agent.sock")
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "skein", "agentSocket": sock}
    env = node_env(CNI_COMMAND="ADD", CNI_CONTAINERID="c1", CNI_NETNS="/var/run/netns/x",
                   CNI_IFNAME="eth0", CNI_PATH=str(built))
    with FakeAgent(sock, (7, '{"code": 7}')) as agent:
        proc = subprocess.run(interpreter_argv(python, built / "skein", "-v"),
                              input=json.dumps(conf), env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        via_shebang = subprocess.run([str(built / "skein")], input=json.dumps(conf), env=env,
                                     capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (7, '{"code": 7}\n'), proc.stderr[-2000:]
    assert (via_shebang.returncode, via_shebang.stdout) == (7, '{"code": 7}\n')
    assert len(agent.requests) == 2
    env_sent, stdin_sent = agent.requests[0]
    assert env_sent == {k: v for k, v in env.items() if k.startswith("CNI_")}
    assert json.loads(stdin_sent) == conf
    loaders = module_loaders(proc.stderr)
    assert set(loaders) - startup_modules(python, "-S") <= {"_socket"}, loaders
    assert "skein.pyz" not in proc.stderr


def test_launcher_answers_the_spec_error_json_when_its_archive_is_missing(built, tmp_path):
    """The CNI error JSON has one writer, foundation.cni.spec.error_json; the
    launcher, which cannot import it, carries its source (generated from the
    function, not a copy kept by hand) and answers with it when it cannot load
    skein.pyz: the text the rest of Skein would write, never a traceback."""
    import inspect

    from foundation.cni import spec

    source = build_zipapps.client_source(build_zipapps.APPS[0])
    assert inspect.getsource(spec.error_json) in source
    alone = tmp_path / "bin"
    alone.mkdir()
    shutil.copy(built / "skein", alone / "skein")                 # no skein.pyz beside it
    conf = {"cniVersion": "0.4.0", "name": "n", "type": "skein"}  # no agent to ask
    env = node_env(CNI_COMMAND="ADD", CNI_CONTAINERID="c1", CNI_NETNS="/var/run/netns/x",
                   CNI_IFNAME="eth0", CNI_PATH=str(alone))
    proc = subprocess.run(interpreter_argv(node_python(), alone / "skein"),
                          input=json.dumps(conf), env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    archive = f"{os.path.realpath(alone / 'skein')}.pyz"
    assert (answer["cniVersion"], answer["code"], answer["msg"]) == (
        "0.4.0", 999, f"cannot load {archive}")
    assert "cni_plugin" in answer["details"]
    assert proc.stdout == spec.error_json("0.4.0", 999, answer["msg"], answer["details"]) + "\n"


def test_launcher_on_another_python_runs_the_client_from_its_archive(built, tmp_path):
    """A node python3 of another bytecode magic than the build's cannot load
    the launcher's compiled code: it runs the same client from skein.pyz and
    gets the same answers (here: the agent's, then VERSION in-process)."""
    python = node_python()
    other = tmp_path / "bin" / "skein"
    other.parent.mkdir()
    text = (built / "skein").read_text()
    assert text.count("\nMAGIC = ") == 1
    other.write_text(text.replace("\nMAGIC = ", "\nMAGIC = b'none' or ", 1))
    other.chmod(0o755)
    (tmp_path / "bin" / "skein.pyz").symlink_to(built / "skein.pyz")
    sock = str(tmp_path / "agent.sock")
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "skein", "agentSocket": sock}
    env = node_env(CNI_COMMAND="ADD", CNI_CONTAINERID="c1", CNI_NETNS="/var/run/netns/x",
                   CNI_IFNAME="eth0", CNI_PATH=str(built))
    with FakeAgent(sock, (0, '{"cniVersion": "1.1.0"}')) as agent:
        proc = subprocess.run(interpreter_argv(python, other, "-v"), input=json.dumps(conf),
                              env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (0, '{"cniVersion": "1.1.0"}\n'), proc.stderr[-2000:]
    assert len(agent.requests) == 1
    loaders = assert_self_contained(proc.stderr, tmp_path / "bin" / "skein.pyz", python)
    assert "cni_plugin.fastpath" in loaders and "cni_plugin.main" in loaders
    version = subprocess.run([str(other)], input="", env=node_env(CNI_COMMAND="VERSION"),
                             capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0, version.stderr[-2000:]
    assert json.loads(version.stdout)["supportedVersions"][-1] == "1.1.0"


def test_launcher_without_an_answer_continues_from_its_archive(built, tmp_path):
    """The agent hung up mid-request: the launcher goes on in-process from
    skein.pyz, through the fallback (which waits for the attachment's lock).
    CHECK of an unknown attachment fails cleanly without touching a network."""
    python = node_python()
    sock = str(tmp_path / "agent.sock")
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "skein", "agentSocket": sock,
            "ipam": {"type": "skein-ipam", "dataDir": str(tmp_path / "ipam")}}
    env = node_env(CNI_COMMAND="CHECK", CNI_CONTAINERID="c1", CNI_NETNS="",
                   CNI_IFNAME="eth0", CNI_PATH=str(built))
    with FakeAgent(sock, None) as agent:
        proc = subprocess.run(interpreter_argv(python, built / "skein", "-v"),
                              input=json.dumps(conf), env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    assert len(agent.requests) == 1
    assert proc.returncode != 0 and "code" in json.loads(proc.stdout), proc.stderr[-2000:]
    loaders = assert_self_contained(proc.stderr, built / "skein.pyz", python)
    assert "cni_plugin.fallback" in loaders and "cni_plugin.main" in loaders
    assert "attachments.lock" in os.listdir(tmp_path)  # the fallback took the lock


def test_ipam_add_and_del_with_a_bare_interpreter(built, tmp_path):
    """skein-ipam allocates and frees a lease, importing only what it carries."""
    python = node_python()
    conf = {"cniVersion": "1.1.0", "name": "zipnet", "type": "skein",
            "ipam": {"type": "skein-ipam", "ranges": [[{"subnet": "10.66.0.0/29"}]],
                     "dataDir": str(tmp_path)}}
    env = node_env(CNI_CONTAINERID="ctr1", CNI_NETNS="/var/run/netns/none", CNI_IFNAME="eth0",
                   CNI_PATH=str(built))
    ipam = built / "skein-ipam"
    add = subprocess.run(interpreter_argv(python, ipam, "-v"), input=json.dumps(conf),
                         env={**env, "CNI_COMMAND": "ADD"}, capture_output=True, text=True,
                         timeout=60, check=False)
    assert add.returncode == 0, add.stdout + add.stderr[-2000:]
    assert json.loads(add.stdout)["ips"][0]["address"] == "10.66.0.2/29"
    loaders = assert_self_contained(add.stderr, ipam, python)
    assert "ipam.store" in loaders
    assert os.listdir(tmp_path / "zipnet")
    delete = subprocess.run([str(ipam)], input=json.dumps(conf),
                            env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert not (tmp_path / "zipnet" / "10.66.0.2").exists()


def test_refuses_missing_sources_and_packages():
    with pytest.raises(build_zipapps.BuildError, match="does not exist"):
        build_zipapps.project_files(("cni_plugin/no_such_module.py",))
    with pytest.raises(build_zipapps.BuildError, match="not importable"):
        build_zipapps.package_root("no_such_package_skein")


def test_check_reports_a_broken_executable(tmp_path):
    broken = tmp_path / "skein"
    broken.write_text("#!/usr/bin/env -S python3 -I -S\nimport skein_no_such_module\n")
    with pytest.raises(build_zipapps.BuildError, match="VERSION failed"):
        build_zipapps.check(broken, node_python())
    broken.write_text("#!/usr/bin/env python3\nprint('{}')\n")
    with pytest.raises(build_zipapps.BuildError, match="unexpected first line"):
        build_zipapps.check(broken, node_python())


def test_cli_check_runs_each_executable(tmp_path):
    out = tmp_path / "out"
    assert build_zipapps.main(["--out", str(out), "--check", "--python", node_python()]) == 0
    # No partial files left.
    assert sorted(os.listdir(out)) == ["skein", "skein-ipam", "skein.pyz"]
    assert sorted(f for app in build_zipapps.APPS for f in app.files) == sorted(os.listdir(out))
