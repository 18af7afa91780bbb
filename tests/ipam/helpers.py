"""Exec'ing IPAM plugins the way a runtime does: CNI_* environment, config on stdin.

IPAM plugins touch only their data directory, so these calls run in the test's
own namespace; anything that needs interfaces uses netns_factory instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from tests.conftest import PluginResult

# The real console script, not a pyenv shim in front of it: its directory is
# what a runtime would put into CNI_PATH.
SCRIPTS_DIR = sysconfig.get_path("scripts")
SKEIN_IPAM = os.path.join(SCRIPTS_DIR, "skein-ipam")
HOST_LOCAL = "/usr/lib/cni/host-local"


class Call(PluginResult):
    """conftest's PluginResult with the two questions these tests keep asking."""

    def ips(self) -> list[str]:
        assert self.code == 0, self.stdout + self.stderr
        return [ip["address"].split("/")[0] for ip in self.json["ips"]]

    def error(self) -> tuple[int, str, str]:
        assert self.code != 0, self.stdout
        data = self.json
        return data["code"], data["msg"], data.get("details", "")


def cni_env(command: str, container_id: str = "", ifname: str = "eth0", args: str = "",
            extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_PATH": f"{SCRIPTS_DIR}:/usr/lib/cni",
    }
    if container_id:
        env["CNI_CONTAINERID"] = container_id
        # IPAM never enters the namespace; a path that does not exist proves it.
        env["CNI_NETNS"] = "/nonexistent/netns"
    if ifname:
        env["CNI_IFNAME"] = ifname
    if args:
        env["CNI_ARGS"] = args
    env.update(extra or {})
    return env


def call(command: str, config: dict[str, Any] | str, container_id: str = "",
         ifname: str = "eth0", args: str = "", binary: str = SKEIN_IPAM,
         extra_env: dict[str, str] | None = None) -> Call:
    stdin = config if isinstance(config, str) else json.dumps(config)
    proc = subprocess.run([binary], input=stdin, text=True, capture_output=True,
                          env=cni_env(command, container_id, ifname, args, extra_env),
                          timeout=60, check=False)
    return Call(proc.returncode, proc.stdout, proc.stderr)


def spawn(command: str, config: dict[str, Any], container_id: str, ifname: str = "eth0",
          binary: str = SKEIN_IPAM) -> subprocess.Popen[str]:
    """Start a plugin with its config already written to stdin (and stdin closed)."""
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=cni_env(command, container_id, ifname))
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config))
    proc.stdin.close()
    proc.stdin = None  # so that communicate() does not touch the closed pipe
    return proc


def net_config(data_dir: Path, ranges: list[list[dict[str, str]]] | None = None, *,
               version: str = "1.1.0", name: str = "mynet", **ipam: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"type": "skein-ipam", "dataDir": str(data_dir)}
    section["ranges"] = ranges if ranges is not None else [[{"subnet": "10.1.0.0/24"}]]
    section.update(ipam)
    return {"cniVersion": version, "name": name, "ipam": section}


def lease_files(data_dir: Path, name: str = "mynet") -> dict[str, str]:
    """address -> content of every lease file of a network."""
    directory = data_dir / name
    out: dict[str, str] = {}
    if not directory.is_dir():  # the first ADD creates it
        return out
    for path in directory.iterdir():
        if path.name == "lock" or path.name.startswith(("last_reserved_ip.", ".")):
            continue
        out[path.name] = path.read_bytes().decode()
    return out


def unnamed_files_held(pid: int | str, directory: Path | str) -> list[str]:
    """The open files of process `pid` ("self" for this one) that are unnamed
    files (O_TMPFILE) of `directory`: /proc shows them as DIR/#INODE (deleted)."""
    fds = Path(f"/proc/{pid}/fd")
    held = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{directory}/#") and target.endswith("(deleted)"):
            held.append(target)
    return held
