#!/usr/bin/env python3
"""Build the Python runtime that runs Skein's CNI executables on a node without Python.

kind's node image, Flatcar, Talos and Bottlerocket have no python3, so the image
carries one for `skein` and `skein-ipam`, which install_cni.py copies beside them
(ROOT/opt/cni/bin/.skein/runtime-DIGEST/) and names in their shebang.  It is made
from the interpreter that runs this script (the image's Debian python3):

    python3 install/runtime.py --cni DIR --out DIR

    bin/python3                      that interpreter's binary, RPATH $ORIGIN/../lib
    lib/libz.so.1, ...               the shared libraries it and the extension modules
                                     below need that glibc does not provide
    lib/python3.X/**.pyc             the standard library modules the executables
                                     import, compiled (unchecked hash), no sources
    lib/python3.X/lib-dynload/*.so   their extension modules, RPATH $ORIGIN/../..
    runtime.json                     what went in; the glibc version and the loader
                                     the node must have (from the ELF files' needs)

CPython finds its prefix from its binary's location: lib/python3.X/os.pyc is the
landmark, lib/python3.X/lib-dynload the exec_prefix's, so `bin/python3 -I -S`
needs no environment and no file outside the directory but glibc's.

Which modules: the executables' own imports (module level or inside functions,
read from the archives' sources) and everything importing those pulls in, as
measured by importing them with this interpreter; what running the executables
imports (VERSION, and skein-ipam ADD and DEL on a scratch directory); the
interpreter's start-up modules; and all of `encodings` (a node's locale picks the
codec of stdio; 0.8 MB).  Left out on purpose: EXCLUDED.

The result is checked: each executable answers VERSION with `bin/python3 -I -S`
and an empty environment, loading no module and no library from outside the
runtime, the archives and glibc.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import py_compile
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import build_zipapps  # type: ignore[import-not-found]  # beside this script, in install/

PYTHON = build_zipapps.RUNTIME_PYTHON  # bin/python3
INFO = "runtime.json"  # what went in, and what the runtime needs from the node's libc
OUR_PACKAGES = frozenset({"foundation", "cni_plugin", "ipam"})
# Imported by the closure but not wanted: what breaks without them is handled by
# the standard library itself.
EXCLUDED = {
    # hashlib falls back to the interpreter's built-in _sha256, _md5, _blake2, _sha3
    # (all built in Debian's binary); this one would bring OpenSSL's libcrypto (4.5 MB).
    "_hashlib": "hashlib uses the built-in hashes instead of OpenSSL's",
    "_ssl": "nothing of the executables speaks TLS",
    # shutil (through tempfile) only probes for them, for its archive formats; with
    # them would come libbz2 and liblzma.
    "bz2": "shutil probes for it", "_bz2": "shutil probes for it",
    "lzma": "shutil probes for it", "_lzma": "shutil probes for it",
    "_compression": "only bz2 and lzma use it",
}
# Packages carried whole whatever is measured, but for the modules that need an
# extension module (the CJK codecs, bz2_codec).
PACKAGES = ("encodings",)
# Provided by the node's C library (glibc 2.34+ merged libpthread, libdl, librt, libutil
# into libc.so.6; the names stay for binaries linked before).
GLIBC = re.compile(r"^(ld-linux[-\w.]*\.so\.\d|libc\.so\.6|libm\.so\.6|libmvec\.so\.1|"
                   r"libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libutil\.so\.1|"
                   r"libresolv\.so\.2|libanl\.so\.1|libnss_\w+\.so\.2|linux-vdso\.so\.1)$")
_LDD = re.compile(r"^\s*(\S+)\s*=>\s*(\S+)\s*\(0x[0-9a-f]+\)\s*$")
_CODE = re.compile(r"^# code object from '(.+)'$")
_EXT = re.compile(r"^# extension module '[^']+' loaded from '(.+)'$")


class RuntimeBuildError(Exception):
    pass


def stdlib_dirs() -> tuple[Path, Path]:
    """This interpreter's standard library and its lib-dynload."""
    stdlib = Path(os.__file__).resolve().parent
    dynload = Path(sysconfig.get_path("platstdlib")) / "lib-dynload"
    if not dynload.is_dir():
        dynload = next((Path(p) for p in sys.path if p.endswith("lib-dynload")), dynload)
    return stdlib, dynload


