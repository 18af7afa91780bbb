"""Container images for the lab's Kubernetes, built with podman and saved as OCI archives.

    python3 -m lab.kube.image [--cache DIR] [--pause PATH]     # prints NAME ARCHIVE lines

- `ensure_base()`: a Debian bookworm root made once by debootstrap from the mirror this
  machine's apt uses, with every package install/Containerfile installs (so its apt step
  finds them and needs no package lists), kept as a tar in the cache and imported into the
  lab's podman store as BASE_IMAGE;
- `ensure_skein_image()`: install/Containerfile built on that base (`--build-arg BASE=...`)
  as SKEIN_IMAGE, the name install/manifests use, saved with `podman save --format
  oci-archive`; rebuilt only when a file that goes into the image changed (the archive's
  stamp names a digest of them);
- `ensure_pause_image()` and `ensure_busybox_image()`: static binaries FROM scratch, under
  the names the kubelet's runtime and the pods ask for (PAUSE_IMAGE, BUSYBOX_IMAGE); the
  pause binary is given (lab.kube.build compiles it), busybox is Debian's busybox-static;
- `ensure_images()`: all of them, as the list of archives a node imports.

Everything lives under the cache (`$SKEIN_LAB_CACHE` or /var/cache/skein-lab): base/,
podman/ (the store: its own --root, never the system's; its run state goes to
/run/skein-lab-podman-HASH), images/ (the archives, their stamps and build logs).  Builds
use `--network host` only so that RUN steps reach the Debian mirror and PyPI as apt and
pip on this machine do; nothing is ever run with a podman-made network.  Work goes to
temporary files renamed into place, under a lock file, so an interrupted build never
leaves half an archive behind a valid stamp.

Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from foundation.files import write_atomically
from lab.kube.cache import cache_lock

CACHE_ENV = "SKEIN_LAB_CACHE"
DEFAULT_CACHE = "/var/cache/skein-lab"
REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = "install/Containerfile"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
BASE_IMAGE = f"localhost/skein-base:{SUITE}"
# The name install/manifests/30-skein-node.yaml pulls (imagePullPolicy: IfNotPresent).
SKEIN_IMAGE = "ghcr.io/skein-net/skein:0.1.0"
# The sandbox image of kubeadm 1.34/1.35 (its PauseVersion) and of upstream's
# build/pause/Makefile at v1.34; the node's containerd names it as sandbox_image.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
# Debian bookworm's busybox-static is 1.35.0: the tag says what is inside.
BUSYBOX_IMAGE = "docker.io/library/busybox:1.35.0"
BUSYBOX = "/bin/busybox"

# What goes into the Skein image (the Containerfile's COPY lines), relative to the repo.
IMAGE_SOURCES = ("install/Containerfile", "install/build_zipapps.py", "install/runtime.py",
                 "install/install_cni.py", "pyproject.toml", "setup.py", "README.md",
                 "foundation", "cni_plugin", "ipam", "speaker")
# Never part of a checkout: caches, and the stubs setup.py generates (.gitignore).
EXCLUDED_DIRS = ("__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")
EXCLUDED_FILES = ("speaker/api/skein_pb2.py", "speaker/api/skein_pb2.pyi",
                  "speaker/api/skein_pb2_grpc.py")
# Bump when a recipe changes in a way the hashed inputs do not show: the base's, the images'.
BASE_SCHEMA = 2
SCHEMA = 2
LABEL = "org.skein.lab.key"

Log = Callable[[str], None]


class ImageError(Exception):
    """A step failed; the message is one line meant for a person."""


def cache_root(cache: str | os.PathLike[str] | None = None) -> Path:
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).absolute()


def _key(inputs: Mapping[str, Any]) -> str:
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def elapsed_text(start: float) -> str:
    seconds = time.monotonic() - start
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def _locked(root: Path, name: str) -> contextlib.AbstractContextManager[None]:
    return cache_lock(root, name, ImageError)


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ImageError(f"{name} is not installed: apt-get install {package} "
                         "(install/host-deps.sh)")
    return found


def _run(argv: Sequence[str], what: str, log_file: Path | None = None,
         env: Mapping[str, str] | None = None) -> str:
    """Run `argv`; its output goes to `log_file` (else is returned).  A failure raises
    ImageError naming the last line of output and the log."""
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    with (open(log_file, "w") if log_file else contextlib.nullcontext()) as out:
        proc = subprocess.run(list(argv), stdout=out or subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=False,
                              env=dict(env) if env is not None else None)
    if proc.returncode == 0:
        return proc.stdout or ""
    text = log_file.read_text(errors="replace") if log_file else proc.stdout
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    where = f" (log: {log_file})" if log_file else ""
    raise ImageError(f"{what} failed with exit {proc.returncode}: {last}{where}")


def _replace(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _read_stamp(archive: Path) -> str | None:
    try:
        return Path(f"{archive}.key").read_text().strip() if archive.is_file() else None
    except OSError:
        return None


def _write_stamp(archive: Path, key: str) -> None:
    write_atomically(f"{archive}.key", key + "\n")


# --------------------------------------------------------------------------- podman


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, fstype = "", ""
    real = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3:
                point = fields[1].replace("\\040", " ")
                if (real == point or real.startswith(point.rstrip("/") + "/")) \
                        and len(point) >= len(best):
                    best, fstype = point, fields[2]
    return fstype


class Podman:
    """podman with a store of its own under the cache: overlay where the cache's
    filesystem can carry it (not on overlayfs itself), else vfs."""

    def __init__(self, root: Path) -> None:
        self.binary = _tool("podman", "podman runc")
        _tool("runc", "runc")
        self.dir = root / "podman"
        # Run state (locks, mounts, libpod's tmpdir) on /run, as podman means it to be,
        # under a short name: podman refuses a runroot longer than 50 characters.
        tag = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        self.run_dir = Path(f"/run/skein-lab-podman-{tag}")
        for directory in (self.dir / "root", self.dir / "tmp", self.run_dir / "runroot",
                          self.run_dir / "libpod"):
            directory.mkdir(parents=True, exist_ok=True)
        driver = os.environ.get("SKEIN_LAB_STORAGE_DRIVER")
        if not driver:
            existing = [d for d in ("overlay", "vfs") if (self.dir / "root" / d).is_dir()]
            driver = existing[0] if existing else (
                "vfs" if _filesystem(self.dir) in ("overlay", "tmpfs") else "overlay")
        self.driver = driver

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.dir / "root"), "--runroot",
                str(self.run_dir / "runroot"), "--tmpdir", str(self.run_dir / "libpod"),
                "--storage-driver", self.driver, "--cgroup-manager", "cgroupfs",
                "--events-backend", "none", *args]

    @property
    def env(self) -> dict[str, str]:
        # Large temporary files (layers being committed) stay in the cache too.
        return {**os.environ, "TMPDIR": str(self.dir / "tmp")}

    def run(self, *args: str, what: str, log_file: Path | None = None) -> str:
        return _run(self.argv(*args), what, log_file, self.env)

    def label(self, image: str, label: str) -> str | None:
        proc = subprocess.run(self.argv("image", "inspect", "--format",
                                        f'{{{{index .Labels "{label}"}}}}', image),
                              capture_output=True, text=True, env=self.env, check=False)
        value = proc.stdout.strip()
        return value if proc.returncode == 0 and value not in ("", "<no value>") else None

    def build(self, context: Path, name: str, containerfile: Path, log_file: Path,
              network: str, build_args: Mapping[str, str] | None = None,
              secrets: Mapping[str, Path] | None = None) -> None:
        args = ["build", "--network", network, "--pull=never", "--layers",
                "-f", str(containerfile), "-t", name]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        for key, path in (secrets or {}).items():
            args += ["--secret", f"id={key},src={path}"]
        self.run(*args, str(context), what=f"podman build {name}", log_file=log_file)

    def save(self, name: str, archive: Path) -> None:
        """`podman save --format oci-archive` to a temporary file renamed to `archive`.
        Layers uncompressed: gzip took most of a rebuild's time (22 s of the image's
        127 MiB) and every node would undo it on import."""
        archive.parent.mkdir(parents=True, exist_ok=True)
        tmp = archive.with_name(f".{archive.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            self.run("save", "--format", "oci-archive", "--uncompressed", "-o", str(tmp), name,
                     what=f"podman save {name}")
            _replace(tmp, archive)
        finally:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the base


def debian_mirror(sources: Path = DEBIAN_SOURCES) -> str:
    """The first URI of the deb822 stanza for SUITE in `sources`, else MIRROR."""
    with contextlib.suppress(OSError):
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return MIRROR


def containerfile_packages(containerfile: Path | None = None) -> list[str]:
    """Every Debian package install/Containerfile installs (its `pkgs="..."` lists)."""
    path = containerfile or REPO / CONTAINERFILE
    found = re.findall(r'pkgs="([^"]+)"', path.read_text())
    if not found:
        raise ImageError(f'{path}: no pkgs="..." list found')
    return sorted({p for group in found for p in group.split()})


def base_key(mirror: str, packages: Sequence[str]) -> str:
    return _key({"schema": BASE_SCHEMA, "suite": SUITE, "mirror": mirror,
                 "packages": sorted(packages), "variant": "minbase"})


def ensure_base_tar(cache: str | os.PathLike[str] | None = None, log: Log = print,
                    repo: Path = REPO) -> Path:
    """A tar of a debootstrapped Debian SUITE holding the Containerfile's packages, made once."""
    root = cache_root(cache)
    mirror, packages = debian_mirror(), containerfile_packages(repo / CONTAINERFILE)
    final = root / "base" / f"debian-{SUITE}-{base_key(mirror, packages)[:12]}.tar"
    return _debootstrap_tar(root, "skein-base", final, f"debian-{SUITE}-*.tar", packages, (),
                            mirror, "base", "into the cache", log)


