#!/usr/bin/env python3
"""Install Skein's CNI executables, the Python runtime that runs them, and the
node's conflist onto a node.

Run by the `install-cni` init container of the `skein-node` DaemonSet, with the
node's /opt/cni/bin and /etc/cni/net.d mounted under `--root` (hostPath):

    python3 install_cni.py --root /host --bin-src /usr/local/lib/skein/cni \\
        --node "$NODE_NAME"                # pod subnets from the Node object
    python3 install_cni.py --root / --pod-cidr 10.244.1.0/24   # or given directly

1. installs the Python runtime of install/runtime.py (the image's python3 binary,
   the libraries it needs beyond glibc, the standard library modules the
   executables import) into ROOT/opt/cni/bin/.skein/runtime-DIGEST, named by its
   content and complete before it is renamed into place, and checks that each
   executable answers VERSION with it.  The executables' shebang names its
   interpreter as the node sees it (without ROOT: `#!/opt/cni/bin/.skein/
   runtime-DIGEST/bin/python3 -IS`), so the node needs no Python of its own;
   `--python auto|env|PATH` names the node's python3 instead;
2. installs the executables of build_zipapps.py into ROOT/opt/cni/bin so that
   a runtime that execs a plugin meanwhile runs the old version or the new
   one, never half of one or a mix of both:
   - `skein-ipam` (a zipapp) through a temporary file and a rename;
   - `skein` is a launcher that loads `skein.pyz` from beside its real path,
     so the two must change together: both go into a new directory
     ROOT/opt/cni/bin/.skein/skein-DIGEST (named by their content, complete
     before it is renamed into place), and `skein` becomes a relative symlink
     to the launcher in it, replaced by a rename.  The previous version's
     directory stays (a plugin started from it may still be loading modules
     from its archive); older ones are removed, and so is every runtime that
     no remaining version and neither the previous nor the new `skein-ipam`
     names;
3. writes ROOT/etc/cni/net.d/10-skein.conflist for the node's pod subnets with
   `cni_plugin.conflist.node_conflist`, the function skein-agent uses: the node
   turns Ready as soon as this file exists, and the agent later rewrites it with
   the VXLAN device's MTU.

The Node's pod subnets (`spec.podCIDRs`, else `spec.podCIDR`) are read from the
API server with the pod's service account (in-cluster), waiting until the
controller-manager has assigned them: the downward API cannot expose them.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

import build_zipapps  # type: ignore[import-not-found]  # beside this script, in install/

from cni_plugin.config import DEFAULT_VXLAN_DEVICE, DEFAULT_VXLAN_PORT
from cni_plugin.conflist import CONFLIST_NAME, node_conflist, write_atomically
from foundation import files

# Executable -> the archive its launcher loads from beside it (None: a zipapp).
EXECUTABLES = {"skein": "skein.pyz", "skein-ipam": None}
VERSIONS = ".skein"  # ROOT/opt/cni/bin/.skein/NAME-DIGEST/{NAME,NAME.pyz}, runtime-DIGEST/
RUNTIME = "runtime"
RUNTIME_INFO = "runtime.json"  # written by install/runtime.py
BIN_DIR = "/opt/cni/bin"
CONF_DIR = "/etc/cni/net.d"
# Kernels before 5.1 read only the first 127 bytes of a shebang line.
SHEBANG_MAX = 127
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TMP_PREFIX = ".skein-install-"


class InstallError(Exception):
    pass


def write_into(data: bytes, out: BinaryIO) -> None:
    out.write(data)
    out.flush()
    os.fsync(out.fileno())


def write_new_file(data: bytes, dst: Path, mode: int) -> None:
    with open(dst, "xb") as out:
        write_into(data, out)
    os.chmod(dst, mode)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_executable(name: str, data: bytes, bin_dir: Path) -> Path:
    """Write executable `name` into `bin_dir`, replaced atomically (0755)."""
    target = bin_dir / name
    files.write_atomically(target, data, mode=0o755, temp_prefix=TMP_PREFIX)
    return target


def install_missing_plugins(src: Path, bin_dir: Path) -> list[Path]:
    """The reference plugins a runtime needs beside Skein's (containerd 1.6 and 1.7
    run `loopback` for every pod; the conflist chains `portmap`), from `src`, for a
    node that has none: a node's own copies (its CNI plugins package) are kept."""
    installed = []
    if not src.is_dir():
        return installed
    for plugin in sorted(src.iterdir()):
        if plugin.is_file() and not (bin_dir / plugin.name).exists():
            installed.append(install_executable(plugin.name, plugin.read_bytes(), bin_dir))
    return installed