def version_dir() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def extract(cni: Path, into: Path) -> list[Path]:
    """The archives of the executables in `cni` (skein.pyz, the skein-ipam zipapp),
    extracted into `into`; returns the directories."""
    out = []
    for archive in sorted(cni.iterdir()):
        if archive.is_file() and zipfile.is_zipfile(archive):
            target = into / archive.name
            with zipfile.ZipFile(archive) as z:
                z.extractall(target)
            out.append(target)
    if not out:
        raise RuntimeBuildError(f"{cni}: no archives (build them with build_zipapps.py)")
    return out


def imported_names(sources: Iterable[Path]) -> set[str]:
    """Every absolute import in `sources`, at module level or not; `from A import B`
    gives A and A.B (B may be a submodule)."""
    names: set[str] = set()
    for path in sources:
        tree = ast.parse(path.read_bytes(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] not in OUR_PACKAGES}


CLOSURE = """
import importlib, json, sys
request = json.load(sys.stdin)
for name in request["required"]:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # `from A import B` where B is not a module, or a module of another OS
dropped = set()
for name in request["optional"]:
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    new = set(sys.modules) - before
    if any((getattr(sys.modules[n], "__file__", None) or "").endswith(".so") for n in new):
        dropped |= new
print(json.dumps({n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())
                  if n not in dropped}))
"""


def import_closure(required: Iterable[str], optional: Iterable[str] = ()
                   ) -> dict[str, str | None]:
    """Module -> file of everything importing `required` loads, in a fresh `-I -S`
    interpreter (this one), plus the `optional` modules that need no extension
    module beyond those."""
    request = {"required": sorted(required), "optional": sorted(optional)}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", CLOSURE],
                          input=json.dumps(request), capture_output=True, text=True,
                          env={"PATH": os.defpath}, check=False)
    if proc.returncode != 0:
        raise RuntimeBuildError("importing the executables' modules failed: "
                                f"{proc.stderr[-500:]}")
    modules: dict[str, str | None] = json.loads(proc.stdout)
    return modules


def verbose_imports(stderr: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^import '([^']+)' #", stderr, re.M)}


def observed_imports(python: str, cni: Path) -> set[str]:
    """What running the executables imports: VERSION for each, and skein-ipam ADD
    and DEL of a lease in a scratch directory."""
    names: set[str] = set()
    env = {"PATH": os.defpath, "CNI_COMMAND": "VERSION"}
    runs: list[tuple[Path, dict[str, str], str]] = [
        (cni / name, env, "") for name in ("skein", "skein-ipam")]
    with tempfile.TemporaryDirectory(prefix="skein-runtime-") as tmp:
        conf = json.dumps({"cniVersion": "1.0.0", "name": "runtime", "type": "skein",
                           "ipam": {"type": "skein-ipam", "dataDir": tmp,
                                    "ranges": [[{"subnet": "10.255.0.0/30"}]]}})
        cni_env = {"PATH": os.defpath, "CNI_CONTAINERID": "runtime", "CNI_IFNAME": "eth0",
                   "CNI_NETNS": "/var/run/netns/none", "CNI_PATH": str(cni)}
        runs += [(cni / "skein-ipam", {**cni_env, "CNI_COMMAND": c}, conf)
                 for c in ("ADD", "DEL")]
        for executable, run_env, stdin in runs:
            argv = [python, *build_zipapps.interpreter_options(executable), "-v",
                    str(executable)]
            proc = subprocess.run(argv, input=stdin, env=run_env, capture_output=True,
                                  text=True, timeout=60, check=False)
            if proc.returncode != 0:
                raise RuntimeBuildError(f"{executable.name} {run_env['CNI_COMMAND']} failed "
                                    f"({proc.returncode}): {proc.stdout.strip()[-300:]}")
            names |= verbose_imports(proc.stderr)
    return {n for n in names if n.split(".")[0] not in OUR_PACKAGES}


def select_modules(cni: Path) -> dict[str, Path]:
    """Module name -> its file in this interpreter's standard library (.py or .so)."""
    stdlib, dynload = stdlib_dirs()
    with tempfile.TemporaryDirectory(prefix="skein-runtime-") as tmp:
        roots = extract(cni, Path(tmp))
        names = imported_names(p for root in roots for p in root.rglob("*.py"))
    names |= observed_imports(sys.executable, cni)
    names |= set(PACKAGES)
    extra = {f"{package}.{p.stem}" for package in PACKAGES
             for p in (stdlib / package).glob("*.py") if p.stem != "__init__"}
    closure = import_closure(names, extra - names)
    out: dict[str, Path] = {}
    for name, file in closure.items():
        if file is None or name in EXCLUDED or name.split(".")[0] in OUR_PACKAGES:
            continue
        path = Path(file).resolve()
        if path.is_relative_to(stdlib) and "site-packages" not in path.parts \
                and "dist-packages" not in path.parts:
            out[name] = path
    missing = [n for n in ("os", "encodings", "encodings.utf_8") if n not in out]
    if missing:
        raise RuntimeBuildError(f"{', '.join(missing)} not found in {stdlib}")
    return out


