#!/usr/bin/env python3
"""Build the node-side CNI executables `skein` and `skein-ipam`.

A runtime (containerd, CRI-O) execs a CNI plugin from the node's /opt/cni/bin
with the node's own `python3`, where nothing of ours is pip-installed.  So the
executables carry every module they import outside the standard library:

- `skein` is a small text launcher plus the archive `skein.pyz` beside it.  The
  launcher is generated here: the source of cni_plugin/fastpath.py, verbatim,
  then a few lines that run `fastpath.run_client` (carried compiled as well,
  see `launcher_source`).  When skein-agent answers,
  that is all that runs: no zip directory read, no `runpy`.  Only without an
  answer does it put `skein.pyz` (found beside the launcher's real path, so a
  symlink to it works) on sys.path and call `cni_plugin.main.in_process`.
  `skein.pyz` holds `cni_plugin` (its agent left out), `ipam` and the parts
  of `foundation` it needs (the CNI protocol, netlink, addresses, files), all
  standard library only;
- `skein-ipam` is a zipapp (it is not on the fast path, where a launcher
  pays off): `ipam` and the same parts of `foundation`.

Both start with `#!/usr/bin/env -S python3 -I -S`: -I ignores PYTHON*
variables and the user's site directory, -S skips `site`, which the archives
do not need (its cost grows with the node's .pth files).  `env -S`
needs coreutils >= 8.30.  The installer (install_cni.py) replaces that line:
by default with the interpreter of the runtime that install/runtime.py builds
and the installer puts beside the executables (`#!/opt/cni/bin/.skein/
runtime-DIGEST/bin/python3 -IS`: the node needs no Python), or with the node's
own python3 (`#!/usr/bin/python3 -IS`, see `node_interpreter`), which also
saves the exec of `env` on every call.

Nothing outside the standard library goes in: a node's python3 has nothing
of ours pip-installed, and a compiled extension could not load into another
machine's interpreter anyway.  Each module also gets a legacy-layout `.pyc`
(unchecked hash, compiled by this interpreter): zipimport loads it on an
interpreter of the same minor version and falls back to the source on any
other.

    python3 install/build_zipapps.py --out DIR [--check]

`--check` runs each built executable with `PYTHON` and the options of its
shebang (CNI_COMMAND=VERSION).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import json
import marshal
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipapp
import zipfile
from dataclasses import dataclass
from pathlib import Path

INTERPRETER = "/usr/bin/env -S python3 -I -S"
SHEBANG = f"#!{INTERPRETER}"
# -IS: a shebang passes everything after the interpreter as one argument.
DIRECT_OPTIONS = "-IS"
# Where a container runtime looks for a plugin's interpreter: the node's PATH
# (containerd's default), so `env` finds the same python3 that
# `node_interpreter` would.
RUNTIME_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# The interpreter inside the node runtime that install/runtime.py builds (and
# install_cni.py installs as ROOT/opt/cni/bin/.skein/runtime-DIGEST/).
RUNTIME_PYTHON = "bin/python3"
FASTPATH = "cni_plugin/fastpath.py"  # inlined into the launchers
# Then the source of foundation.cni.spec.error_json, the one function that
# writes the CNI error JSON (inspect.getsource: the same object, not a copy
# kept by hand), and the launcher's own lines.
ERROR_JSON_HEAD = """

# ---- end of cni_plugin/fastpath.py; foundation/cni/spec.py's error_json follows ----


"""
LAUNCHER_MAIN = """

# ---- the launcher's own lines ----


def _in_process(stdin: bytes, answer: str | None) -> None:
    import os
    import sys

    archive = os.path.realpath(__file__) + ".pyz"
    sys.path.insert(0, archive)
    try:
        from {module} import {function}
    except Exception as exc:  # noqa: BLE001 - the runtime must get JSON, never a traceback
        version = config_string(stdin, b"cniVersion") or {newest!r}
        text = error_json(version, {internal}, "cannot load " + archive,
                          type(exc).__name__ + ": " + str(exc))
        posix.write(1, text.encode() + b"\\n")
        posix._exit(1)
    {function}(stdin, answer)


if __name__ == "__main__":
    run_client(_in_process)
