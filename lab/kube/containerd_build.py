"""Build the containerd releases Skein's conflist is proven with, and crictl, into the lab cache.

    python3 -m lab.kube.containerd_build [--cache DIR]     # prints VERSION BIN_DIR lines

Debian's containerd (1.6) comes from the system; 1.7 and 2.x are built here from their Go
modules (github.com/containerd/containerd at CONTAINERD_1_7, .../v2 at CONTAINERD_2), each
only `containerd` and `containerd-shim-runc-v2` (Debian's runc runs the sandboxes), and
crictl from sigs.k8s.io/cri-tools at CRICTL_VERSION.  Built as lab.kube.build builds
Kubernetes, with its machinery: a wrapper module under `<cache>/work/`, one output
directory per module under the cache, stamped with a hash of its inputs, renamed into place
when every binary has answered `--version`, builds serialised by a lock.

Kept small, as a fresh CI machine builds it once: CGO off, -trimpath, the snapshotters and
tracing the CRI tests do not use left out by upstream's own build tags (overlayfs and native
stay, as does the CRI plugin).  Measured on 2 cores with empty Go build and module caches
(and other work loading the machine): about 20 minutes for all three (10.2 CPU-minutes;
crictl first, compiling the standard library too), 134 MB of binaries; a stamped cache
answers in half a second.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.kube.build import (
    GO_LDFLAGS,
    SCHEMA,
    BuildError,
    GoTool,
    Log,
    binary_sizes,
    cache_root,
    elapsed_text,
    ensure_built,
    go_directive,
    go_env,
    godebug_settings,
    human_size,
    input_key,
    module_info,
    prepare_module,
    run_go,
    wrapper_gomod,
)

CONTAINERD_1_7 = "v1.7.35"
CONTAINERD_2 = "v2.4.2"
# The CRI client of the lab's Kubernetes minor (cri-tools follows Kubernetes' numbering).
CRICTL_VERSION = "v1.34.0"
# Upstream's build tags that drop what a CRI node on overlayfs never loads.
CONTAINERD_TAGS = "no_aufs,no_btrfs,no_devmapper,no_zfs,no_tracing,urfave_cli_no_docs"
CONTAINERD_BINARIES = ("containerd", "containerd-shim-runc-v2")
# Bump when the steps below change in a way the hashed inputs do not show.
LOCAL_SCHEMA = 1


@dataclass(frozen=True)
class GoProgram:
    """Some commands of one upstream Go module, and what their `--version` reports."""

    name: str                       # the cache directory's prefix
    module: str
    version: str
    packages: tuple[str, ...]       # relative to the module
    binaries: tuple[str, ...]
    version_args: tuple[str, ...]   # what makes each binary print its version
    version_vars: tuple[str, ...]   # package.Var set to the version by -X
    tags: str = ""

    @property
    def dir_name(self) -> str:
        return f"{self.name}-{self.version}"

    def import_paths(self) -> list[str]:
        return [f"{self.module}/{p}" for p in self.packages]

    def ldflags(self, revision: str = "") -> str:
        flags = [GO_LDFLAGS, *(f"-X {var}={self.version}" for var in self.version_vars)]
        if revision and self.version_vars:
            package = self.version_vars[0].rsplit(".", 1)[0]
            flags.append(f"-X {package}.Revision={revision}")
        return " ".join(flags)

    def build_flags(self) -> list[str]:
        return ["-trimpath", *([f"-tags={self.tags}"] if self.tags else [])]

    def inputs(self) -> dict[str, Any]:
        return {
            "schema": [SCHEMA, LOCAL_SCHEMA],
            "module": self.module,
            "version": self.version,
            "packages": list(self.packages),
            "flags": [*self.build_flags(), self.ldflags(), "CGO_ENABLED=0"],
        }


def containerd_program(version: str) -> GoProgram:
    """containerd and its runc shim at `version` (v1.x: the v1 module path, v2.x: .../v2)."""
    if not version.startswith("v") or not version[1:2].isdigit():
        raise ValueError(f"not a containerd release tag: {version!r}")
    module = "github.com/containerd/containerd"
    if int(version[1:].split(".")[0]) >= 2:
        module += "/" + version.split(".")[0]
    return GoProgram(
        name="containerd",
        module=module,
        version=version,
        packages=tuple(f"cmd/{b}" for b in CONTAINERD_BINARIES),
        binaries=CONTAINERD_BINARIES,
        version_args=("--version", "-v"),
        version_vars=(f"{module}/version.Version",),
        tags=CONTAINERD_TAGS,
    )


def crictl_program(version: str = CRICTL_VERSION) -> GoProgram:
    return GoProgram(
        name="crictl",
        module="sigs.k8s.io/cri-tools",
        version=version,
        packages=("cmd/crictl",),
        binaries=("crictl",),
        version_args=("--version",),
        version_vars=("sigs.k8s.io/cri-tools/pkg/version.Version",),
    )


def revision_of(info_json: str) -> str:
    """The commit a module version was made from, when the proxy's .info names it."""
    try:
        origin = json.loads(info_json).get("Origin") or {}
    except ValueError:
        return ""
    return str(origin.get("Hash", "")) if isinstance(origin, dict) else ""