def needed_libraries(elf: Path) -> dict[str, Path]:
    """SONAME -> file of every shared library `elf` needs (transitively) that glibc
    does not provide, as the loader resolves them here (ldd)."""
    proc = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "not a dynamic executable" not in proc.stdout + proc.stderr:
        raise RuntimeBuildError(f"ldd {elf}: {proc.stderr.strip() or proc.stdout.strip()}")
    out: dict[str, Path] = {}
    for line in proc.stdout.splitlines():
        match = _LDD.match(line)
        if "not found" in line:
            raise RuntimeBuildError(f"ldd {elf}: {line.strip()}")
        if match and not GLIBC.match(match.group(1)):
            out[match.group(1)] = Path(match.group(2)).resolve()
    return out


def elf_needs(path: Path) -> tuple[str | None, set[tuple[str, str]]]:
    """The program interpreter (PT_INTERP) of a 64-bit little-endian ELF file and
    its versioned needs: (library, version) pairs from .gnu.version_r, as
    `objdump -T` shows them (libc.so.6, GLIBC_2.34)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":
        raise RuntimeBuildError(f"{path}: not a 64-bit little-endian ELF file")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    interpreter = None
    for i in range(phnum):
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if kind == 3:  # PT_INTERP
            interpreter = data[offset:offset + size].rstrip(b"\0").decode()
    # (name, type, flags, addr, offset, size, link, info, align, entsize)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    needs: set[tuple[str, str]] = set()
    for section in sections:
        if section[1] != 0x6FFFFFFE:  # SHT_GNU_verneed
            continue
        strings = sections[section[6]][4]

        def string(offset: int, base: int = strings) -> str:
            return data[base + offset:data.index(b"\0", base + offset)].decode()

        entry = section[4]
        for _ in range(section[7]):
            _, count, file, aux, following = struct.unpack_from("<HHIII", data, entry)
            item = entry + aux
            for _ in range(count):
                _, _, _, name, step = struct.unpack_from("<IHHII", data, item)
                needs.add((string(file), string(name)))
                item += step
            entry += following
    return interpreter, needs


def glibc_requirement(elves: Iterable[Path]) -> dict[str, str]:
    """The newest GLIBC_ symbol version `elves` need, which of them needs it, and
    their program interpreter: what the runtime asks of a node's C library."""
    newest: tuple[tuple[int, ...], str, str] = ((0,), "", "")
    interpreters = set()
    for elf in elves:
        interpreter, needs = elf_needs(elf)
        if interpreter:
            interpreters.add(interpreter)
        for _, version in needs:
            if version.startswith("GLIBC_2"):
                number = tuple(int(n) for n in version[len("GLIBC_"):].split("."))
                newest = max(newest, (number, version, elf.name))
    return {"glibc": ".".join(map(str, newest[0])), "needed_by": newest[2],
            "interpreter": ", ".join(sorted(interpreters))}