def _debootstrap_tar(root: Path, lock: str, final: Path, pattern: str,
                     packages: Sequence[str], trim: Sequence[str], mirror: str, what: str,
                     where: str, log: Log) -> Path:
    """`final`, a tar of a debootstrapped Debian SUITE (minbase + `packages`, without
    what is under the directories `trim`), made once under the lock `lock`; older
    tars beside it matching `pattern` are removed."""
    if final.is_file():
        return final
    with _locked(root, lock):
        if final.is_file():
            return final
        debootstrap = _tool("debootstrap", "debootstrap")
        unshare = _tool("unshare", "util-linux")
        directory = final.parent
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
        start = time.monotonic()
        try:
            target = tmp / "root"
            log(f"debootstrap {SUITE} (minbase + {', '.join(sorted(packages))}) from {mirror} "
                f"{where}; a few minutes, once")
            # Its own mount namespace: the /proc and /sys that debootstrap mounts in the
            # target go away with it, even when it is killed.
            _run([unshare, "--mount", "--propagation", "private", debootstrap,
                  "--variant=minbase", f"--include={','.join(sorted(packages))}", SUITE,
                  str(target), mirror], "debootstrap", tmp / "debootstrap.log")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (target / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            for directory_ in trim:
                for path in (target / directory_).glob("*"):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
            tar = tmp / "root.tar"
            _run(["tar", "--numeric-owner", "--xattrs", "-C", str(target),
                  "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
                  "-cf", str(tar), "."], "tar of the debootstrap root")
            _replace(tar, final)
            for old in directory.glob(pattern):
                if old != final:
                    old.unlink()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"{what} root: {final} ({_size(final)}) in {elapsed_text(start)}")
    return final


