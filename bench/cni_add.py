#!/usr/bin/env python3
"""Pod ADD/DEL wall time: Skein against the reference Go plugins, same run.

Implementations, on the same network config (only `type`, `ipam.type` and, for
the agent, `agentSocket` differ), each in a fresh node namespace:

  reference   /usr/lib/cni/bridge + host-local
  in-process  skein + skein-ipam, no agent: `skein` does the netlink work itself
  agent       skein forwarding to skein-agent (`--no-overlay`) in the node namespace

`skein` and `skein-ipam` are the node executables built by
install/build_zipapps.py, with the shebang install_cni.py writes (what the
installer puts into /opt/cni/bin), built into a temporary directory at the
start; `--console` uses pip's console scripts instead.

Prints, per implementation: sequential ADD and DEL median and p90 (ms, less
what the same call costs with `true` in the plugin's place: `ip netns exec`,
spawn, pipes), and the wall time of a burst of 64
parallel ADDs (median of 3 rounds); then the ratios against the reference,
the ADD one with a 90 % bootstrap interval (see `median_ratio_interval`).
The implementations take turns, pod by pod and burst by burst, so a machine
whose speed drifts during the run favours none of them.  Run as root:
`python3 bench/cni_add.py [--pods 30] [--burst 64] [--rounds 3]`.  Everything
lives in namespaces named with a random tag and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "install")]

import build_zipapps  # type: ignore[import-not-found]  # noqa: E402

from lab.cluster import REFERENCE_CNI_DIR, scripts_dir  # noqa: E402
from lab.netns import Netns, new_tag  # noqa: E402

# A container runtime execs plugins with the node's PATH (containerd:
# /usr/local/sbin:...:/usr/bin:...), and install_cni.py names the python3 found
# there in the executables' shebang (`#!/usr/bin/python3 -IS`), so a node runs
# them with its system python3.  The bench does the same; --python-dir names
# another directory to find python3 in (this interpreter's, say).
NODE_PATH = os.pathsep.join(build_zipapps.RUNTIME_PATH)


def config(plugin: str, ipam: str, data_dir: str, agent_socket: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "bench", "type": plugin, "bridge": "cni0",
        "isGateway": True, "isDefaultGateway": True, "ipMasq": False,
        "ipam": {"type": ipam, "ranges": [[{"subnet": "10.88.0.0/16"}]], "dataDir": data_dir}}
    if agent_socket:
        conf["agentSocket"] = agent_socket
    return conf


def build_executables(out: str, python: str) -> str:
    """Build into `out` with the shebang install_cni.py --python would write
    for `python`; returns that interpreter line."""
    interpreter = build_zipapps.direct_interpreter(python)
    for app in build_zipapps.APPS:
        build_zipapps.build(app, Path(out), interpreter)
    return str(interpreter)


class Runner:
    def __init__(self, label: str, binary: str, ipam: str, cni_path: str, tag: str,
                 agent: bool, path: str) -> None:
        self.label, self.binary, self.cni_path, self.path = label, binary, cni_path, path
        self.node = Netns(f"sk{tag}{label[:3]}").create()
        self.workdir = tempfile.mkdtemp(prefix=f"skein-bench-{label}-")
        self.agent: subprocess.Popen[bytes] | None = None
        try:
            self._start(label, ipam, agent)
        except BaseException:
            self.close()  # the node namespace, the agent if it started, the workdir
            raise

    def _start(self, label: str, ipam: str, agent: bool) -> None:
        socket_path = None
        if agent:
            socket_path = os.path.join(self.workdir, "run", "agent.sock")
            self.agent = self.node.popen(os.path.join(scripts_dir(), "skein-agent"), "--node",
                                         "bench", "--no-overlay", "--socket", socket_path,
                                         "--log-level", "WARNING")
            deadline = time.monotonic() + 20
            while not os.path.exists(socket_path):
                if time.monotonic() > deadline:
                    raise SystemExit("skein-agent did not start")
                time.sleep(0.02)
        conf = config(os.path.basename(self.binary), ipam,
                      os.path.join(self.workdir, "ipam"), socket_path)
        # The config every call reads on stdin, written once: making a file
        # inside the timed span cost 0.06-0.4 ms here (ext4), the plugin's or not.
        self.stdin_path = os.path.join(self.workdir, "stdin.json")
        with open(self.stdin_path, "w", encoding="utf-8") as f:
            json.dump(conf, f)
        self.overhead = self._cost_of_calling_true()

    def _cost_of_calling_true(self) -> float:
        """What a call costs with `true` for the plugin: `ip netns exec`, the
        spawn, the pipes; taken through `_spawn`, as the timed calls are."""
        samples = []
        for _ in range(10):
            stdin = self._stdin()
            start = time.perf_counter()
            self._spawn(["true"], {"PATH": self.path}, stdin).communicate()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    def _stdin(self) -> int:
        """A descriptor of its own for each call (a burst's calls would share
        one file offset otherwise); `_spawn` closes it."""
        return os.open(self.stdin_path, os.O_RDONLY | os.O_CLOEXEC)

    def _spawn(self, argv: list[str], env: dict[str, str], stdin: int
               ) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(self.node.exec_argv(argv), stdin=stdin,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        finally:
            os.close(stdin)

    def _popen(self, command: str, container_id: str, netns: str, stdin: int
               ) -> subprocess.Popen[bytes]:
        env = {"PATH": self.path, "CNI_COMMAND": command,
               "CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
               "CNI_PATH": self.cni_path}
        return self._spawn([self.binary], env, stdin)

    def timed(self, command: str, container_id: str, netns: str) -> float:
        stdin = self._stdin()
        start = time.perf_counter()
        proc = self._popen(command, container_id, netns, stdin)
        out, _ = proc.communicate()
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{self.label} {command} failed: {out.decode()}")
        return elapsed - self.overhead

    def burst(self, pods: list[Netns], prefix: str) -> float:
        stdins = [self._stdin() for _ in pods]
        start = time.perf_counter()
        procs = [self._popen("ADD", f"{prefix}b{i}", ns.path, stdin)
                 for i, (ns, stdin) in enumerate(zip(pods, stdins, strict=True))]
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"{self.label} burst ADD failed: {out.decode()}")
        return time.perf_counter() - start

    def close(self) -> None:
        if self.agent is not None:
            self.agent.terminate()
            self.agent.wait()
        self.node.delete()
        subprocess.run(["rm", "-rf", self.workdir], check=False)


def measure(runners: list[Runner], pods: int, burst: int, rounds: int,
            tag: str) -> dict[str, dict[str, Any]]:
    """Interleaved: pod i is added by every implementation in turn before pod
    i+1, and the bursts alternate, so a machine that drifts faster or slower
    during the run (as shared VMs do) weighs on all of them alike."""
    seq = {r.label: [Netns(f"sk{tag}{r.label[:3]}s{i}").create() for i in range(pods)]
           for r in runners}
    results: dict[str, dict[str, Any]] = {r.label: {"add": [], "del": [], "burst": []}
                                          for r in runners}
    made: list[Netns] = [ns for spaces in seq.values() for ns in spaces]
    try:
        for i in range(pods):
            for r in runners:
                results[r.label]["add"].append(r.timed("ADD", f"c{i}", seq[r.label][i].path))
        for i in range(pods):
            for r in runners:
                results[r.label]["del"].append(r.timed("DEL", f"c{i}", seq[r.label][i].path))
        for n in range(rounds):
            for r in runners:
                many = [Netns(f"sk{tag}{r.label[:3]}b{n}x{i}").create() for i in range(burst)]
                made.extend(many)
                results[r.label]["burst"].append(r.burst(many, f"r{n}"))
        return results
    finally:
        for ns in made:
            ns.delete()
        for r in runners:
            r.close()


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]


def median_ratio_interval(ours: list[float], reference: list[float], resamples: int = 2000,
                          seed: int = 8) -> tuple[float, float]:
    """A 90 % bootstrap interval of median(ours) / median(reference).

    The machine's speed wanders by 5-10 % between runs, so one ratio of two
    medians says little on its own.  Pod i of both lists was added one right
    after the other, so resampling keeps the pairs together (the same drawn
    indices for both): drift that slowed both is not counted as noise."""
    rng = random.Random(seed)
    indices = range(min(len(ours), len(reference)))
    ratios = []
    for _ in range(resamples):
        drawn = rng.choices(indices, k=len(indices))
        ratios.append(statistics.median(ours[i] for i in drawn)
                      / statistics.median(reference[i] for i in drawn))
    ratios.sort()
    return ratios[int(0.05 * resamples)], ratios[int(0.95 * resamples) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3,
                        help="bursts per implementation (alternating); the median counts")
    parser.add_argument("--console", action="store_true",
                        help="use pip's console scripts instead of the node zipapps")
    parser.add_argument("--python-dir", default=None,
                        help="find the executables' python3 here first (default: the "
                        "node's PATH, i.e. the system python3)")
    parser.add_argument("--only", type=lambda text: text.split(","),
                        default=["reference", "in-process", "agent"],
                        help="comma-separated implementations to run (reference always)")
    args = parser.parse_args()
    path = os.pathsep.join(filter(None, [args.python_dir, NODE_PATH]))
    python = shutil.which("python3", path=path)
    if python is None:
        raise SystemExit(f"no python3 on {path}")
    tag = new_tag()
    with tempfile.TemporaryDirectory(prefix="skein-bench-bin-") as bindir:
        if args.console:
            ours, shebang = scripts_dir(), "pip's console scripts"
        else:
            ours, shebang = bindir, "#!" + build_executables(bindir, python)
        cni_path = f"{ours}:{REFERENCE_CNI_DIR}"
        skein = os.path.join(ours, "skein")
        plans = [("reference", os.path.join(REFERENCE_CNI_DIR, "bridge"), "host-local", False),
                 ("in-process", skein, "skein-ipam", False),
                 ("agent", skein, "skein-ipam", True)]
        unknown = set(args.only) - {label for label, *_ in plans}
        if unknown or "reference" not in args.only:
            raise SystemExit(f"--only: {', '.join(sorted(unknown)) or 'reference is needed'}")
        runners: list[Runner] = []
        try:
            for label, binary, ipam, agent in plans:
                if label in args.only:
                    runners.append(Runner(label, binary, ipam, cni_path, tag, agent, path))
        except BaseException:
            for runner in runners:
                runner.close()
            raise
        results = measure(runners, args.pods, args.burst, args.rounds, tag)
        for r in results.values():
            r["burst"] = statistics.median(r["burst"])
    print(f"our executables: {shebang} (the node's python3, found on {path}, by the "
          "absolute path the installer writes)")
    print(f"{args.pods} sequential pods (ms per call, less the same call of `true`); "
          f"burst: {args.burst} parallel ADDs, wall time (median of {args.rounds})")
    print(f"{'':12} {'ADD med':>8} {'ADD p90':>8} {'DEL med':>8} {'DEL p90':>8} {'burst s':>8}")
    for name, r in results.items():
        print(f"{name:12} {1000 * statistics.median(r['add']):8.1f} {1000 * p90(r['add']):8.1f} "
              f"{1000 * statistics.median(r['del']):8.1f} {1000 * p90(r['del']):8.1f} "
              f"{r['burst']:8.2f}")
    ref = results["reference"]
    for name in (n for n in results if n != "reference"):
        r = results[name]
        low, high = median_ratio_interval(r["add"], ref["add"])
        print(f"ratio {name}/reference: ADD median "
              f"{statistics.median(r['add']) / statistics.median(ref['add']):.2f} "
              f"(90 % bootstrap interval {low:.2f}-{high:.2f}), "
              f"DEL median {statistics.median(r['del']) / statistics.median(ref['del']):.2f}, "
              f"burst {r['burst'] / ref['burst']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