def set_rpath(elf: Path, rpath: str) -> None:
    """DT_RPATH, not RUNPATH: searched before LD_LIBRARY_PATH, and for the
    dependencies of the libraries too."""
    patchelf = shutil.which("patchelf")
    if patchelf is None:
        raise RuntimeBuildError("patchelf is not installed (apt-get install patchelf)")
    proc = subprocess.run([patchelf, "--force-rpath", "--set-rpath", rpath, str(elf)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeBuildError(f"patchelf {elf}: {proc.stderr.strip()}")


def build(cni: Path, out: Path) -> dict[str, Any]:
    """Build the runtime into `out` (replaced); returns what runtime.json says."""
    stdlib, dynload = stdlib_dirs()
    modules = select_modules(cni)
    if out.exists():
        shutil.rmtree(out)
    lib = out / "lib" / version_dir()
    (lib / "lib-dynload").mkdir(parents=True)
    (out / "bin").mkdir()
    python = out / PYTHON
    shutil.copyfile(Path(sys.executable).resolve(), python)
    os.chmod(python, 0o755)
    elves = [python]
    compiled = extensions = 0
    for name, path in sorted(modules.items()):
        if path.suffix == ".py":
            rel = path.relative_to(stdlib)
            target = lib / rel.with_suffix(".pyc")
            target.parent.mkdir(parents=True, exist_ok=True)
            py_compile.compile(str(path), cfile=str(target), doraise=True,
                               dfile=f"{version_dir()}/{rel}",
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            compiled += 1
        elif path.suffix == ".so" and path.parent == dynload:
            target = lib / "lib-dynload" / path.name
            shutil.copyfile(path, target)
            os.chmod(target, 0o755)
            elves.append(target)
            extensions += 1
        else:
            raise RuntimeBuildError(f"{name}: {path} is neither a module source nor in {dynload}")
    libraries: dict[str, Path] = {}
    for elf in elves:
        libraries.update(needed_libraries(elf))
    for soname, path in sorted(libraries.items()):
        shutil.copyfile(path, out / "lib" / soname)
        os.chmod(out / "lib" / soname, 0o755)
        if needed_libraries(path):
            set_rpath(out / "lib" / soname, "$ORIGIN")
    set_rpath(python, "$ORIGIN/../lib")
    for elf in elves[1:]:
        if needed_libraries(elf):
            set_rpath(elf, "$ORIGIN/../..")
    libc = glibc_requirement([*elves, *(out / "lib" / soname for soname in libraries)])
    info = {"python": sys.version.split()[0], "modules": compiled, "extensions": extensions,
            "libraries": sorted(libraries), **libc}
    (out / INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def size(directory: Path) -> int:
    return sum(p.lstat().st_size for p in directory.rglob("*") if p.is_file())


def outside(verbose_stderr: str, allowed: Iterable[Path]) -> list[str]:
    """The files (compiled modules, extension modules) a `-v` run loaded from
    outside the `allowed` directories."""
    roots = [str(a) + os.sep for a in allowed]
    loaded = [m.group(1) for line in verbose_stderr.splitlines()
              for m in (_CODE.match(line), _EXT.match(line)) if m]
    return [f for f in loaded if not any(f.startswith(r) for r in roots)]


MAPS = ("import ctypes, hashlib, json, socket\n"
        "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') "
        "if '.so' in l})))")


def check(out: Path, cni: Path) -> list[str]:
    """Run each executable with the runtime (VERSION, empty environment, `-v`):
    it must answer, load modules only from the runtime and the archives, and
    shared libraries only from the runtime and glibc.  Returns report lines."""
    python = out / PYTHON
    lines = []
    for name in ("skein", "skein-ipam"):
        executable = cni / name
        lines.append(build_zipapps.check(executable, str(python)))
        argv = [str(python), *build_zipapps.interpreter_options(executable), "-v",
                str(executable)]
        proc = subprocess.run(argv, input="", env={"CNI_COMMAND": "VERSION"},
                              capture_output=True, text=True, timeout=60, check=False)
        stray = outside(proc.stderr, [out.resolve(), cni.resolve()])
        if proc.returncode != 0 or stray:
            raise RuntimeBuildError(f"{name} with {python}: exit {proc.returncode}, "
                                f"loaded from outside the runtime: {stray}")
    proc = subprocess.run([str(python), "-I", "-S", "-c", MAPS], env={}, capture_output=True,
                          text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeBuildError(f"{python} cannot import ctypes, hashlib, json, socket: "
                            f"{proc.stderr.strip()[-300:]}")
    foreign = [p for p in proc.stdout.split()
               if not p.startswith(str(out.resolve()) + os.sep)
               and not GLIBC.match(os.path.basename(p))]
    if foreign:
        raise RuntimeBuildError(f"{python} loaded libraries from outside the runtime: {foreign}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cni", required=True, type=Path,
                        help="the directory of the built executables (build_zipapps.py --out)")
    parser.add_argument("--out", required=True, type=Path, help="the runtime directory to make")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="do not run the executables with the runtime")
    args = parser.parse_args(argv)
    try:
        info = build(args.cni, args.out)
        print(f"built {args.out}: {PYTHON} (Python {info['python']}), {info['modules']} "
              f"modules, {info['extensions']} extension modules, libraries "
              f"{', '.join(info['libraries'])}; {size(args.out) / 2**20:.1f} MiB; needs "
              f"glibc >= {info['glibc']} ({info['needed_by']}) at {info['interpreter']}")
        if args.check:
            for line in check(args.out, args.cni):
                print(f"{line} (with {args.out / PYTHON})")
    except (RuntimeBuildError, build_zipapps.BuildError) as exc:
        print(f"runtime: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