def ensure_base(podman: Podman, cache: str | os.PathLike[str] | None = None,
                log: Log = print, repo: Path = REPO) -> str:
    """BASE_IMAGE in the lab's store, imported from the base tar when missing or stale."""
    key = base_key(debian_mirror(), containerfile_packages(repo / CONTAINERFILE))[:12]
    if podman.label(BASE_IMAGE, LABEL) != key:
        tar = ensure_base_tar(cache, log, repo)
        log(f"podman import {tar.name} as {BASE_IMAGE}")
        podman.run("import", "--change", f"LABEL {LABEL}={key}", "--change",
                   'CMD ["/bin/bash"]', str(tar), BASE_IMAGE, what="podman import")
    return BASE_IMAGE


# --------------------------------------------------------------------------- Skein's image


def image_files(repo: Path = REPO) -> list[str]:
    """The repo's files that go into the Skein image, relative and sorted."""
    out: list[str] = []
    for entry in IMAGE_SOURCES:
        path = repo / entry
        if path.is_file():
            out.append(entry)
            continue
        if not path.is_dir():
            raise ImageError(f"{path} is missing: the image needs it")
        for directory, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs
                             if d not in EXCLUDED_DIRS and not d.endswith(".egg-info"))
            for name in files:
                rel = os.path.relpath(os.path.join(directory, name), repo)
                if not name.endswith((".pyc", ".pyo")) and rel not in EXCLUDED_FILES:
                    out.append(rel)
    return sorted(out)