def _smoke(bin_dir: Path, program: GoProgram, log: Log) -> dict[str, str]:
    """Each binary's version line (none of these opens a socket); a binary that cannot
    say it fails the build."""
    versions = {}
    for name, arg in zip(program.binaries, program.version_args, strict=True):
        try:
            done = subprocess.run([str(bin_dir / name), arg], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BuildError(f"{name} {arg}: {e}") from e
        lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if done.returncode != 0 or program.version.lstrip("v") not in "\n".join(lines):
            raise BuildError(f"{name} {arg} exited {done.returncode} without naming "
                             f"{program.version}: {' | '.join(lines[-3:])}")
        versions[name] = lines[0]
        log(f"  {name}: {' '.join(lines)}")
    return versions


def _build(program: GoProgram, tmp: Path, root: Path, log: Log) -> dict[str, Any]:
    start = time.monotonic()
    bin_dir = tmp / "bin"
    info = module_info(program.module, program.version, tmp, log)
    gomod = Path(info["GoMod"]).read_text()
    revision = revision_of(Path(info["Info"]).read_text()) if info.get("Info") else ""
    work = root / "work" / program.dir_name
    prepare_module(
        work,
        wrapper_gomod(
            f"skein.local/lab/{program.name}",
            go_directive(gomod) or "1.24.0",
            {program.module: program.version},
            godebug=godebug_settings(gomod),
        ),
        {},
    )
    log(f"{program.dir_name}: go build {' '.join(program.import_paths())}")
    GoTool(log, program.dir_name).run(
        [
            run_go(),
            "build",
            "-v",
            *program.build_flags(),
            f"-ldflags={program.ldflags(revision)}",
            "-o",
            str(bin_dir) + "/",
            *program.import_paths(),
        ],
        work,
        go_env(),
    )
    seconds = time.monotonic() - start
    log(f"{program.dir_name}: built in {elapsed_text(start)}; checking the binaries:")
    versions = _smoke(bin_dir, program, log)
    sizes = binary_sizes(bin_dir)
    for name, size in sizes.items():
        log(f"  {name}: {human_size(size)}")
    return {
        "module": program.module,
        "version": program.version,
        "revision": revision,
        "seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": sizes,
        "versions": versions,
    }


def ensure_program(program: GoProgram, cache: str | None = None, log: Log = print) -> Path:
    """The bin dir holding `program`'s binaries, built first if the cache lacks them."""
    root = cache_root(cache)

    def build(tmp: Path) -> dict[str, Any]:
        log(f"building {program.module}@{program.version} into {root / program.dir_name}")
        return _build(program, tmp, root, log)

    return ensure_built(
        root, program.dir_name, input_key(program.inputs()), program.binaries, build, log
    )


def ensure_containerd(version: str, cache: str | None = None, log: Log = print) -> Path:
    return ensure_program(containerd_program(version), cache, log)


def ensure_crictl(cache: str | None = None, log: Log = print) -> Path:
    return ensure_program(crictl_program(), cache, log)


def ensure_all(cache: str | None = None, log: Log = print) -> dict[str, Path]:
    """crictl, containerd 1.7 and 2.x: name -> bin dir."""
    return {
        "crictl": ensure_crictl(cache, log),
        CONTAINERD_1_7: ensure_containerd(CONTAINERD_1_7, cache, log),
        CONTAINERD_2: ensure_containerd(CONTAINERD_2, cache, log),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m lab.kube.containerd_build",
        description=f"Build containerd {CONTAINERD_1_7} and {CONTAINERD_2} and crictl "
        f"{CRICTL_VERSION} (cached), print each bin dir.",
    )
    parser.add_argument("--cache", help="cache dir (default $SKEIN_LAB_CACHE or "
                        "/var/cache/skein-lab)")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(f"[lab.kube.containerd_build {time.strftime('%H:%M:%S')}] {line}",
              file=sys.stderr, flush=True)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that a stopped build removes its temporary directory

    signal.signal(signal.SIGTERM, terminate)
    try:
        for name, bin_dir in ensure_all(args.cache, log).items():
            print(name, bin_dir, flush=True)
    except BuildError as e:
        print(f"lab.kube.containerd_build: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab.kube.containerd_build: interrupted; the cache is unchanged", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
