#!/usr/bin/env python3
"""Install Skein's CNI executables and the node's conflist onto a node.

Run by the `install-cni` init container of the `skein-node` DaemonSet, with the
node's /opt/cni/bin and /etc/cni/net.d mounted under `--root` (hostPath):

    python3 install_cni.py --root /host --bin-src /usr/local/lib/skein/cni \\
        --node "$NODE_NAME"                # pod subnets from the Node object
    python3 install_cni.py --root / --pod-cidr 10.244.1.0/24   # or given directly

1. installs the executables of build_zipapps.py into ROOT/opt/cni/bin so that
   a runtime that execs a plugin meanwhile runs the old version or the new
   one, never half of one or a mix of both:
   - `skein-ipam` (a zipapp) through a temporary file and a rename;
   - `skein` is a launcher that loads `skein.pyz` from beside its real path,
     so the two must change together: both go into a new directory
     ROOT/opt/cni/bin/.skein/skein-DIGEST (named by their content, complete
     before it is renamed into place), and `skein` becomes a relative symlink
     to the launcher in it, replaced by a rename.  The previous version's
     directory stays (a plugin started from it may still be loading modules
     from its archive); older ones are removed;
2. writes ROOT/etc/cni/net.d/10-skein.conflist for the node's pod subnets with
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

# Executable -> the archive its launcher loads from beside it (None: a zipapp).
EXECUTABLES = {"skein": "skein.pyz", "skein-ipam": None}
VERSIONS = ".skein"  # ROOT/opt/cni/bin/.skein/NAME-DIGEST/{NAME,NAME.pyz}
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TMP_PREFIX = ".skein-install-"


class InstallError(Exception):
    pass


def write_into(data: bytes, out: BinaryIO) -> None:
    out.write(data)
    out.flush()
    os.fsync(out.fileno())


def write_synced(data: bytes, dst: Path, mode: int) -> None:
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
    """Write executable `name` into `bin_dir`: temp file, fsync, 0755, rename."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / name
    fd, tmp = tempfile.mkstemp(dir=bin_dir, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            write_into(data, out)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


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


def install_launcher(name: str, launcher: bytes, archive: Path, bin_dir: Path) -> Path:
    """Install launcher `name` and the `archive` it loads as one version: both
    in a directory of their own under bin_dir/.skein, then bin_dir/NAME as a
    relative symlink to the launcher, switched by a rename."""
    versions = bin_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    archive_data = archive.read_bytes()
    version = versions / f"{name}-{content_digest(launcher, archive_data)}"
    if not version.is_dir():  # else this very version is installed already
        tmp = Path(tempfile.mkdtemp(dir=versions, prefix=TMP_PREFIX))
        try:
            write_synced(archive_data, tmp / archive.name, 0o644)
            write_synced(launcher, tmp / name, 0o755)
            os.chmod(tmp, 0o755)
            fsync_dir(tmp)
            os.rename(tmp, version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(versions)
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
    p.add_argument("--python", default="auto",
                   help="the node's python3 for the executables' shebang: 'auto' (default: "
                   "the first python3 on the runtime's PATH under ROOT, by absolute path, "
                   "which saves an exec of env per call; env when none is visible), 'env' "
                   "(#!/usr/bin/env -S python3), or an absolute path as the node sees it")
    p.add_argument("--agent-socket", default="/run/skein/agent.sock",
                   help="skein-agent's fast path socket, named in the conflist so pods "
                   "use the agent from the start ('' for none; without the agent "
                   "skein works in-process)")
    return p


def shebang_interpreter(choice: str, root: Path) -> str:
    """What the executables' shebang runs, from --python (see build_parser)."""
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


def run(args: argparse.Namespace) -> None:
    sources = [args.bin_src / name for name in EXECUTABLES]
    archives = [args.bin_src / a for a in EXECUTABLES.values() if a]
    missing = [str(s) for s in sources + archives if not s.is_file()]
    if missing:
        raise InstallError(f"not found: {', '.join(missing)} (build them with build_zipapps.py)")
    try:
        cluster = [str(ipaddress.ip_network(c)) for c in args.cluster_cidr or ["10.244.0.0/16"]]
    except ValueError as exc:
        raise InstallError(f"--cluster-cidr: {exc}") from None
    cidrs = pod_cidrs(args)
    interpreter = shebang_interpreter(args.python, args.root)
    print(f"install-cni: the executables start with #!{interpreter}", flush=True)
    bin_dir = args.root / "opt/cni/bin"
    remove_stale_temporaries(bin_dir)
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
    vxlan = {"vni": args.vni, "port": args.vxlan_port, "device": args.vxlan_device}
    if args.underlay_device:
        vxlan["underlayDevice"] = args.underlay_device
    conflist = node_conflist(cidrs, data_dir=args.ipam_data_dir, cluster_cidrs=cluster,
                             vxlan=vxlan, ip_masq=args.ip_masq,
                             agent_socket=args.agent_socket or None)
    path = args.root / "etc/cni/net.d" / CONFLIST_NAME
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