def source_digest(repo: Path = REPO) -> str:
    """sha256 over the path, executable bit and content of every file of the image."""
    digest = hashlib.sha256()
    for rel in image_files(repo):
        path = repo / rel
        data = path.read_bytes()
        executable = b"x" if os.access(path, os.X_OK) else b"-"
        digest.update(f"{rel}\0{len(data)}\0".encode() + executable + data)
    return digest.hexdigest()


def pip_ca_bundle() -> Path | None:
    """The CA bundle pip on this machine trusts (PIP_CERT, the usual variables, else
    Debian's bundle): handed to the build's pip as the `ca-bundle` secret, so that
    it reaches PyPI through the same TLS-intercepting proxy, if any, as pip here."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                      os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _stage_context(repo: Path, context: Path) -> None:
    """Copy the image's files into `context`: exactly what a clean checkout holds."""
    if context.exists():
        shutil.rmtree(context)
    for rel in image_files(repo):
        dst = context / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dst)


def ensure_skein_image(cache: str | os.PathLike[str] | None = None, log: Log = print,
                       name: str = SKEIN_IMAGE, repo: Path = REPO) -> Path:
    """The OCI archive of install/Containerfile built on the lab's base as `name`."""
    root = cache_root(cache)
    archive = root / "images" / "skein.oci.tar"
    mirror, packages = debian_mirror(), containerfile_packages(repo / CONTAINERFILE)
    key = _key({"schema": SCHEMA, "sources": source_digest(repo), "name": name,
                "base": base_key(mirror, packages)})

    def make(podman: Podman) -> str:
        base = ensure_base(podman, root, log, repo)
        context = root / "images" / ".context-skein"
        _stage_context(repo, context)
        log_file = root / "images" / "skein.build.log"
        log(f"podman build {name} from {CONTAINERFILE} on {base} ({podman.driver}); "
            f"log: {log_file}")
        try:
            ca = pip_ca_bundle()
            podman.build(context, name, context / CONTAINERFILE, log_file, network="host",
                         build_args={"BASE": base}, secrets={"ca-bundle": ca} if ca else None)
        finally:
            shutil.rmtree(context, ignore_errors=True)
        return ""

    return _saved_image(root, "skein-image", archive, key, name, make, log)


def _saved_image(root: Path, lock: str, archive: Path, key: str, name: str,
                 make: Callable[[Podman], str], log: Log) -> Path:
    """`archive`, image `name` saved by podman after `make` built it (returning
    what to log about it), unless the archive's stamp already says `key`; made
    under the cache lock `lock`, checked again once it is held."""
    if _read_stamp(archive) == key:
        return archive
    with _locked(root, lock):
        if _read_stamp(archive) == key:
            return archive
        podman = Podman(root)
        start = time.monotonic()
        how = make(podman)
        podman.save(name, archive)
        _write_stamp(archive, key)
        log(f"{name}: {archive} ({_size(archive)}) {how or ''}in {elapsed_text(start)}")
    return archive


def _build_staged(podman: Podman, root: Path, slug: str, name: str,
                  stage: Callable[[Path], str], log: Log, on: str) -> None:
    """podman build of the context `stage` fills (returning its Containerfile);
    RUN steps get no network."""
    context = root / "images" / f".context-{slug}"
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    try:
        (context / "Containerfile").write_text(stage(context))
        log(f"podman build {name} {on}")
        podman.build(context, name, context / "Containerfile",
                     root / "images" / f"{slug}.build.log", network="none")
    finally:
        shutil.rmtree(context, ignore_errors=True)


# --------------------------------------------------------------------------- static images


def static_elf(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): static."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
        phoff = int.from_bytes(head[32:40], order)
        phentsize = int.from_bytes(head[54:56], order)
        phnum = int.from_bytes(head[56:58], order)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i:i + 4], order) != 3  # PT_INTERP
               for i in range(0, len(table), phentsize))


def _static_binary(path: str | os.PathLike[str], what: str, package: str) -> Path:
    binary = Path(path)
    if not binary.is_file():
        raise ImageError(f"{what}: {binary} does not exist ({package})")
    if not static_elf(binary):
        raise ImageError(f"{what}: {binary} is not a static executable ({package})")
    return binary


