"""Helpers for the install tests: the scripts under install/, a node's bare
interpreter, and where each module of a run was loaded from."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import yaml

from cni_plugin import fastpath

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "install"
MANIFESTS = INSTALL / "manifests"
EXAMPLES = INSTALL / "examples"
VAGRANT = REPO / "vagrant"
VENDORED = {"foundation", "cni_plugin", "ipam"}
# What a kubelet's CNI exec has: no pyenv, no virtualenv, no PYTHONPATH.
NODE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def load_script(name: str) -> ModuleType:
    """Import install/NAME.py (install/ is not a package) with install/ on
    sys.path, as when it runs as a script (install_cni imports build_zipapps)."""
    if str(INSTALL) not in sys.path:
        sys.path.append(str(INSTALL))
    spec = importlib.util.spec_from_file_location(f"skein_install_{name}", INSTALL / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def node_python() -> str:
    """The `python3` a node's runtime finds on its PATH (Debian's, not this
    test run's interpreter or virtualenv)."""
    found = shutil.which("python3", path=NODE_PATH)
    assert found, f"no python3 on {NODE_PATH}: a node needs one (>= 3.11)"
    version = subprocess.run([found, "-I", "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "True", f"{found} is older than 3.11"
    return found


def node_env(**cni: str) -> dict[str, str]:
    return {"PATH": NODE_PATH, **cni}


def tools_path(directory: Path, *tools: str) -> str:
    """A PATH of one directory holding links to `tools` (found on NODE_PATH) and
    nothing else: no python3 for a plugin to fall back on."""
    directory.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        found = shutil.which(tool, path=NODE_PATH)
        assert found, f"{tool} is not installed: run install/host-deps.sh"
        (directory / tool).symlink_to(found)
    assert shutil.which("python3", path=str(directory)) is None
    return str(directory)


_IMPORT = re.compile(r"^import '([^']+)' # (.*)$")


def module_loaders(verbose_stderr: str) -> dict[str, str]:
    """Module name -> loader, from the `import 'NAME' # LOADER` lines of `python -v`."""
    out = {}
    for line in verbose_stderr.splitlines():
        match = _IMPORT.match(line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def startup_modules(python: str, *options: str) -> set[str]:
    """What the interpreter imports before any program runs (without -S: site
    and the .pth files of the node's own dist-packages): not the program's doing."""
    proc = subprocess.run([python, "-I", *options, "-v", "-c", "pass"], env=node_env(),
                          capture_output=True, text=True, check=True)
    return set(module_loaders(proc.stderr))


def assert_self_contained(verbose_stderr: str, archive: Path, python: str,
                          runtime: Path | None = None) -> dict[str, str]:
    """Every module a run imported, beyond the interpreter's own start-up, is the
    standard library's or was loaded from `archive` by zipimport; returns the
    loaders for further checks.  With `runtime` (a bundled runtime, whose
    interpreter `python` is), every compiled or extension module the run loaded
    came from that runtime or from `archive`: none from the machine's Python."""
    loaders = module_loaders(verbose_stderr)
    if runtime is not None:
        runtime_builder = sys.modules.get("skein_install_runtime") or load_script("runtime")
        stray = runtime_builder.outside(verbose_stderr, [runtime.resolve(), archive.resolve()])
        assert not stray, f"loaded from outside {runtime} and {archive}: {stray}"
    assert loaders, "no import lines: was the interpreter run with -v?"
    stdlib = set(sys.stdlib_module_names)
    baseline = startup_modules(python)
    outside = {}
    for name, loader in loaders.items():
        if name in baseline:
            continue
        top = name.split(".")[0]
        from_archive = f'<zipimporter object "{archive}{os.sep}' in loader
        if top in VENDORED:
            if not from_archive:
                outside[name] = loader
        elif top not in stdlib or "zipimporter" in loader:
            outside[name] = loader
    assert not outside, f"modules not from the standard library or {archive}: {outside}"
    return loaders


class ApiServerLoader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1's base-60 integers (`1234:1` is 74041); the API
    server's parser does not, and neither does this loader."""


ApiServerLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ApiServerLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))


def yaml_objects(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.load_all(f, Loader=ApiServerLoader) if doc is not None]


def interpreter_argv(python: str, executable: Path, *extra: str) -> list[str]:
    """Run `executable` with `python` and the options of its shebang
    (`#!/usr/bin/env -S python3 -I -S`), plus `extra` (e.g. -v)."""
    build_zipapps = sys.modules.get("skein_install_build_zipapps") or load_script("build_zipapps")
    return [python, *build_zipapps.interpreter_options(executable), *extra, str(executable)]


class FakeAgent:
    """A skein-agent stand-in on a unix socket: answers every request with
    `reply` (exit code, stdout), or, with reply None, reads the request and
    hangs up (an agent that died mid-request).  Records the requests."""

    def __init__(self, path: str, reply: tuple[int, str] | None) -> None:
        self.path, self.reply = path, reply
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeAgent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=10)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self.requests.append(fastpath.recv_request(conn))
                    if self.reply is not None:
                        conn.sendall(fastpath.encode_reply(*self.reply))
                except (OSError, ValueError):
                    pass
