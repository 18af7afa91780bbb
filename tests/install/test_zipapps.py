"""install/build_zipapps.py: self-contained `skein` and `skein-ipam` that a
node's bare `python3 -I` runs, importing nothing from outside the archive but
the standard library."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.install.helpers import (
    assert_self_contained,
    load_script,
    node_env,
    node_python,
)

build_zipapps = load_script("build_zipapps")


def names(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as z:
        return set(z.namelist())


@pytest.mark.parametrize("app", ["skein", "skein-ipam"])
def test_executable_with_env_shebang(built, app):
    path = built / app
    assert path.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert path.stat().st_mode & stat.S_IXUSR
    assert zipfile.is_zipfile(path)


def test_contents(built):
    skein = names(built / "skein")
    assert {"__main__.py", "cni_plugin/plugin.py", "cni_plugin/vxlan.py",
            "speaker/model/node.py", "pyroute2/__init__.py", "ipam/ranges.py"} <= skein
    # Each module has a legacy-layout .pyc beside it (what zipimport reads).
    assert "cni_plugin/plugin.pyc" in skein and "pyroute2/iproute/linux.pyc" in skein
    # The lab and the agent stay out; so does anything compiled.
    assert not any(n.startswith(("cni_plugin/lab/", "cni_plugin/agent/")) for n in skein)
    assert not any(n.endswith(".so") for n in skein)
    assert any("LICENSE" in n and "pyroute2" in n for n in skein)

    ipam = names(built / "skein-ipam")
    assert {"__main__.py", "ipam/main.py", "cni_plugin/skel.py"} <= ipam
    assert not any(n.startswith(("pyroute2/", "speaker/")) for n in ipam)


@pytest.mark.parametrize("app", ["skein", "skein-ipam"])
def test_version_with_a_bare_interpreter(built, app):
    python = node_python()
    proc = subprocess.run([python, "-I", "-v", str(built / app)], input="",
                          env=node_env(CNI_COMMAND="VERSION"), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    loaders = assert_self_contained(proc.stderr, built / app, python)
    assert "cni_plugin.skel" in loaders
    # VERSION must not pay for pyroute2.
    assert "pyroute2" not in loaders


def test_ipam_add_and_del_with_a_bare_interpreter(built, tmp_path):
    """skein-ipam allocates and frees a lease, importing only what it carries."""
    python = node_python()
    conf = {"cniVersion": "1.1.0", "name": "zipnet", "type": "skein",
            "ipam": {"type": "skein-ipam", "ranges": [[{"subnet": "10.66.0.0/29"}]],
                     "dataDir": str(tmp_path)}}
    env = node_env(CNI_CONTAINERID="ctr1", CNI_NETNS="/var/run/netns/none", CNI_IFNAME="eth0",
                   CNI_PATH=str(built))
    add = subprocess.run([python, "-I", "-v", str(built / "skein-ipam")], input=json.dumps(conf),
                         env={**env, "CNI_COMMAND": "ADD"}, capture_output=True, text=True,
                         timeout=60, check=False)
    assert add.returncode == 0, add.stdout + add.stderr[-2000:]
    assert json.loads(add.stdout)["ips"][0]["address"] == "10.66.0.2/29"
    loaders = assert_self_contained(add.stderr, built / "skein-ipam", python)
    assert "ipam.store" in loaders
    assert os.listdir(tmp_path / "zipnet")
    delete = subprocess.run([python, "-I", str(built / "skein-ipam")], input=json.dumps(conf),
                            env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert not (tmp_path / "zipnet" / "10.66.0.2").exists()


def test_refuses_compiled_extensions():
    # rpds-py (a jsonschema dependency) is a compiled extension: not vendorable.
    with pytest.raises(build_zipapps.BuildError, match="compiled extension"):
        build_zipapps.distribution_files("rpds-py")


def test_refuses_distributions_with_dependencies():
    with pytest.raises(build_zipapps.BuildError, match="requires .*vendor those too"):
        build_zipapps.distribution_files("jsonschema")


def test_refuses_missing_sources_and_packages():
    with pytest.raises(build_zipapps.BuildError, match="does not exist"):
        build_zipapps.project_files(("cni_plugin/no_such_module.py",))
    with pytest.raises(build_zipapps.BuildError, match="not importable"):
        build_zipapps.package_root("no_such_package_skein")
    with pytest.raises(build_zipapps.BuildError, match="not installed"):
        build_zipapps.distribution_files("no-such-distribution-skein")


def test_check_reports_a_broken_executable(tmp_path):
    broken = tmp_path / "skein"
    broken.write_text("#!/usr/bin/env python3\nimport pyroute2_is_not_vendored\n")
    with pytest.raises(build_zipapps.BuildError, match="VERSION failed"):
        build_zipapps.check(broken, node_python())


def test_cli_check_runs_each_executable(tmp_path):
    out = tmp_path / "out"
    assert build_zipapps.main(["--out", str(out), "--check", "--python", node_python()]) == 0
    assert sorted(os.listdir(out)) == ["skein", "skein-ipam"]  # no partial files left