def _ensure_scratch(root: Path, slug: str, name: str, inputs: Mapping[str, Any],
                    stage: Callable[[Path], str], log: Log) -> Path:
    """Build and save a FROM-scratch image whose context `stage` fills (and whose
    Containerfile it returns), unless the archive's stamp matches `inputs`."""
    key = _key({"schema": SCHEMA, "name": name, **inputs})

    def make(podman: Podman) -> str:
        _build_staged(podman, root, slug, name, stage, log, "FROM scratch")
        return ""

    return _saved_image(root, f"{slug}-image", root / "images" / f"{slug}.oci.tar", key,
                        name, make, log)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_pause_image(pause: str | os.PathLike[str],
                       cache: str | os.PathLike[str] | None = None, log: Log = print,
                       name: str = PAUSE_IMAGE) -> Path:
    """The static `pause` binary as upstream's image lays it out: /pause, user 65535."""
    binary = _static_binary(pause, "pause", "gcc -static on upstream's pause.c")

    def stage(context: Path) -> str:
        shutil.copy2(binary, context / "pause")
        os.chmod(context / "pause", 0o755)
        return "FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT [\"/pause\"]\n"

    return _ensure_scratch(cache_root(cache), "pause", name,
                           {"pause": _file_digest(binary)}, stage, log)


def busybox_applets(busybox: Path) -> list[str]:
    """Where each applet goes (`busybox --list-full`: bin/sh, usr/bin/wget, ...)."""
    out = _run([str(busybox), "--list-full"], f"{busybox} --list-full")
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def ensure_busybox_image(cache: str | os.PathLike[str] | None = None, log: Log = print,
                         name: str = BUSYBOX_IMAGE, busybox: str = BUSYBOX) -> Path:
    """Debian's static busybox with a link for every applet, /tmp, and root and nobody."""
    binary = _static_binary(busybox, "busybox", "apt-get install busybox-static")
    applets = busybox_applets(binary)

    def stage(context: Path) -> str:
        rootfs = context / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2(binary, rootfs / "bin" / "busybox")
        os.chmod(rootfs / "bin" / "busybox", 0o755)
        for applet in applets:
            link = rootfs / applet
            if applet == "bin/busybox" or link.exists():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath("/bin/busybox", "/" + os.path.dirname(applet)), link)
        (rootfs / "etc").mkdir()
        (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                           "nobody:x:65534:65534:nobody:/:/bin/false\n")
        (rootfs / "etc/group").write_text("root:x:0:\nnobody:x:65534:\n")
        for directory, mode in (("tmp", 0o1777), ("root", 0o700)):
            (rootfs / directory).mkdir()
            os.chmod(rootfs / directory, mode)
        return "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n"

    return _ensure_scratch(cache_root(cache), "busybox", name,
                           {"busybox": _file_digest(binary), "applets": applets}, stage, log)


# --------------------------------------------------------------------------- all of them


