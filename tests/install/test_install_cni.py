"""install/install_cni.py on a temporary root: the executables it installs run
from ROOT/opt/cni/bin with the bundled runtime installed beside them (no python3
on the PATH), or with the node's bare `python3 -I -S` when asked, and wire a
real pod; `skein` and its archive change together, runtimes are kept while a
version names them, and the conflist it writes is the one skein-agent would
write.

Network safety: the node, its underlay peer and the pod are namespaces named
sk<tag>...; nothing is created in the root namespace; the fixture removes them.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_plugin.conflist import CONFLIST_NAME, node_conflist, plugin_config
from lab.netns import veth_between
from lab.traffic import ping
from tests.install.helpers import (
    INSTALL,
    FakeAgent,
    assert_self_contained,
    interpreter_argv,
    node_env,
    tools_path,
)

POD_CIDR = "10.78.1.0/24"
CLUSTER_CIDR = "10.78.0.0/16"


def install(root: Path, built: Path, *args: str, runtime: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """install_cni.py's CLI; `runtime` is --runtime-src (the default --python
    bundled needs one)."""
    extra = ["--runtime-src", str(runtime)] if runtime is not None else []
    return subprocess.run([sys.executable, str(INSTALL / "install_cni.py"), "--root", str(root),
                           "--bin-src", str(built), *extra, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def installed_conflist(root: Path, conf_dir: str = "etc/cni/net.d") -> dict[str, Any]:
    return json.loads((root / conf_dir / CONFLIST_NAME).read_text())


def installed_versions(bin_dir: Path) -> list[str]:
    return sorted(v for v in os.listdir(bin_dir / ".skein") if v.startswith("skein-"))


def installed_runtimes(bin_dir: Path) -> list[str]:
    return sorted(v for v in os.listdir(bin_dir / ".skein") if v.startswith("runtime-"))


def tree(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (content, permission bits) of every file under `directory`."""
    return {str(p.relative_to(directory)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_installs_executables_runtime_and_conflist(built, runtime, tmp_path):
    root = tmp_path / "root"
    data_dir = str(tmp_path / "var/lib/cni/networks")
    proc = install(root, built, "--pod-cidr", POD_CIDR, "--cluster-cidr", CLUSTER_CIDR,
                   "--ipam-data-dir", data_dir, runtime=runtime)
    assert proc.returncode == 0, proc.stderr
    bin_dir = root / "opt/cni/bin"
    assert sorted(os.listdir(bin_dir)) == [".skein", "skein", "skein-ipam"]
    # skein: a relative symlink to the launcher of one version, its archive beside it.
    (version,) = installed_versions(bin_dir)
    assert os.readlink(bin_dir / "skein") == f".skein/{version}/skein"
    assert sorted(os.listdir(bin_dir / ".skein" / version)) == ["skein", "skein.pyz"]
    assert not (bin_dir / "skein.pyz").exists()
    # The runtime, file for file, named by its content; the shebangs name its
    # interpreter as the node sees it (no ROOT prefix).
    (runtime_dir,) = installed_runtimes(bin_dir)
    assert tree(bin_dir / ".skein" / runtime_dir) == tree(runtime)
    line = f"#!/opt/cni/bin/.skein/{runtime_dir}/bin/python3 -IS\n".encode()
    for path, built_file, mode in ((bin_dir / "skein", "skein", 0o755),
                                   (bin_dir / ".skein" / version / "skein.pyz", "skein.pyz",
                                    0o644),
                                   (bin_dir / "skein-ipam", "skein-ipam", 0o755)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
        if built_file == "skein":
            assert shebang(path) == line
            assert path.read_bytes().split(b"\n", 1)[1] == \
                (built / built_file).read_bytes().split(b"\n", 1)[1]
        elif built_file == "skein-ipam":
            assert shebang(path) == line
            assert zip_entries(path.read_bytes()) == zip_entries(
                (built / built_file).read_bytes())
        else:
            assert path.read_bytes() == (built / built_file).read_bytes()
    assert not (bin_dir / "skein-ipam").is_symlink()
    info = json.loads((runtime / "runtime.json").read_text())
    assert f"needs glibc >= {info['glibc']} at /lib64/ld-linux-x86-64.so.2" in proc.stdout
    # Exactly what skein-agent's function makes for this node (before it knows the MTU).
    assert installed_conflist(root) == node_conflist(
        [POD_CIDR], data_dir=data_dir, cluster_cidrs=[CLUSTER_CIDR],
        vxlan={"vni": 1, "port": 8472, "device": "skein.1"},
        agent_socket="/run/skein/agent.sock")
    assert "wrote" in proc.stdout


def fake_node_python(root: Path, where: str = "usr/bin") -> None:
    """A node's python3 as Debian lays it out: python3 -> python3.11 (relative)."""
    directory = root / where
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "python3.11").write_bytes(b"")
    os.chmod(directory / "python3.11", 0o755)
    os.symlink("python3.11", directory / "python3")


def zip_entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def shebang(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.readline()


def test_shebang_names_the_nodes_python3_when_it_is_visible(built, tmp_path):
    """--python auto: the first python3 on the runtime's PATH under ROOT, by the
    path the node knows (not the python3.11 it links to); otherwise env.  The
    installed files hold what the built ones hold but for that line, and run
    when exec'd (this machine has /usr/bin/python3, like the fake node)."""
    root = tmp_path / "root"
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python", "auto").returncode == 0
    bin_dir = root / "opt/cni/bin"
    assert shebang(bin_dir / "skein") == b"#!/usr/bin/env -S python3 -I -S\n"
    assert installed_runtimes(bin_dir) == []

    fake_node_python(root)
    proc = install(root, built, "--pod-cidr", POD_CIDR, "--python", "auto")
    assert proc.returncode == 0, proc.stderr
    assert "#!/usr/bin/python3 -IS" in proc.stdout
    for name in ("skein", "skein-ipam"):
        installed, original = (bin_dir / name).read_bytes(), (built / name).read_bytes()
        assert installed.startswith(b"#!/usr/bin/python3 -IS\n")
        if name == "skein":
            assert installed.split(b"\n", 1)[1] == original.split(b"\n", 1)[1]
        else:
            assert zip_entries(installed) == zip_entries(original)
        version = subprocess.run([str(bin_dir / name)], input="",
                                 env=node_env(CNI_COMMAND="VERSION"), capture_output=True,
                                 text=True, timeout=60, check=False)
        assert version.returncode == 0, version.stderr[-2000:]
        assert json.loads(version.stdout)["supportedVersions"][-1] == "1.1.0"
    assert len(installed_versions(bin_dir)) == 2  # a new shebang is a new version

    fake_node_python(root, "usr/local/bin")  # earlier on the runtime's PATH
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python", "auto").returncode == 0
    assert shebang(bin_dir / "skein-ipam") == b"#!/usr/local/bin/python3 -IS\n"
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python", "env").returncode == 0
    assert shebang(bin_dir / "skein") == b"#!/usr/bin/env -S python3 -I -S\n"
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python",
                   "/usr/bin/python3").returncode == 0
    assert shebang(bin_dir / "skein") == b"#!/usr/bin/python3 -IS\n"


def test_shebang_follows_absolute_links_inside_root(built, tmp_path):
    """An absolute symlink is the node's, so it is followed under ROOT, never
    into the installer's own filesystem; a dangling one is no python3."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    os.symlink("/usr/lib/python3-nowhere", root / "usr/bin/python3")
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python", "auto").returncode == 0
    assert shebang(root / "opt/cni/bin/skein") == b"#!/usr/bin/env -S python3 -I -S\n"
    (root / "usr/lib").mkdir()
    (root / "usr/lib/python3-nowhere").write_bytes(b"")
    os.chmod(root / "usr/lib/python3-nowhere", 0o755)
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python", "auto").returncode == 0
    assert shebang(root / "opt/cni/bin/skein") == b"#!/usr/bin/python3 -IS\n"


def test_underlay_device_and_no_masquerade(built, runtime, tmp_path):
    root = tmp_path / "root"
    assert install(root, built, "--pod-cidr", POD_CIDR, "--underlay-device", "eth1",
                   "--no-ip-masq", runtime=runtime).returncode == 0
    plugin = installed_conflist(root)["plugins"][0]
    assert plugin["vxlan"] == {"vni": 1, "port": 8472, "device": "skein.1",
                               "underlayDevice": "eth1"}
    assert plugin["ipMasq"] is False
    # An empty value (the DaemonSet's default) means the device with the default route.
    assert install(root, built, "--pod-cidr", POD_CIDR, "--underlay-device", "",
                   runtime=runtime).returncode == 0
    assert "underlayDevice" not in installed_conflist(root)["plugins"][0]["vxlan"]


def test_reinstall_replaces_by_rename_and_removes_leftovers(built, runtime, tmp_path):
    root = tmp_path / "root"
    bin_dir = root / "opt/cni/bin"
    (bin_dir / ".skein").mkdir(parents=True)
    (bin_dir / "skein").write_text("old")  # an older installer's zipapp
    (bin_dir / "skein-ipam").write_text("old")
    (bin_dir / ".skein-install-dead").write_text("left by a killed installer")
    (bin_dir / ".skein" / ".skein-install-dead").mkdir()
    (bin_dir / "bridge").write_text("another plugin")
    old_inode = (bin_dir / "skein-ipam").stat().st_ino
    with open(bin_dir / "skein", "rb") as running, \
            open(bin_dir / "skein-ipam", "rb") as running_ipam:  # a runtime reading them
        assert install(root, built, "--pod-cidr", POD_CIDR, runtime=runtime).returncode == 0
        assert running.read() == b"old" and running_ipam.read() == b"old"
    assert (bin_dir / "skein-ipam").stat().st_ino != old_inode
    assert sorted(os.listdir(bin_dir)) == [".skein", "bridge", "skein", "skein-ipam"]
    (first,) = installed_versions(bin_dir)
    (first_runtime,) = installed_runtimes(bin_dir)
    again = install(root, built, "--pod-cidr", POD_CIDR, runtime=runtime)
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert installed_versions(bin_dir) == [first]  # the same content is the same version
    assert installed_runtimes(bin_dir) == [first_runtime]

    # Two newer builds: each switches `skein` to a complete new version; the
    # previous one stays (a plugin started from it may still read its archive),
    # older ones go.
    seen = [first]
    for n in (1, 2):
        newer = tmp_path / f"build{n}"
        shutil.copytree(built, newer)
        with open(newer / "skein", "a") as launcher:
            launcher.write(f"# build {n}\n")
        assert install(root, newer, "--pod-cidr", POD_CIDR, runtime=runtime).returncode == 0
        assert (bin_dir / "skein").read_bytes().endswith(f"# build {n}\n".encode())
        current = os.readlink(bin_dir / "skein").split("/")[1]
        assert current not in seen
        assert installed_versions(bin_dir) == sorted([seen[-1], current])
        seen.append(current)
    assert sorted(os.listdir(bin_dir)) == [".skein", "bridge", "skein", "skein-ipam"]
    assert installed_runtimes(bin_dir) == [first_runtime]


def test_runtimes_stay_while_a_version_names_them(built, runtime, tmp_path):
    """A new runtime is a new directory; the previous one stays while the previous
    skein version or skein-ipam may still run on it, older ones go, and so do
    all of them once no installed executable names them (--python auto)."""
    root = tmp_path / "root"
    bin_dir = root / "opt/cni/bin"
    seen: list[str] = []
    for n in range(3):
        variant = tmp_path / f"runtime{n}"
        shutil.copytree(runtime, variant, symlinks=True)
        (variant / "runtime.json").write_text(f'{{"variant": {n}}}\n')
        assert install(root, built, "--pod-cidr", POD_CIDR, runtime=variant).returncode == 0
        current = runtime_named(bin_dir / "skein-ipam")
        assert current not in seen and runtime_named(bin_dir / "skein") == current
        assert installed_runtimes(bin_dir) == sorted([*seen[-1:], current])
        seen.append(current)
    fake_node_python(root)
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python", "auto").returncode == 0
    assert installed_runtimes(bin_dir) == [seen[-1]]  # named by the previous versions
    assert install(root, built, "--pod-cidr", POD_CIDR, "--python", "auto").returncode == 0
    assert installed_runtimes(bin_dir) == []


def runtime_named(executable: Path) -> str:
    line = shebang(executable).decode()
    assert line.startswith("#!/opt/cni/bin/.skein/runtime-"), line
    return line.split("/")[5]


def test_refuses_bad_input(built, runtime, tmp_path):
    bad = install(tmp_path / "r", built, "--pod-cidr", "10.78.1.0/33", runtime=runtime)
    assert bad.returncode == 1 and "--pod-cidr" in bad.stderr
    no_runtime = install(tmp_path / "r", built, "--pod-cidr", POD_CIDR,
                         runtime=tmp_path / "nothing")
    assert no_runtime.returncode == 1 and "install/runtime.py" in no_runtime.stderr
    broken = tmp_path / "broken-runtime"
    shutil.copytree(runtime, broken, symlinks=True)
    (broken / "lib/python3.11/json/decoder.pyc").unlink()
    proc = install(tmp_path / "r", built, "--pod-cidr", POD_CIDR, runtime=broken)
    assert proc.returncode == 1 and "the runtime cannot run skein" in proc.stderr
    assert not (tmp_path / "r" / "opt/cni/bin/skein").exists()  # checked before any switch
    for option, value in (("--bin-dir", "opt/cni/bin"), ("--conf-dir", "/etc/cni net.d"),
                          ("--bin-dir", "/" + "very-long/" * 10)):
        proc = install(tmp_path / "r", built, "--pod-cidr", POD_CIDR, option, value,
                       runtime=runtime)
        assert proc.returncode == 1 and option in proc.stderr, proc.stderr
    missing = install(tmp_path / "r", tmp_path / "nothing", "--pod-cidr", POD_CIDR,
                      runtime=runtime)
    assert missing.returncode == 1 and "build_zipapps.py" in missing.stderr
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("skein", "skein-ipam"):  # skein.pyz missing
        shutil.copy(built / name, partial / name)
    proc = install(tmp_path / "r", partial, "--pod-cidr", POD_CIDR, runtime=runtime)
    assert proc.returncode == 1 and "skein.pyz" in proc.stderr
    outside = subprocess.run([sys.executable, str(INSTALL / "install_cni.py"), "--root",
                              str(tmp_path / "r"), "--bin-src", str(built), "--runtime-src",
                              str(runtime), "--node", "n1"],
                             env={k: v for k, v in os.environ.items()
                                  if not k.startswith("KUBERNETES_")},
                             capture_output=True, text=True, timeout=60, check=False)
    assert outside.returncode == 1 and "KUBERNETES_SERVICE_HOST" in outside.stderr
    for python in ("/opt/none/python3", "python3"):
        wrong = install(tmp_path / "r", built, "--pod-cidr", POD_CIDR, "--python", python)
        assert wrong.returncode == 1 and f"--python {python}" in wrong.stderr
    assert not (tmp_path / "r" / "etc").exists() and not (tmp_path / "r" / "very-long").exists()


def test_conf_and_bin_dirs_as_the_node_names_them(built, runtime, tmp_path):
    """--bin-dir and --conf-dir are the node's paths (k3s, GKE keep them elsewhere):
    the files go under ROOT, the shebang names the node's path."""
    root = tmp_path / "root"
    proc = install(root, built, "--pod-cidr", POD_CIDR, "--bin-dir", "/home/kubernetes/bin",
                   "--conf-dir", "/var/lib/rancher/k3s/agent/etc/cni/net.d", runtime=runtime)
    assert proc.returncode == 0, proc.stderr
    bin_dir = root / "home/kubernetes/bin"
    (runtime_dir,) = installed_runtimes(bin_dir)
    assert shebang(bin_dir / "skein-ipam") == \
        f"#!/home/kubernetes/bin/.skein/{runtime_dir}/bin/python3 -IS\n".encode()
    assert installed_conflist(root, "var/lib/rancher/k3s/agent/etc/cni/net.d")
    assert not (root / "opt").exists() and not (root / "etc").exists()


class FakeApiServer(http.server.ThreadingHTTPServer):
    """GET /api/v1/nodes/NAME with a bearer token; answers from a script."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), FakeApiHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeApiHandler(http.server.BaseHTTPRequestHandler):
    server: FakeApiServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests.append((self.path, self.headers.get("Authorization", "")))
        code, body = self.server.answers.pop(0) if len(self.server.answers) > 1 \
            else self.server.answers[0]
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[Any]:
    servers: list[FakeApiServer] = []

    def start(answers: list[tuple[int, dict[str, Any]]]) -> FakeApiServer:
        server = FakeApiServer(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def node_object(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-1"}, "spec": spec}


def test_waits_for_the_nodes_pod_cidrs(built, runtime, tmp_path, api_server):
    server = api_server([(404, {"kind": "Status", "code": 404}),
                         (200, node_object()),
                         (200, node_object(podCIDR="10.78.2.0/24",
                                           podCIDRs=["10.78.2.0/24", "fd78:0:0:2::/64"]))])
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    root = tmp_path / "root"
    proc = install(root, built, "--node", "worker-1", "--api-server", server.url,
                   "--token-file", str(token), "--wait", "30", runtime=runtime)
    assert proc.returncode == 0, proc.stderr
    assert [r for r in server.requests] == [("/api/v1/nodes/worker-1", "Bearer s3cret")] * 3
    assert "HTTP 404" in proc.stderr and "no spec.podCIDRs yet" in proc.stderr
    ranges = installed_conflist(root)["plugins"][0]["ipam"]["ranges"]
    assert ranges == [[{"subnet": "10.78.2.0/24"}], [{"subnet": "fd78:0:0:2::/64"}]]


def test_single_stack_node_and_forbidden(built, runtime, tmp_path, api_server):
    ok = api_server([(200, node_object(podCIDR="10.78.3.0/24"))])
    assert install(tmp_path / "a", built, "--node", "worker-1", "--api-server",
                   ok.url, runtime=runtime).returncode == 0
    assert installed_conflist(tmp_path / "a")["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.78.3.0/24"}]]

    forbidden = api_server([(403, {"kind": "Status", "code": 403})])
    proc = install(tmp_path / "b", built, "--node", "worker-1", "--api-server", forbidden.url,
                   "--wait", "30", runtime=runtime)
    assert proc.returncode == 1
    assert "HTTP 403" in proc.stderr and "get on nodes" in proc.stderr
    assert len(forbidden.requests) == 1  # final at once, no retries
    assert not (tmp_path / "b" / "etc").exists()


def test_gives_up_after_wait(built, runtime, tmp_path, api_server):
    server = api_server([(200, node_object())])
    proc = install(tmp_path / "r", built, "--node", "worker-1", "--api-server", server.url,
                   "--wait", "0", runtime=runtime)
    assert proc.returncode == 1 and "gave up" in proc.stderr and "podCIDRs" in proc.stderr


def run_plugin(node, python: str | None, binary: Path, command: str, conf: dict[str, Any],
               pod_path: str, path: str, verbose: bool = False
               ) -> subprocess.CompletedProcess[str]:
    """Run `binary` in `node` with `python` and its shebang's options (-v when
    `verbose`), or, with python None, exec it as a runtime does; PATH is `path`."""
    env = {**node_env(CNI_COMMAND=command, CNI_CONTAINERID="installtest", CNI_NETNS=pod_path,
                      CNI_IFNAME="eth0", CNI_PATH=str(binary.parent)), "PATH": path}
    if python is None:
        argv = [str(binary)]
    else:
        argv = interpreter_argv(python, binary, *(["-v"] if verbose else []))
    return node.run(*argv, check=False, input=json.dumps(conf), env=env)


def test_installed_plugin_wires_a_pod(built, runtime, tmp_path, netns_factory, request):
    """A real ADD and DEL by the installed executables, in a node namespace with
    an underlay (the conflist has a vxlan section, so ADD creates the VXLAN
    device too), run by the bundled runtime installed beside them, with no
    python3 on the PATH (only ip, for `ip netns exec`, and nft, for ipMasq):
    ADD without an agent, through the runtime's interpreter with -v, loading
    nothing from the machine's Python; DEL exec'd through the shebang with an
    agent that hangs up on it (the fallback: undo, then do it in-process).
    --root / with node directories in a short temporary directory: the shebang's
    path is real (and within the 127 bytes the installer allows)."""
    node_root = Path(tempfile.mkdtemp(prefix="skein-node-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(node_root, ignore_errors=True))
    bin_dir = node_root / "opt/cni/bin"
    data_dir = tmp_path / "var/lib/cni/networks"
    proc = install(Path("/"), built, "--bin-dir", str(bin_dir), "--conf-dir",
                   str(node_root / "etc/cni/net.d"), "--pod-cidr", POD_CIDR,
                   "--cluster-cidr", CLUSTER_CIDR, "--ipam-data-dir", str(data_dir),
                   runtime=runtime)
    assert proc.returncode == 0, proc.stderr
    skein = bin_dir / "skein"
    (runtime_dir,) = installed_runtimes(bin_dir)
    python = bin_dir / ".skein" / runtime_dir / "bin/python3"
    assert shebang(skein) == f"#!{python} -IS\n".encode()
    path = tools_path(tmp_path / "tools", "ip", "nft")

    node, underlay, pod = netns_factory("n"), netns_factory("u"), netns_factory("p")
    veth_between(node, "eth0", underlay, "up0")
    node.ip("addr", "add", "10.79.0.2/24", "dev", "eth0")
    underlay.ip("addr", "add", "10.79.0.1/24", "dev", "up0")
    node.ip("route", "add", "default", "via", "10.79.0.1")

    conf = plugin_config(installed_conflist(node_root))
    add = run_plugin(node, str(python), skein, "ADD", conf, pod.path, path, verbose=True)
    assert add.returncode == 0, add.stdout + add.stderr[-3000:]
    result = json.loads(add.stdout)
    archive = Path(os.path.realpath(skein) + ".pyz")
    assert archive.parent.parent == bin_dir / ".skein"
    loaders = assert_self_contained(add.stderr, archive, str(python),
                                    runtime=python.parent.parent)
    # The netlink path (rtnl, no pyroute2), the VXLAN path (foundation.kube.model.node)
    # and netns (ctypes: an extension module and libffi from the runtime) ran.
    assert "foundation.netlink.rtnl" in loaders and "foundation.netlink.mac" in loaders
    assert not any(name.startswith("foundation.kube") for name in loaders)
    assert "ctypes" in loaders and "_ctypes" in loaders
    assert not any(name.startswith("pyroute2") for name in loaders)

    assert result["cniVersion"] == conf["cniVersion"]  # what the conflist asks for
    assert result["ips"][0]["address"].startswith("10.78.1.")
    assert result["ips"][0]["gateway"] == "10.78.1.1"
    assert ping(pod, "10.78.1.1")
    vxlan = json.loads(node.ip("-d", "-j", "link", "show", "skein.1").stdout)[0]
    assert vxlan["linkinfo"]["info_kind"] == "vxlan"
    assert os.listdir(data_dir / "skein")  # the lease, written by the installed skein-ipam

    sock = tmp_path / "run" / "agent.sock"
    sock.parent.mkdir()
    with FakeAgent(str(sock), None) as agent:
        delete = run_plugin(node, None, skein, "DEL", {**conf, "agentSocket": str(sock)},
                            pod.path, path)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert len(agent.requests) == 1
    # The fallback took the attachment's lock, a byte of the one lock file.
    assert sorted(os.listdir(sock.parent)) == ["agent.sock", "attachments.lock"]
    assert "eth0" not in pod.ip("link").stdout
    assert sorted(f for f in os.listdir(data_dir / "skein")
                  if f != "lock" and not f.startswith("last_reserved_ip")) == []
