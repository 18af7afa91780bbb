"""Everything the kube lab needs, built into the cache ahead of use.

    python3 -m lab.kube.prepare [--with-e2e]

Kubernetes first (the images need its `pause`), then the images, the e2e
binaries and containerd 1.7 / 2.x with crictl (lab.kube.containerd_build, for
tests/install/test_containerd_versions.py) side by side: they wait on
different things (podman and the Debian mirror, the Go compiler).  The test
suite starts this in the background as soon as it knows the kube tiers will
run, so the builds overlap the other tiers; the tiers' own calls then find the
cache filled (or wait on the build's lock).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lab.kube.build import BuildError, ensure_e2e, ensure_kubernetes
from lab.kube.containerd_build import ensure_all as ensure_containerd_versions
from lab.kube.image import ImageError, ensure_images

Log = Callable[[str], None]


def prepare(with_e2e: bool, log: Log = print) -> Path:
    bin_dir = ensure_kubernetes(log=log)
    failures: list[str] = []

    def run(name: str, step: Callable[[], object]) -> None:
        try:
            step()
        except (BuildError, ImageError, OSError, RuntimeError) as exc:
            failures.append(f"{name}: {exc}")

    threads = [threading.Thread(target=run, args=("images", lambda: ensure_images(
        bin_dir=bin_dir, log=log))),
               threading.Thread(target=run, args=("containerd", lambda:
                                                  ensure_containerd_versions(log=log)))]
    if with_e2e:
        threads.append(threading.Thread(target=run, args=("e2e", lambda: ensure_e2e(log=log))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError("; ".join(failures))
    return bin_dir


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.kube.prepare", description=__doc__)
    p.add_argument("--with-e2e", action="store_true", help="also e2e.test, agnhost, CoreDNS")
    args = p.parse_args(argv)

    def log(line: str) -> None:
        print(f"[prepare {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    try:
        prepare(args.with_e2e, log)
    except (BuildError, ImageError, RuntimeError) as exc:
        print(f"lab.kube.prepare: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