def ensure_named_images(cache: str | os.PathLike[str] | None = None, log: Log = print,
                        pause: str | os.PathLike[str] | None = None,
                        names: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Image name -> OCI archive for Skein, busybox and (given its binary) pause;
    `names` may rename any of "skein", "busybox", "pause"."""
    chosen = {"skein": SKEIN_IMAGE, "busybox": BUSYBOX_IMAGE, "pause": PAUSE_IMAGE,
              **(names or {})}
    out = {chosen["skein"]: ensure_skein_image(cache, log, chosen["skein"]),
           chosen["busybox"]: ensure_busybox_image(cache, log, chosen["busybox"])}
    if pause is not None:
        out[chosen["pause"]] = ensure_pause_image(pause, cache, log, chosen["pause"])
    return out


def ensure_images(cache: str | os.PathLike[str] | None = None, log: Log = print,
                  pause: str | os.PathLike[str] | None = None,
                  bin_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The archives a lab node imports (`ctr images import`): Skein's, busybox's and
    pause's, this one from `pause` or else `bin_dir`/pause (lab.kube.build's bin dir)."""
    if pause is None and bin_dir is not None:
        pause = Path(bin_dir) / "pause"
    return list(ensure_named_images(cache, log, pause).values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m lab.kube.image",
        description="Build the lab's images (cached) and print NAME ARCHIVE lines.")
    parser.add_argument("--cache", help=f"cache dir (default ${CACHE_ENV} or {DEFAULT_CACHE})")
    parser.add_argument("--pause", help="a static pause binary: also build the pause image")
    parser.add_argument("--skein-name", default=SKEIN_IMAGE)
    parser.add_argument("--busybox-name", default=BUSYBOX_IMAGE)
    parser.add_argument("--pause-name", default=PAUSE_IMAGE)
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(f"[lab.kube.image {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr,
              flush=True)

    try:
        images = ensure_named_images(args.cache, log, args.pause,
                                     {"skein": args.skein_name, "busybox": args.busybox_name,
                                      "pause": args.pause_name})
    except ImageError as exc:
        print(f"lab.kube.image: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab.kube.image: interrupted; the cache keeps only finished archives",
              file=sys.stderr)
        return 130
    for name, archive in images.items():
        print(f"{name} {archive}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- the e2e suite's
#
# The images Kubernetes' end-to-end suite (e2e.test v1.34.4, test/utils/image/manifest.go)
# and the CoreDNS add-on ask for, under those exact names, so that nothing is ever pulled.
# Upstream's agnhost is alpine with a userland the suite execs (sh, curl, nc, dig, ip, ss,
# getent); here it is a debootstrapped Debian with the same tools.  The binaries come
# from lab.kube.build.ensure_e2e (agnhost and coredns built from their Go modules).

E2E_REGISTRY = "registry.k8s.io/e2e-test-images"
AGNHOST_IMAGE = f"{E2E_REGISTRY}/agnhost:2.56"
JESSIE_DNSUTILS_IMAGE = f"{E2E_REGISTRY}/jessie-dnsutils:1.7"
NGINX_IMAGE = f"{E2E_REGISTRY}/nginx:1.14-4"
E2E_BUSYBOX_IMAGE = f"{E2E_REGISTRY}/busybox:1.37.0-1"
# What cluster/addons/dns/coredns/coredns.yaml.base of Kubernetes v1.34.4 runs.
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.12.1"
E2E_BASE_IMAGE = f"localhost/skein-e2e-base:{SUITE}"
# The userland of upstream's agnhost (bind-tools curl netcat-openbsd iproute2 iperf bash),
# with Debian's names, plus what the tests' shell lines call on Debian-based images
# (jessie-dnsutils: dig, awk, hostname, getent), nginx for the nginx image, and the
# tools one wants when a test fails (ping, ps, iptables, conntrack).
E2E_BASE_PACKAGES = ("bash", "bind9-dnsutils", "conntrack", "curl", "iperf", "iproute2",
                     "iptables", "iputils-ping", "netbase", "netcat-openbsd", "nginx-light",
                     "procps")
E2E_SCHEMA = 1
# struct vfs_cap_data, revision 2: CAP_NET_BIND_SERVICE (10) permitted and effective,
# what `setcap cap_net_bind_service=+ep` writes (CoreDNS's Dockerfile does that).
NET_BIND_SERVICE_XATTR = (0x02000001).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") \
    + bytes(12)


# What no test reads, left out of the e2e base (a quarter of it): every node imports it.
E2E_BASE_TRIM = ("usr/share/doc", "usr/share/info", "usr/share/locale", "usr/share/man")


def debian_tar_key(packages: Sequence[str], trim: Sequence[str] = ()) -> str:
    return _key({"base": base_key(debian_mirror(), packages), "trim": sorted(trim)})


def ensure_debian_tar(slug: str, packages: Sequence[str], trim: Sequence[str] = (),
                      cache: str | os.PathLike[str] | None = None, log: Log = print) -> Path:
    """A tar of a debootstrapped Debian SUITE (minbase + `packages`, without what is under
    the directories `trim`), made once under <cache>/`slug`/ (its own directory and lock:
    it never touches the Skein base)."""
    root = cache_root(cache)
    directory = root / slug
    final = directory / f"{slug}-{SUITE}-{debian_tar_key(packages, trim)[:12]}.tar"
    return _debootstrap_tar(root, slug, final, f"{slug}-{SUITE}-*.tar", packages, trim,
                            debian_mirror(), slug, f"into {directory}", log)


def ensure_e2e_base(podman: Podman, cache: str | os.PathLike[str] | None = None,
                    log: Log = print) -> str:
    """E2E_BASE_IMAGE in the lab's store (Debian with E2E_BASE_PACKAGES)."""
    key = debian_tar_key(E2E_BASE_PACKAGES, E2E_BASE_TRIM)[:12]
    if podman.label(E2E_BASE_IMAGE, LABEL) != key:
        tar = ensure_debian_tar("e2e-base", E2E_BASE_PACKAGES, E2E_BASE_TRIM, cache, log)
        log(f"podman import {tar.name} as {E2E_BASE_IMAGE}")
        podman.run("import", "--change", f"LABEL {LABEL}={key}", "--change",
                   'CMD ["/bin/bash"]', str(tar), E2E_BASE_IMAGE, what="podman import")
    return E2E_BASE_IMAGE


def _ensure_built(root: Path, slug: str, name: str, inputs: Mapping[str, Any],
                  stage: Callable[[Path], str], log: Log, base: bool = False) -> Path:
    """Build and save an image whose context `stage` fills (returning its Containerfile),
    on E2E_BASE_IMAGE when `base` (else FROM scratch), unless the archive's stamp
    matches `inputs`.  RUN steps get no network."""
    base_inputs = {"base": debian_tar_key(E2E_BASE_PACKAGES, E2E_BASE_TRIM)} if base else {}
    key = _key({"schema": SCHEMA, "e2e_schema": E2E_SCHEMA, "name": name, **base_inputs,
                **inputs})

    def make(podman: Podman) -> str:
        if base:
            ensure_e2e_base(podman, root, log)
        _build_staged(podman, root, slug, name, stage, log,
                      f"on {E2E_BASE_IMAGE}" if base else "FROM scratch")
        return ""

    return _saved_image(root, f"{slug}-image", root / "images" / f"{slug}.oci.tar", key,
                        name, make, log)


def _copy_exe(src: Path, dst: Path) -> None:
    shutil.copy2(src, dst)
    os.chmod(dst, 0o755)


def ensure_coredns_image(coredns: str | os.PathLike[str],
                         cache: str | os.PathLike[str] | None = None, log: Log = print,
                         name: str = COREDNS_IMAGE) -> Path:
    """CoreDNS's own image, from its Dockerfile: /coredns with cap_net_bind_service=+ep
    (a file capability: the add-on runs it as a non-root user that binds port 53),
    user nonroot (65532), FROM scratch instead of distroless/static."""
    binary = _static_binary(coredns, "coredns", "lab.kube.build.ensure_e2e")

    def stage(context: Path) -> str:
        rootfs = context / "rootfs"
        rootfs.mkdir()
        _copy_exe(binary, rootfs / "coredns")
        os.setxattr(rootfs / "coredns", "security.capability", NET_BIND_SERVICE_XATTR)
        (rootfs / "etc").mkdir()
        (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                           "nonroot:x:65532:65532:nonroot:/home/nonroot:"
                                           "/sbin/nologin\n")
        (rootfs / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
        (rootfs / "tmp").mkdir(mode=0o1777)
        os.chmod(rootfs / "tmp", 0o1777)
        return ("FROM scratch\nCOPY rootfs/ /\nUSER 65532:65532\nWORKDIR /\n"
                "EXPOSE 53 53/udp\nENTRYPOINT [\"/coredns\"]\n")

    return _ensure_built(cache_root(cache), "coredns", name,
                         {"coredns": _file_digest(binary)}, stage, log)


def ensure_agnhost_image(agnhost: str | os.PathLike[str], coredns: str | os.PathLike[str],
                         agnhost_source: str | os.PathLike[str],
                         cache: str | os.PathLike[str] | None = None, log: Log = print,
                         name: str = AGNHOST_IMAGE) -> Path:
    """test/images/agnhost/Dockerfile on the e2e base: /agnhost (and /agnhost-2), /coredns,
    porter's localhost.crt/.key, /uploads, the image's own user and group; ENTRYPOINT
    /agnhost, CMD pause.  `agnhost_source` is test/images/agnhost of the k8s.io/kubernetes
    module (the porter certificate)."""
    agnhost_bin = _static_binary(agnhost, "agnhost", "lab.kube.build.ensure_e2e")
    coredns_bin = _static_binary(coredns, "coredns", "lab.kube.build.ensure_e2e")
    porter = Path(agnhost_source) / "porter"
    certs = [porter / "localhost.crt", porter / "localhost.key"]
    for cert in certs:
        if not cert.is_file():
            raise ImageError(f"agnhost: {cert} is missing (test/images/agnhost of the module)")

    def stage(context: Path) -> str:
        _copy_exe(agnhost_bin, context / "agnhost")
        _copy_exe(coredns_bin, context / "coredns")
        for cert in certs:
            shutil.copy2(cert, context / cert.name)
        return "\n".join([
            f"FROM {E2E_BASE_IMAGE}",
            "RUN ln -s /usr/bin/iperf /usr/local/bin/iperf && mkdir /uploads"
            " && groupadd -g 50000 group-defined-in-image"
            " && useradd -u 1000 -M -s /bin/sh user-defined-in-image"
            " && usermod -a -G group-defined-in-image user-defined-in-image",
            "COPY coredns /coredns",
            "COPY localhost.crt localhost.key /",
            "COPY agnhost /agnhost",
            "RUN ln -s agnhost /agnhost-2",
            "EXPOSE 80 8080 8081 9376 5000",
            "WORKDIR /",
            'ENTRYPOINT ["/agnhost"]',
            'CMD ["pause"]',
            ""])

    return _ensure_built(cache_root(cache), "agnhost", name,
                         {"agnhost": _file_digest(agnhost_bin),
                          "coredns": _file_digest(coredns_bin),
                          "certs": [_file_digest(c) for c in certs]}, stage, log, base=True)


def ensure_jessie_dnsutils_image(coredns: str | os.PathLike[str],
                                 cache: str | os.PathLike[str] | None = None, log: Log = print,
                                 name: str = JESSIE_DNSUTILS_IMAGE) -> Path:
    """test/images/jessie-dnsutils: Debian with dnsutils and /coredns (bookworm here)."""
    coredns_bin = _static_binary(coredns, "coredns", "lab.kube.build.ensure_e2e")

    def stage(context: Path) -> str:
        _copy_exe(coredns_bin, context / "coredns")
        return f"FROM {E2E_BASE_IMAGE}\nCOPY coredns /coredns\nCMD [\"/bin/bash\"]\n"

    return _ensure_built(cache_root(cache), "jessie-dnsutils", name,
                         {"coredns": _file_digest(coredns_bin)}, stage, log, base=True)


NGINX_CONF = """\
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80 default_server;
        root /var/www/html;
        index index.html index.nginx-debian.html;
    }
}
"""


def ensure_nginx_image(cache: str | os.PathLike[str] | None = None, log: Log = print,
                       name: str = NGINX_IMAGE) -> Path:
    """test/images/nginx (the official nginx image): Debian's nginx in the foreground,
    serving its default page on port 80."""

    def stage(context: Path) -> str:
        (context / "nginx.conf").write_text(NGINX_CONF)
        return "\n".join([
            f"FROM {E2E_BASE_IMAGE}",
            "COPY nginx.conf /etc/nginx/nginx.conf",
            "RUN nginx -t",
            "EXPOSE 80",
            "STOPSIGNAL SIGQUIT",
            "CMD [\"nginx\", \"-g\", \"daemon off;\"]",
            ""])

    return _ensure_built(cache_root(cache), "nginx", name, {"conf": NGINX_CONF}, stage, log,
                         base=True)


def ensure_alias_image(source: Path, source_name: str, name: str, slug: str,
                       cache: str | os.PathLike[str] | None = None, log: Log = print) -> Path:
    """The image of the OCI archive `source` (named `source_name`) saved again as `name`."""
    root = cache_root(cache)
    key = _key({"schema": SCHEMA, "e2e_schema": E2E_SCHEMA, "name": name,
                "source": _read_stamp(source) or _file_digest(source)})

    def make(podman: Podman) -> str:
        podman.run("load", "-i", str(source), what=f"podman load {source.name}")
        podman.run("tag", source_name, name, what=f"podman tag {source_name} {name}")
        return f"(the image of {source_name}) "

    return _saved_image(root, f"{slug}-image", root / "images" / f"{slug}.oci.tar", key,
                        name, make, log)


def ensure_e2e_images(e2e_bin: str | os.PathLike[str], agnhost_source: str | os.PathLike[str],
                      cache: str | os.PathLike[str] | None = None,
                      log: Log = print) -> dict[str, Path]:
    """Image name -> OCI archive for everything the suite's networking tests and the
    cluster's CoreDNS run, from lab.kube.build.ensure_e2e's bin dir."""
    b = Path(e2e_bin)
    busybox = ensure_busybox_image(cache, log)
    return {
        AGNHOST_IMAGE: ensure_agnhost_image(b / "agnhost", b / "coredns", agnhost_source,
                                            cache, log),
        JESSIE_DNSUTILS_IMAGE: ensure_jessie_dnsutils_image(b / "coredns", cache, log),
        NGINX_IMAGE: ensure_nginx_image(cache, log),
        E2E_BUSYBOX_IMAGE: ensure_alias_image(busybox, BUSYBOX_IMAGE, E2E_BUSYBOX_IMAGE,
                                              "e2e-busybox", cache, log),
        COREDNS_IMAGE: ensure_coredns_image(b / "coredns", cache, log),
    }
