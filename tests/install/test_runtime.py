"""install/runtime.py: the Python runtime that runs `skein` and `skein-ipam` on a
node without Python.  It is self-contained but for glibc: relocatable, found by
CPython from its own binary's location, loading modules and libraries only from
itself and the executables' archives, with no python3 on the PATH and an empty
environment; and it holds what the executables import, not the whole library."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.install.helpers import (
    INSTALL,
    FakeAgent,
    assert_self_contained,
    interpreter_argv,
    load_script,
    module_loaders,
    node_python,
    startup_modules,
)

runtime_builder = load_script("runtime")
NO_PATH = "/nonexistent"  # no python3 to fall back on, nor anything else


def files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_layout(runtime):
    """bin/python3, the libraries glibc does not provide, compiled modules only."""
    info = json.loads((runtime / "runtime.json").read_text())
    version = "python" + ".".join(info["python"].split(".")[:2])
    lib = runtime / "lib" / version
    inside = files(runtime)
    assert os.access(runtime / "bin/python3", os.X_OK)
    assert {f"lib/{version}/os.pyc", f"lib/{version}/encodings/utf_8.pyc",
            f"lib/{version}/json/decoder.pyc", f"lib/{version}/ctypes/__init__.pyc",
            f"lib/{version}/ipaddress.pyc", "runtime.json"} <= inside
    assert not [f for f in inside if f.endswith(".py")]
    # No glibc, and nothing the executables never load (OpenSSL, bz2, lzma, CJK codecs).
    assert sorted(p.name for p in (runtime / "lib").glob("*.so*")) == info["libraries"]
    assert {"libexpat.so.1", "libz.so.1", "libffi.so.8"} == set(info["libraries"])
    dynload = {p.name.split(".")[0] for p in (lib / "lib-dynload").iterdir()}
    assert {"_ctypes", "_json"} <= dynload
    assert not dynload & {"_hashlib", "_ssl", "_bz2", "_lzma", "_codecs_jp", "_sqlite3"}
    assert not (lib / "bz2.pyc").exists() and not (lib / "unittest").exists()
    rpath = subprocess.run(["patchelf", "--print-rpath", str(runtime / "bin/python3")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert rpath == "$ORIGIN/../lib"
    assert info["interpreter"] == "/lib64/ld-linux-x86-64.so.2"
    assert tuple(map(int, info["glibc"].split("."))) >= (2, 34)


def test_relocatable_with_an_empty_environment(runtime, tmp_path):
    """Copied anywhere, it finds its prefix from its binary (the os.pyc landmark)
    and puts nothing but its own directories on sys.path."""
    moved = tmp_path / "some where" / "else"
    shutil.copytree(runtime, moved, symlinks=True)
    proc = subprocess.run([str(moved / "bin/python3"), "-I", "-S", "-c",
                           "import json, sys; print(json.dumps([sys.prefix, sys.exec_prefix, "
                           "sys.path]))"],
                          env={}, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    prefix, exec_prefix, path = json.loads(proc.stdout)
    assert prefix == exec_prefix == str(moved)
    assert path and all(p.startswith(str(moved) + "/") for p in path), path


@pytest.mark.parametrize("app", ["skein", "skein-ipam"])
def test_version_loads_nothing_from_outside(built, runtime, app):
    python = str(runtime / "bin/python3")
    proc = subprocess.run(interpreter_argv(python, built / app, "-v"), input="",
                          env={"CNI_COMMAND": "VERSION", "PATH": NO_PATH},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    archive = built / ("skein.pyz" if app == "skein" else app)
    loaders = assert_self_contained(proc.stderr, archive, python, runtime=runtime)
    assert "foundation.cni.skel" in loaders and "site" not in loaders


def test_ipam_add_and_del(built, runtime, tmp_path):
    """skein-ipam's file store (fcntl locks, the inotify watch through ctypes)."""
    python = str(runtime / "bin/python3")
    conf = {"cniVersion": "1.0.0", "name": "rtnet", "type": "skein",
            "ipam": {"type": "skein-ipam", "ranges": [[{"subnet": "10.66.1.0/29"}]],
                     "dataDir": str(tmp_path)}}
    env = {"CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0",
           "CNI_PATH": str(built), "PATH": NO_PATH}
    ipam = built / "skein-ipam"
    add = subprocess.run(interpreter_argv(python, ipam, "-v"), input=json.dumps(conf),
                         env={**env, "CNI_COMMAND": "ADD"}, capture_output=True, text=True,
                         timeout=60, check=False)
    assert add.returncode == 0, add.stdout + add.stderr[-2000:]
    assert json.loads(add.stdout)["ips"][0]["address"] == "10.66.1.2/29"
    loaders = assert_self_contained(add.stderr, ipam, python, runtime=runtime)
    assert "ipam.store" in loaders
    delete = subprocess.run(interpreter_argv(python, ipam), input=json.dumps(conf),
                            env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert not (tmp_path / "rtnet" / "10.66.1.2").exists()


def test_fast_path_loads_nothing_else(built, runtime, tmp_path):
    """With skein-agent answering, the launcher on the runtime imports nothing
    beyond the interpreter's start-up but _socket: no archive, no library."""
    python = str(runtime / "bin/python3")
    sock = str(tmp_path / "agent.sock")
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "skein", "agentSocket": sock}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": str(built), "PATH": NO_PATH}
    with FakeAgent(sock, (0, '{"cniVersion": "1.0.0"}')) as agent:
        proc = subprocess.run(interpreter_argv(python, built / "skein", "-v"),
                              input=json.dumps(conf), env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (0, '{"cniVersion": "1.0.0"}\n'), proc.stderr
    assert len(agent.requests) == 1
    loaders = module_loaders(proc.stderr)
    assert set(loaders) - startup_modules(python, "-S") <= {"_socket"}, loaders
    assert not runtime_builder.outside(proc.stderr, [runtime.resolve()])


def test_libraries_come_from_the_runtime(built, runtime):
    """runtime.py's own check: VERSION from both executables, and libz, libexpat
    and libffi mapped from the runtime's lib/, only glibc from the machine."""
    lines = runtime_builder.check(runtime, built)
    assert [line.split(":")[0] for line in lines] == ["skein", "skein-ipam"]
    proc = subprocess.run([str(runtime / "bin/python3"), "-I", "-S", "-c",
                           runtime_builder.MAPS], env={}, capture_output=True, text=True,
                          check=True)
    mapped = {os.path.basename(p): p for p in proc.stdout.split()}
    for soname in ("libz.so.1", "libexpat.so.1", "libffi.so.8"):
        assert mapped[soname] == str((runtime / "lib" / soname).resolve())


def test_hashes_without_openssl(runtime):
    """hashlib falls back to the interpreter's built-in hashes (no _hashlib)."""
    proc = subprocess.run([str(runtime / "bin/python3"), "-I", "-S", "-c",
                           "import hashlib, sys; print(hashlib.sha256(b'skein').hexdigest(), "
                           "'_hashlib' in sys.modules)"],
                          env={}, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    digest, openssl = proc.stdout.split()
    assert digest == hashlib.sha256(b"skein").hexdigest() and openssl == "False"


def test_check_catches_a_missing_module(built, runtime, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runtime, broken, symlinks=True)
    (broken / "lib/python3.11/json/decoder.pyc").unlink()
    with pytest.raises(runtime_builder.build_zipapps.BuildError, match="VERSION failed"):
        runtime_builder.check(broken, built)


def test_elf_needs_of_the_interpreter(runtime):
    """The ELF reader behind runtime.json: the interpreter needs libc's versioned
    symbols and is loaded by the x86-64 glibc loader."""
    interpreter, needs = runtime_builder.elf_needs(runtime / "bin/python3")
    assert interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert ("libc.so.6", "GLIBC_2.2.5") in needs
    glibc = {library for library, version in needs if version.startswith("GLIBC_")}
    assert glibc <= {"libc.so.6", "libm.so.6"}
    assert ("libz.so.1", "ZLIB_1.2.0") in needs  # not glibc's: shipped in lib/
    requirement = runtime_builder.glibc_requirement(
        [runtime / "bin/python3", *(runtime / "lib").glob("*.so*")])
    info = json.loads((runtime / "runtime.json").read_text())
    assert (requirement["glibc"], requirement["needed_by"]) == (info["glibc"], info["needed_by"])


def test_build_is_reproducible(built, runtime, tmp_path):
    """The same inputs give the same bytes, so a node keeps one runtime-DIGEST
    across image rebuilds."""
    again = tmp_path / "again"
    builder = subprocess.run([node_python(), str(INSTALL / "runtime.py"), "--cni",
                              str(built), "--out", str(again), "--no-check"],
                             capture_output=True, text=True, timeout=300, check=False)
    assert builder.returncode == 0, builder.stderr
    for rel in files(runtime) | files(again):
        assert (runtime / rel).read_bytes() == (again / rel).read_bytes(), rel
