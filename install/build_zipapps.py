#!/usr/bin/env python3
"""Build the node-side CNI executables `skein` and `skein-ipam` as zipapps.

A runtime (containerd, CRI-O) execs a CNI plugin from the node's /opt/cni/bin
with the node's own `python3`, where nothing of ours is pip-installed.  So each
executable is a self-contained zip archive (`#!/usr/bin/env python3`, stdlib
`zipapp`) holding every module it imports outside the standard library:

- `skein`: `cni_plugin` (without the lab and the agent), `ipam`, `speaker.model`
  (the VXLAN path derives VTEP MACs with `speaker.model.node`) and pyroute2;
- `skein-ipam`: `ipam` and `cni_plugin` (for the CNI protocol, `skel` and
  `spec`); no pyroute2: its start-up stays small, and an import of it fails.

Third-party packages are copied from the installed distribution (the exact
version the tests ran against; no network) and must be pure Python: a compiled
extension could not load into another machine's interpreter, so the build
refuses one.  Each module also gets a legacy-layout `.pyc` (unchecked hash,
compiled by this interpreter): zipimport loads it on an interpreter of the
same minor version and falls back to the source on any other.

    python3 install/build_zipapps.py --out DIR [--check]

`--check` runs each built executable with `python3 -I` (CNI_COMMAND=VERSION).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipapp
from dataclasses import dataclass
from pathlib import Path

SHEBANG = "/usr/bin/env python3"


@dataclass(frozen=True)
class App:
    name: str
    main: str  # "module:function"
    # Source files, relative to the directory that holds the top-level packages;
    # a trailing "/*.py" means every module of that package directory.
    sources: tuple[str, ...]
    vendored: tuple[str, ...] = ()  # third-party distributions copied whole


APPS = (
    App("skein", "cni_plugin.main:main",
        ("cni_plugin/*.py", "ipam/*.py", "speaker/__init__.py", "speaker/model/*.py"),
        vendored=("pyroute2",)),
    App("skein-ipam", "ipam.main:main",
        ("cni_plugin/*.py", "ipam/*.py")),
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


def distribution_files(name: str) -> list[tuple[Path, str]]:
    """The installed distribution's package modules and licence files; refuses
    compiled extensions and distributions that need others."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(f"{name} is not installed for {sys.executable}") from None
    needs = [r for r in dist.requires or [] if ";" not in r]
    if needs:
        raise BuildError(f"{name} requires {', '.join(needs)}: vendor those too")
    tops = (dist.read_text("top_level.txt") or name).split()
    out: list[tuple[Path, str]] = []
    for file in dist.files or []:
        rel = str(file)
        if rel.startswith("..") or "__pycache__" in file.parts:
            continue
        path = Path(str(file.locate()))
        if any(rel.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            raise BuildError(f"{name} has a compiled extension ({rel}): it cannot be vendored")
        in_package = file.parts[0] in tops
        licence = ".dist-info/" in rel and "LICEN" in file.name.upper()
        if (in_package and rel.endswith(".py")) or licence:
            out.append((path, rel))
    if not any(rel.endswith(".py") for _, rel in out):
        raise BuildError(f"{name}: no modules found in its installed files")
    return out


def stage(app: App, directory: Path) -> int:
    """Copy and byte-compile everything `app` needs into `directory`; returns the file count."""
    files = project_files(app.sources)
    for dist in app.vendored:
        files.extend(distribution_files(dist))
    for src, rel in files:
        dst = directory / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        if rel.endswith(".py"):
            # Legacy layout (module.pyc beside module.py): the only one zipimport reads.
            py_compile.compile(str(dst), cfile=str(dst) + "c", dfile=rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return len(files)


def build(app: App, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / app.name
    with tempfile.TemporaryDirectory(prefix=f"skein-zipapp-{app.name}-") as tmp:
        stage(app, Path(tmp))
        partial = out_dir / f".{app.name}.partial"
        zipapp.create_archive(tmp, partial, interpreter=SHEBANG, main=app.main,
                              compressed=True)
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    return target


def check(path: Path, python: str) -> str:
    """Run a built plugin as a bare interpreter would (`-I`, empty environment
    but CNI_COMMAND=VERSION); returns its stdout, raises BuildError on failure."""
    env = {"CNI_COMMAND": "VERSION", "PATH": os.defpath}
    proc = subprocess.run([python, "-I", str(path)], input='{"cniVersion": "1.1.0"}',
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
                        help="run each executable (VERSION) with PYTHON -I")
    parser.add_argument("--python", default="python3", help="interpreter for --check")
    args = parser.parse_args(argv)
    try:
        for app in APPS:
            target = build(app, args.out)
            print(f"built {target} ({target.stat().st_size // 1024} KiB)")
            if args.check:
                print(check(target, args.python))
    except BuildError as exc:
        print(f"build_zipapps: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