def content_digest(*contents: bytes) -> str:
    digest = hashlib.sha256()
    for data in contents:
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


def link_target(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:  # missing, or a regular file (an older installer's zipapp)
        return None


def install_directory(files: dict[str, tuple[bytes, int]], version: Path) -> Path:
    """Write `files` (relative path -> (content, mode)) as directory `version`:
    in a temporary directory beside it, each file and directory synced, then
    renamed into place.  An existing `version` is this very content already."""
    if version.is_dir():
        return version
    tmp = Path(tempfile.mkdtemp(dir=version.parent, prefix=TMP_PREFIX))
    try:
        directories = {tmp}
        for rel, (data, mode) in sorted(files.items()):
            target = tmp / rel
            if target.parent not in directories:
                target.parent.mkdir(parents=True, exist_ok=True)
                directories.update([target.parent, *target.parent.parents])
            write_new_file(data, target, mode)
        for directory in sorted(d for d in directories if d.is_relative_to(tmp)):
            os.chmod(directory, 0o755)
            fsync_dir(directory)
        os.rename(tmp, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(version.parent)
    return version


def install_version(name: str, launcher: bytes, archive: Path, bin_dir: Path) -> Path:
    """Launcher `name` and the `archive` it loads as one version directory
    bin_dir/.skein/NAME-DIGEST."""
    versions = bin_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    archive_data = archive.read_bytes()
    version = versions / f"{name}-{content_digest(launcher, archive_data)}"
    return install_directory({archive.name: (archive_data, 0o644), name: (launcher, 0o755)},
                             version)


def switch_link(name: str, version: Path, bin_dir: Path) -> Path:
    """bin_dir/NAME becomes a relative symlink to the launcher in `version`,
    switched by a rename; the versions but this one and the previous one go."""
    versions = bin_dir / VERSIONS
    target = bin_dir / name
    previous = link_target(target)
    tmp_link = bin_dir / f"{TMP_PREFIX}{name}-{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    try:
        os.symlink(os.path.join(VERSIONS, version.name, name), tmp_link)
        os.replace(tmp_link, target)
    except BaseException:
        Path(tmp_link).unlink(missing_ok=True)
        raise
    fsync_dir(bin_dir)
    keep = {version.name}
    if previous is not None:
        keep.add(Path(previous).parent.name)
    for old in versions.glob(f"{name}-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return target


def install_launcher(name: str, launcher: bytes, archive: Path, bin_dir: Path) -> Path:
    """Install launcher `name` and the `archive` it loads as one version: both
    in a directory of their own under bin_dir/.skein, then bin_dir/NAME as a
    relative symlink to the launcher, switched by a rename."""
    return switch_link(name, install_version(name, launcher, archive, bin_dir), bin_dir)


def runtime_files(src: Path) -> dict[str, tuple[bytes, int]]:
    """The runtime directory `src` (install/runtime.py --out) as relative path ->
    (content, mode): 0755 for what is executable (the interpreter, the shared
    objects), 0644 for the rest."""
    files: dict[str, tuple[bytes, int]] = {}
    for directory, dirs, names in os.walk(src):
        dirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                raise InstallError(f"{path}: the runtime holds regular files only")
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            files[str(path.relative_to(src))] = (path.read_bytes(), mode)
    return files


def runtime_version(src: Path) -> tuple[str, dict[str, tuple[bytes, int]]]:
    """The runtime `src` as (runtime-DIGEST, its files); DIGEST covers every path,
    mode and content."""
    files = runtime_files(src)
    if build_zipapps.RUNTIME_PYTHON not in files:
        raise InstallError(f"{src / build_zipapps.RUNTIME_PYTHON} not found "
                           "(build the runtime with install/runtime.py)")
    digest = content_digest(*(f"{rel}\0{mode:o}".encode() + data
                              for rel, (data, mode) in sorted(files.items())))
    return f"{RUNTIME}-{digest}", files


def install_runtime(src: Path, bin_dir: Path) -> Path:
    """The runtime `src` as bin_dir/.skein/runtime-DIGEST."""
    name, files = runtime_version(src)
    versions = bin_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    return install_directory(files, versions / name)


_RUNTIME_IN_SHEBANG = re.compile(rb"^#!\S*/" + re.escape(VERSIONS.encode())
                                 + rb"/(" + RUNTIME.encode() + rb"-[0-9a-f]+)/")


def runtime_of(executable: Path) -> str | None:
    """The runtime directory (runtime-DIGEST) that `executable`'s shebang names."""
    try:
        with open(executable, "rb") as f:
            match = _RUNTIME_IN_SHEBANG.match(f.readline())
    except OSError:
        return None
    return match.group(1).decode() if match else None


def prune_runtimes(bin_dir: Path, keep: set[str]) -> None:
    """Remove the runtimes that neither `keep` nor a remaining launcher version names."""
    versions = bin_dir / VERSIONS
    for launcher in EXECUTABLES:
        for version in versions.glob(f"{launcher}-*"):
            name = runtime_of(version / launcher)
            if name:
                keep.add(name)
    for old in versions.glob(f"{RUNTIME}-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(bin_dir: Path) -> None:
    """Temporary files and directories left by an installer killed halfway."""
    for directory in (bin_dir, bin_dir / VERSIONS):
        if directory.is_dir():
            for leftover in directory.glob(TMP_PREFIX + "*"):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


def node_pod_cidrs(node: dict[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return [str(ipaddress.ip_network(c)) for c in cidrs]


def in_cluster_api() -> tuple[str, str, str]:
    """(API server URL, token file, CA file) of the pod's service account."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise InstallError("KUBERNETES_SERVICE_HOST is not set: not running in a pod; "
                           "pass --api-server or --pod-cidr")
    if ":" in host:
        host = f"[{host}]"
    return (f"https://{host}:{port}", str(SERVICE_ACCOUNT / "token"),
            str(SERVICE_ACCOUNT / "ca.crt"))


def fetch_node(api_server: str, node: str, token_file: str | None,
               ca_file: str | None) -> dict[str, Any]:
    url = f"{api_server.rstrip('/')}/api/v1/nodes/{urllib.parse.quote(node, safe='')}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token_file:
        # Re-read on every attempt: projected tokens are rotated.
        token = Path(token_file).read_text(encoding="utf-8").strip()
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        data: dict[str, Any] = json.load(response)
        return data


def wait_for_pod_cidrs(api_server: str, node: str, token_file: str | None,
                       ca_file: str | None, timeout: float, interval: float = 2.0
                       ) -> list[str]:
    """The Node's pod subnets, retrying while the Node or its podCIDRs are missing
    or the API server is unreachable; authorisation errors are final."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            cidrs = node_pod_cidrs(fetch_node(api_server, node, token_file, ca_file))
            if cidrs:
                return cidrs
            last = f"Node {node} has no spec.podCIDRs yet"
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise InstallError(f"GET node {node}: HTTP {exc.code}: the service account "
                                   "needs get on nodes (ClusterRole skein-agent)") from None
            last = f"GET node {node}: HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = f"GET node {node}: {exc}"
        if time.monotonic() >= deadline:
            raise InstallError(f"gave up after {timeout:.0f} s: {last}")
        print(f"install-cni: waiting: {last}", file=sys.stderr, flush=True)
        time.sleep(interval)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="install_cni.py",
                                description="install skein (with skein.pyz), skein-ipam and the "
                                "node's conflist")
    p.add_argument("--root", default="/", type=Path,
                   help="where the node's filesystem is mounted (default /)")
    p.add_argument("--bin-src", type=Path, default=Path("/usr/local/lib/skein/cni"),
                   help="directory holding the built skein, skein.pyz and skein-ipam")
    p.add_argument("--runtime-src", type=Path, default=Path("/usr/local/lib/skein/runtime"),
                   help="the Python runtime built by install/runtime.py (for --python "
                   "bundled)")
    p.add_argument("--bin-dir", default=BIN_DIR,
                   help="the node's CNI bin dir as the node sees it (default /opt/cni/bin); "
                   "the files go to ROOT/BIN_DIR, the shebang names BIN_DIR")
    p.add_argument("--conf-dir", default=CONF_DIR,
                   help="the node's CNI config dir (default /etc/cni/net.d): the conflist "
                   "goes to ROOT/CONF_DIR")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pod-cidr", action="append", help="the node's pod subnet (repeatable)")
    source.add_argument("--node", help="read the pod subnets from this Node object")
    p.add_argument("--api-server", help="API server URL (default: in-cluster)")
    p.add_argument("--token-file", help="bearer token file (default: in-cluster)")
    p.add_argument("--ca-file", help="CA bundle for the API server (default: in-cluster)")
    p.add_argument("--wait", type=float, default=600.0,
                   help="seconds to wait for the Node's podCIDRs (default 600)")
    p.add_argument("--cluster-cidr", action="append", default=[],
                   help="the cluster's pod network (repeatable): not masqueraded "
                   "(default 10.244.0.0/16, as skein-agent)")
    p.add_argument("--ipam-data-dir", default="/var/lib/cni/networks")
    p.add_argument("--vni", type=int, default=1)
    p.add_argument("--vxlan-port", type=int, default=DEFAULT_VXLAN_PORT)
    p.add_argument("--vxlan-device", default=DEFAULT_VXLAN_DEVICE)
    p.add_argument("--underlay-device", default="",
                   help="the node's uplink for VXLAN (default: the device with the default "
                   "route); empty means the default")
    p.add_argument("--no-ip-masq", dest="ip_masq", action="store_false",
                   help="do not masquerade traffic leaving the cluster")
    p.add_argument("--python", default="bundled",
                   help="what the executables' shebang runs: 'bundled' (default: the "
                   "runtime of --runtime-src, installed beside them; the node needs no "
                   "Python), or the node's python3: 'auto' (the first python3 on the "
                   "runtime's PATH under ROOT, by absolute path; env when none is "
                   "visible), 'env' (#!/usr/bin/env -S python3), or an absolute path as "
                   "the node sees it")
    p.add_argument("--plugins-src", type=Path,
                   default=Path("/usr/local/lib/skein/cni-plugins"),
                   help="reference CNI plugins (loopback, portmap) installed where the node "
                   "lacks them")
    p.add_argument("--agent-socket", default="/run/skein/agent.sock",
                   help="skein-agent's fast path socket, named in the conflist so pods "
                   "use the agent from the start ('' for none; without the agent "
                   "skein works in-process)")
    return p


def shebang_interpreter(choice: str, root: Path) -> str:
    """What the executables' shebang runs, from --python auto|env|PATH (see
    build_parser; `bundled` is `bundled_interpreter`)."""
    if choice == "env":
        return build_zipapps.INTERPRETER
    if choice == "auto":
        return build_zipapps.node_interpreter(root) or build_zipapps.INTERPRETER
    if not build_zipapps.executable_under(root, choice):
        raise InstallError(f"--python {choice}: no executable at {root / choice.lstrip('/')}; "
                           "name the node's python3 as the node sees it, or use --python auto")
    try:
        return build_zipapps.direct_interpreter(choice)
    except build_zipapps.BuildError as exc:
        raise InstallError(f"--python: {exc}") from None


def pod_cidrs(args: argparse.Namespace) -> list[str]:
    if args.pod_cidr:
        try:
            return [str(ipaddress.ip_network(c)) for c in args.pod_cidr]
        except ValueError as exc:
            raise InstallError(f"--pod-cidr: {exc}") from None
    if args.api_server:
        api, token, ca = args.api_server, args.token_file, args.ca_file
    else:
        api, token, ca = in_cluster_api()
        token, ca = args.token_file or token, args.ca_file or ca
    return wait_for_pod_cidrs(api, args.node, token, ca, args.wait)


def node_dir(option: str, value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise InstallError(f"{option} {value!r}: an absolute path without spaces, "
                           "as the node sees it")
    return "/" + value.strip("/")


def checked_interpreter(interpreter: str) -> str:
    if len(f"#!{interpreter}") > SHEBANG_MAX:
        raise InstallError(f"#!{interpreter}: longer than {SHEBANG_MAX} bytes, which "
                           "kernels before 5.1 cut off; use a shorter --bin-dir")
    return interpreter


def bundled_interpreter(args: argparse.Namespace, bin_dir: Path, node_bin: str
                        ) -> tuple[str, str]:
    """Install the runtime and check the executables with the installed copy (a
    noexec mount or a C library it cannot use shows here); returns (the
    shebang's interpreter, the runtime's directory name)."""
    name, files = runtime_version(args.runtime_src)
    interpreter = checked_interpreter(build_zipapps.direct_interpreter(
        f"{node_bin}/{VERSIONS}/{name}/{build_zipapps.RUNTIME_PYTHON}"))
    (bin_dir / VERSIONS).mkdir(parents=True, exist_ok=True)
    runtime = install_directory(files, bin_dir / VERSIONS / name)
    size = sum(len(data) for data, _ in files.values())
    try:
        info = json.loads(files[RUNTIME_INFO][0])
        needs = f"; Python {info['python']}, needs glibc >= {info['glibc']} at " \
                f"{info['interpreter']}"
    except (KeyError, ValueError):
        needs = ""
    print(f"install-cni: runtime {runtime} ({size / 2**20:.1f} MiB{needs})", flush=True)
    for executable in EXECUTABLES:
        try:
            build_zipapps.check(args.bin_src / executable,
                                str(runtime / build_zipapps.RUNTIME_PYTHON))
        except build_zipapps.BuildError as exc:
            raise InstallError(f"the runtime cannot run {executable}: {exc}") from None
    return interpreter, runtime.name


def run(args: argparse.Namespace) -> None:
    sources = [args.bin_src / name for name in EXECUTABLES]
    archives = [args.bin_src / a for a in EXECUTABLES.values() if a]
    missing = [str(s) for s in sources + archives if not s.is_file()]
    if missing:
        raise InstallError(f"not found: {', '.join(missing)} (build them with build_zipapps.py)")
    if args.python == "bundled" and not (args.runtime_src / build_zipapps.RUNTIME_PYTHON
                                         ).is_file():
        raise InstallError(f"not found: {args.runtime_src / build_zipapps.RUNTIME_PYTHON} "
                           "(build the runtime with install/runtime.py, or name the "
                           "node's python3 with --python)")
    node_bin = node_dir("--bin-dir", args.bin_dir)
    node_conf = node_dir("--conf-dir", args.conf_dir)
    try:
        cluster = [str(ipaddress.ip_network(c)) for c in args.cluster_cidr or ["10.244.0.0/16"]]
    except ValueError as exc:
        raise InstallError(f"--cluster-cidr: {exc}") from None
    cidrs = pod_cidrs(args)
    bin_dir = args.root / node_bin.lstrip("/")
    remove_stale_temporaries(bin_dir)
    keep_runtimes = {r for r in [runtime_of(bin_dir / "skein-ipam")] if r}
    if args.python == "bundled":
        interpreter, runtime = bundled_interpreter(args, bin_dir, node_bin)
        keep_runtimes.add(runtime)
    else:
        interpreter = checked_interpreter(shebang_interpreter(args.python, args.root))
    print(f"install-cni: the executables start with #!{interpreter}", flush=True)
    for src in sources:
        archive = EXECUTABLES[src.name]
        try:
            data = build_zipapps.with_interpreter(src.read_bytes(), interpreter)
        except build_zipapps.BuildError as exc:
            raise InstallError(f"{src}: {exc}") from None
        if archive:
            installed = install_launcher(src.name, data, args.bin_src / archive, bin_dir)
            print(f"install-cni: installed {installed} -> {os.readlink(installed)}",
                  flush=True)
        else:
            print(f"install-cni: installed {install_executable(src.name, data, bin_dir)}",
                  flush=True)
    prune_runtimes(bin_dir, keep_runtimes)
    for plugin in install_missing_plugins(args.plugins_src, bin_dir):
        print(f"install-cni: installed {plugin} (the node had none)", flush=True)
    vxlan = {"vni": args.vni, "port": args.vxlan_port, "device": args.vxlan_device}
    if args.underlay_device:
        vxlan["underlayDevice"] = args.underlay_device
    conflist = node_conflist(cidrs, data_dir=args.ipam_data_dir, cluster_cidrs=cluster,
                             vxlan=vxlan, ip_masq=args.ip_masq,
                             agent_socket=args.agent_socket or None)
    path = args.root / node_conf.lstrip("/") / CONFLIST_NAME
    changed = write_atomically(str(path), conflist)
    print(f"install-cni: {'wrote' if changed else 'unchanged'} {path} "
          f"(pod subnets {', '.join(cidrs)})", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except InstallError as exc:
        print(f"install-cni: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