"""


@dataclass(frozen=True)
class App:
    name: str
    main: str  # "module:function"
    # Source files, relative to the directory that holds the top-level packages;
    # a trailing "/*.py" means every module of that package directory.
    sources: tuple[str, ...]
    # "module:function(stdin, answer)" that a generated launcher calls when
    # fastpath.run_client got no answer; None: the executable is the zipapp.
    in_process: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """What the build writes into --out (and a node's /opt/cni/bin gets)."""
        return (self.name, self.name + ".pyz") if self.in_process else (self.name,)


APPS = (
    App("skein", "cni_plugin.main:main",
        ("foundation/*.py", "foundation/cni/*.py",
         "foundation/netlink/*.py", "cni_plugin/*.py", "ipam/*.py"),
        in_process="cni_plugin.main:in_process"),
    App("skein-ipam", "ipam.main:main",
        ("foundation/*.py", "foundation/cni/*.py",
         "foundation/netlink/*.py", "ipam/*.py")),
)


class BuildError(Exception):
    pass


def package_root(package: str) -> Path:
    """The directory that holds top-level package `package` (repo or site-packages)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"package {package!r} is not importable by {sys.executable}")
    return Path(next(iter(spec.submodule_search_locations))).parent


def project_files(sources: tuple[str, ...]) -> list[tuple[Path, str]]:
    """(absolute source path, path inside the archive) for our own modules."""
    out: list[tuple[Path, str]] = []
    for pattern in sources:
        top = pattern.split("/", 1)[0]
        root = package_root(top)
        if pattern.endswith("/*.py"):
            directory = root / pattern[: -len("/*.py")]
            matched = sorted(directory.glob("*.py"))
            if not matched:
                raise BuildError(f"{pattern}: no modules in {directory}")
            out.extend((path, str(path.relative_to(root))) for path in matched)
        else:
            path = root / pattern
            if not path.is_file():
                raise BuildError(f"{pattern}: {path} does not exist")
            out.append((path, pattern))
    return out


def stage(app: App, directory: Path) -> int:
    """Copy and byte-compile everything `app` needs into `directory`; returns the file count."""
    files = project_files(app.sources)
    for src, rel in files:
        dst = directory / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        if rel.endswith(".py"):
            # Legacy layout (module.pyc beside module.py): the only one zipimport reads.
            py_compile.compile(str(dst), cfile=str(dst) + "c", dfile=rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return len(files)


def client_source(app: App) -> str:
    """The Python source `app`'s launcher runs: fastpath.py verbatim, the
    source of foundation.cni.spec.error_json (with which it answers when its
    archive cannot be loaded), then its entry point."""
    # Imported here, not at the top: install/runtime.py imports this module
    # with the machine's bare python3, where Skein is not installed.
    from foundation.cni import skel, spec

    if not app.in_process:
        raise BuildError(f"{app.name} is a zipapp, not a launcher")
    module, function = app.in_process.split(":")
    fastpath = package_root("cni_plugin") / FASTPATH
    return (fastpath.read_text(encoding="utf-8").rstrip("\n") + "\n"
            + ERROR_JSON_HEAD + inspect.getsource(spec.error_json)
            + LAUNCHER_MAIN.format(module=module, function=function,
                                   newest=spec.SUPPORTED_VERSIONS[-1],
                                   internal=skel.ERR_INTERNAL))


def launcher_source(app: App) -> str:
    """The text of `app`'s launcher.

    Compiling the client on every exec would be a sizeable part of a
    fast-path ADD, so the launcher carries it compiled (marshal, as in a
    .pyc; docstrings dropped, -OO style: nothing reads them), written in hex:
    the launcher itself is still parsed on every exec, and a plain literal of
    [0-9a-f] is shorter and parses faster than the escapes of a bytes repr
    (bench/cni_add.py measures the fast path).  An interpreter
    with another bytecode magic than the build's runs the same client from
    the archive instead (`cni_plugin.main:main`, compiled by zipimport)."""
    if not app.in_process:
        raise BuildError(f"{app.name} is a zipapp, not a launcher")
    module = app.in_process.split(":")[0]
    try:
        code = compile(client_source(app), f"{app.name} ({FASTPATH})", "exec", optimize=2)
    except SyntaxError as exc:
        raise BuildError(f"the generated {app.name} launcher does not compile: {exc}") from None
    text = (f"{SHEBANG}\n"
            f"# `{app.name}`, generated by install/build_zipapps.py: do not edit.\n"
            f"# CODE is {FASTPATH} plus the entry point of install/build_zipapps.py's\n"
            f"# LAUNCHER_MAIN, compiled by Python {sys.version_info.major}."
            f"{sys.version_info.minor}; it loads {app.name}.pyz (beside this file's\n"
            "# real path) only when skein-agent gave no answer.\n"
            "import _frozen_importlib_external\n"
            "import marshal\n\n"
            f"MAGIC = {importlib.util.MAGIC_NUMBER!r}\n"
            f"CODE = bytes.fromhex({marshal.dumps(code).hex()!r})\n\n"
            "if _frozen_importlib_external.MAGIC_NUMBER == MAGIC:\n"
            "    exec(marshal.loads(CODE))\n"
            "else:  # another Python: the same client, from the archive\n"
            "    import os\n"
            "    import sys\n\n"
            "    sys.path.insert(0, os.path.realpath(__file__) + \".pyz\")\n"
            f"    from {module} import main\n\n"
            "    main()\n")
    try:
        compile(text, app.name, "exec")
    except SyntaxError as exc:
        raise BuildError(f"the generated {app.name} launcher does not compile: {exc}") from None
    return text


def build(app: App, out_dir: Path, interpreter: str = INTERPRETER) -> Path:
    """Build `app`'s files into `out_dir`; returns the executable's path.
    `interpreter` is the shebang's (default: python3 found through env)."""
    from foundation import files  # see client_source

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / app.name
    with tempfile.TemporaryDirectory(prefix=f"skein-zipapp-{app.name}-") as tmp:
        stage(app, Path(tmp))
        archive = io.BytesIO()
        if app.in_process:
            # No shebang: the archive is not run by itself (though `python3
            # skein.pyz` works, through __main__.py).
            zipapp.create_archive(tmp, archive, main=app.main, compressed=True)
            files.write_atomically(out_dir / f"{app.name}.pyz", archive.getvalue(), 0o644)
            launcher = launcher_source(app).encode()
        else:
            zipapp.create_archive(tmp, archive, interpreter=INTERPRETER, main=app.main,
                                  compressed=True)
            launcher = archive.getvalue()
        files.write_atomically(target, with_interpreter(launcher, interpreter), 0o755)
    return target


def direct_interpreter(python: str) -> str:
    """The shebang interpreter that runs `python` (an absolute path) itself."""
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise BuildError(f"{python!r}: the interpreter must be an absolute path without "
                         "spaces, e.g. /usr/bin/python3")
    return f"{python} {DIRECT_OPTIONS}"


def node_interpreter(root: Path) -> str | None:
    """The shebang interpreter for a node whose filesystem is at `root`: its
    python3 by absolute path (first in RUNTIME_PATH), else None (use `env`).

    Worth it: the kernel then starts python3 directly instead of `env`, which
    looks it up and execs it on every plugin call, as pip's console scripts
    do.  The path is kept as the node names it
    (/usr/bin/python3, not the python3.11 it links to), so a minor upgrade
    of the node's Python does not break it.  Symlinks are followed inside
    `root`, as the node would follow them."""
    for directory in RUNTIME_PATH:
        candidate = directory + "/python3"
        if executable_under(root, candidate):
            return direct_interpreter(candidate)
    return None


def executable_under(root: Path, path: str) -> bool:
    current = root / path.lstrip("/")
    for _ in range(40):  # ELOOP's limit
        if not current.is_symlink():
            return current.is_file() and os.access(current, os.X_OK)
        target = os.readlink(current)
        current = (root / target.lstrip("/")) if target.startswith("/") else (
            current.parent / target)
    return False


def with_interpreter(data: bytes, interpreter: str) -> bytes:
    """A built executable (launcher or zipapp) with its shebang line replaced.

    A zipapp is written anew behind the new line: its entries record their
    offsets from the start of the file, and zipimport, unlike zipfile, does
    not correct them when the line before the archive changes length."""
    if not data.startswith(b"#!"):
        raise BuildError("not a script: no shebang line to replace")
    line = f"#!{interpreter}\n".encode()
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return line + data[data.index(b"\n") + 1:]
    out = io.BytesIO()
    out.write(line)
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
    return out.getvalue()


def interpreter_options(path: Path) -> list[str]:
    """The python3 options of an executable's shebang: `#!/usr/bin/env -S
    python3 -I -S` or `#!/usr/bin/python3 -IS`."""
    with open(path, "rb") as f:
        line = f.readline().decode(errors="replace").split()
    if line[:3] == ["#!/usr/bin/env", "-S", "python3"]:
        return line[3:]
    if len(line) == 2 and line[0].startswith("#!/") and line[1] == DIRECT_OPTIONS:
        return line[1:]
    raise BuildError(f"{path}: unexpected first line {' '.join(line)!r}")


def check(path: Path, python: str) -> str:
    """Run a built plugin with `python` as its shebang would (`-I -S`, empty
    environment but CNI_COMMAND=VERSION); returns its stdout, raises BuildError
    on failure."""
    env = {"CNI_COMMAND": "VERSION", "PATH": os.defpath}
    argv = [python, *interpreter_options(path), str(path)]
    proc = subprocess.run(argv, input='{"cniVersion": "1.1.0"}',
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    try:
        versions = json.loads(proc.stdout)["supportedVersions"]
    except (ValueError, KeyError, TypeError):
        raise BuildError(f"{path} VERSION failed ({proc.returncode}): "
                         f"{proc.stdout.strip()} {proc.stderr.strip()}") from None
    return f"{path.name}: CNI {', '.join(versions)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for the executables")
    parser.add_argument("--check", action="store_true",
                        help="run each executable (VERSION) with PYTHON and its shebang's "
                        "options")
    parser.add_argument("--python", default="python3", help="interpreter for --check")
    args = parser.parse_args(argv)
    try:
        for app in APPS:
            target = build(app, args.out)
            for name in app.files:
                print(f"built {args.out / name} ({(args.out / name).stat().st_size // 1024} KiB)")
            if args.check:
                print(check(target, args.python))
    except BuildError as exc:
        print(f"build_zipapps: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
