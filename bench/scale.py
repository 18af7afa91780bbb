#!/usr/bin/env python3
"""N LoadBalancer Services through the daemons: skein-speaker to BIRD, skein-controller.

For each size N (default 1,000 and 10,000; `--sizes 1000,10000,50000` for the
large one), in two namespaces joined by a veth pair (bench/bgp_scale.py's lab:
router BIRD 2 passive, `import all; export none`, no kernel protocol, polled on
its control socket every few ms):

  direct      bench/bgp_scale.py's `ours`: `python3 -m speaker.bgp.runner`
              announcing N /32s, the reference the daemon is printed beside
              (the median of --starts runs, default 3)
  speaker     `skein-speaker --node n1 --manifests FILE` in the speaker
              namespace, FILE holding the Node, an IPAddressPool, a BGPPeer
              (the router), a BGPAdvertisement and N Services of type
              LoadBalancer whose status already carries their address:
                cold start   exec until BIRD has imported all N /32s (the
                             median of --starts, default 3, each against a
                             fresh router; the last speaker stays for the rest)
                add / delete one Service written into FILE (atomic rename),
                             from just before the rename until BIRD holds /
                             no longer holds its /32
                             (median of --changes, default 10)
                CPU/change   the daemon's CPU time (all its threads, from
                             /proc/PID/task/*/schedstat) from the write until
                             it is quiet again (< 5 ms of CPU in 150 ms)
                idle CPU     its CPU over --idle seconds (default 10: two
                             resync periods) with nothing changing
                peak RSS     VmHWM at the end
  controller  `skein-controller --manifests FILE`, FILE holding an
              IPAddressPool and N Services without status:
                all assigned exec until FILE carries N ingress entries
                one more     one Service added until FILE carries its ingress
                             (median of --controller-changes, default 5), and
                             the controller's CPU for it

The ratios printed are the daemon's over the direct path measured in the same
run, and the per-change figures of the largest size over the smallest.  The
machine's load average is printed before and after: other work on the machine
shows up in every figure, less in the ratios.

Everything lives in the namespaces bgs<tag>r / bgs<tag>s (random tag), files
in a temp dir; the daemons are killed and the namespaces deleted at the end,
also on Ctrl-C or failure.  Run as root:
`python3 bench/scale.py [--sizes 1000,10000] [--changes 10] [--skip-controller]`.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bgp_scale  # noqa: E402
from bgp_scale import (  # noqa: E402
    FIRST,
    ROUTER_AS,
    ROUTER_IP,
    SPEAKER_AS,
    SPEAKER_IP,
    Failed,
    vm_hwm_mb,
)

from lab.cluster import scripts_dir  # noqa: E402
from lab.netns import new_tag  # noqa: E402

POLL = 0.005
QUIET_WINDOW = 0.15   # seconds without (much) CPU: the daemon is done with a change
QUIET_CPU = 0.005     # "without much": under 5 ms of CPU in the window
POOL = "10.200.0.0/15"  # room for 131,072 Services from FIRST


def address(i: int) -> str:
    """The i-th address from 10.200.0.0 (bgp_scale.prefixes' order)."""
    return f"10.{200 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


# --- manifests, written as text (yaml.dump of 50,000 objects would dominate the run) ---------

def head_docs() -> str:
    return f"""apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {{kubernetes.io/hostname: n1}}
status:
  addresses:
  - {{type: InternalIP, address: {SPEAKER_IP}}}
  - {{type: Hostname, address: n1}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: bench, namespace: metallb-system}}
spec:
  addresses: [{POOL}]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: router, namespace: metallb-system}}
spec: {{myASN: {SPEAKER_AS}, peerASN: {ROUTER_AS}, peerAddress: {ROUTER_IP}}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: bench, namespace: metallb-system}}
spec:
  ipAddressPools: [bench]
"""


def service_doc(name: str, ip: str | None) -> str:
    status = (f"status:\n  loadBalancer:\n    ingress:\n    - ip: {ip}\n" if ip else "")
    return (f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n"
            f"  namespace: default\nspec:\n  type: LoadBalancer\n"
            f"  externalTrafficPolicy: Cluster\n  ports:\n  - port: 80\n    protocol: TCP\n"
            f"{status}")


def write_file(path: Path, text: str) -> float:
    """Atomically, as an editor or a script would; returns once renamed, with the
    monotonic time just before the rename: when the change becomes visible (taken
    after it, a bench descheduled while the daemon wakes would start late)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    visible = time.monotonic()
    os.replace(tmp, path)
    return visible


# --- what a process spends ----------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of `pid` (ns precision, from schedstat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def wait_quiet(pid: int, timeout: float = 30.0) -> float:
    """Until `pid` used less than QUIET_CPU in QUIET_WINDOW; its CPU time then."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(QUIET_WINDOW)
        now = cpu_seconds(pid)
        if now - last < QUIET_CPU:
            return now
        last = now
    return last


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


# --- results ------------------------------------------------------------------------------

@dataclass
class SpeakerResult:
    cold: float = float("nan")  # the median of colds
    colds: list[float] = field(default_factory=list)
    add: list[float] = field(default_factory=list)
    delete: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    idle: float = float("nan")  # fraction of one core
    rss_mb: float = float("nan")


@dataclass
class ControllerResult:
    all_assigned: float = float("nan")
    cold_cpu: float = float("nan")
    add: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_mb: float = float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- the runs -----------------------------------------------------------------------------

class Scale:
    def __init__(self, bench: bgp_scale.Bench, tmp: Path, changes: int,
                 controller_changes: int, idle: float, starts: int) -> None:
        self.bench = bench
        self.starts = starts
        self.tmp = tmp
        self.changes = changes
        self.controller_changes = controller_changes
        self.idle = idle

    def wait(self, what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes],
             log: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return time.monotonic()
            if proc.poll() is not None:
                raise Failed(f"{what}: the daemon exited with {proc.returncode}: "
                             f"{(self.tmp / log).read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise Failed(f"timed out waiting for {what}; log "
                             f"{(self.tmp / log).read_text()[-1000:]}")
            time.sleep(POLL)

    def speaker(self, count: int, result: SpeakerResult) -> None:
        """Fills `result` as it goes (a failure keeps what was measured)."""
        run = f"speaker-{count}"
        manifests = self.tmp / f"{run}.yaml"
        services = "".join(service_doc(f"svc-{i}", address(i)) for i in range(count))
        base = head_docs() + services
        write_file(manifests, base)
        argv = [os.path.join(scripts_dir(), "skein-speaker"), "--node", "n1",
                "--manifests", str(manifests), "--api-socket", str(self.tmp / f"{run}.sock")]
        for start in range(self.starts):
            # Each start against a fresh router; the last speaker stays for the changes.
            ctl = self.bench.start_router(f"{run}-{start}")

            def imported() -> int:
                text = ctl.cmd("show protocols all spk")  # noqa: B023 - called in this pass
                match = bgp_scale._IMPORTED.search(text)
                return int(match.group(1)) if match else 0

            try:
                log = f"{run}-{start}.log"
                t0 = time.monotonic()
                proc = self.bench.popen(self.bench.speaker, argv, log, cwd=str(REPO))
                result.colds.append(self.wait(f"{count} routes at BIRD",
                                              lambda: imported() >= count,
                                              proc, log, 60 + count / 500) - t0)
                result.cold = median(result.colds)
                if start < self.starts - 1:
                    continue
                wait_quiet(proc.pid)
                for i in range(self.changes):
                    extra = service_doc(f"extra-{i}", address(count + i))
                    for kind, text, want in (("add", base + extra, count + 1),
                                             ("delete", base, count)):
                        before = cpu_seconds(proc.pid)
                        t1 = write_file(manifests, text)
                        held = self.wait(f"{kind} of extra-{i} at BIRD",
                                         lambda: imported() == want,  # noqa: B023 - at once
                                         proc, log, 120)
                        (result.add if kind == "add" else result.delete).append(held - t1)
                        result.cpu.append(wait_quiet(proc.pid) - before)
                start_cpu = cpu_seconds(proc.pid)
                time.sleep(self.idle)
                result.idle = (cpu_seconds(proc.pid) - start_cpu) / self.idle
                result.rss_mb = vm_hwm_mb(proc.pid)
            finally:
                ctl.close()
                self.bench.stop_procs()

    def controller(self, count: int, result: ControllerResult) -> None:
        """Fills `result` as it goes (a failure keeps what was measured)."""
        run = f"controller-{count}"
        manifests = self.tmp / f"{run}.yaml"
        head = head_docs()
        write_file(manifests, head + "".join(service_doc(f"svc-{i}", None)
                                             for i in range(count)))
        argv = [os.path.join(scripts_dir(), "skein-controller"), "--manifests", str(manifests)]

        def assigned() -> int:
            try:
                return manifests.read_bytes().count(b"ingress:")
            except FileNotFoundError:  # between the controller's unlink and rename
                return -1

        try:
            t0 = time.monotonic()
            proc = self.bench.popen(self.bench.speaker, argv, f"{run}.log", cwd=str(REPO))
            log = f"{run}.log"
            result.all_assigned = self.wait(f"{count} Services assigned",
                                            lambda: assigned() >= count, proc, log,
                                            120 + count / 50) - t0
            result.cold_cpu = wait_quiet(proc.pid, timeout=300)
            base = manifests.read_text()
            for i in range(self.controller_changes):
                before = cpu_seconds(proc.pid)
                t1 = write_file(manifests, base + service_doc(f"extra-{i}", None))
                done = self.wait(f"extra-{i} assigned", lambda: assigned() == count + 1,
                                 proc, log, 120)
                result.add.append(done - t1)
                result.cpu.append(wait_quiet(proc.pid, timeout=120) - before)
                write_file(manifests, base)
                wait_quiet(proc.pid, timeout=120)
            result.rss_mb = vm_hwm_mb(proc.pid)
        finally:
            self.bench.stop_procs()


# --- report -------------------------------------------------------------------------------

def ms(value: float) -> str:
    return f"{value * 1000:.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 and a == a else "n/a"


def report(direct: dict[int, bgp_scale.Result], speakers: dict[int, SpeakerResult],
           controllers: dict[int, ControllerResult]) -> None:
    print(f"\n{'N':>7}  {'direct s':>8} {'cold s':>7} {'x direct':>8} {'add ms':>7} "
          f"{'del ms':>7} {'CPU/chg ms':>10} {'idle %':>7} {'RSS MB':>7} {'direct MB':>9}")
    for n, s in speakers.items():
        d = direct.get(n)
        print(f"{n:>7}  {d.total if d else float('nan'):8.3f} {s.cold:7.3f} "
              f"{ratio(s.cold, d.total) if d else 'n/a':>8} {ms(median(s.add)):>7} "
              f"{ms(median(s.delete)):>7} {ms(median(s.cpu)):>10} {s.idle * 100:7.2f} "
              f"{s.rss_mb:7.1f} {d.rss_mb if d else float('nan'):9.1f}")
    if controllers:
        print(f"\n{'N':>7}  {'ctl all assigned s':>18} {'CPU s':>6} {'one more ms':>11} "
              f"{'CPU ms':>7} {'RSS MB':>7}")
        for n, c in controllers.items():
            print(f"{n:>7}  {c.all_assigned:18.3f} {c.cold_cpu:6.2f} {ms(median(c.add)):>11} "
                  f"{ms(median(c.cpu)):>7} {c.rss_mb:7.1f}")
    sizes = sorted(speakers)
    if len(sizes) > 1:
        lo, hi = speakers[sizes[0]], speakers[sizes[-1]]
        print(f"\nper change, N={sizes[-1]} over N={sizes[0]}: add "
              f"{ratio(median(hi.add), median(lo.add))}, delete "
              f"{ratio(median(hi.delete), median(lo.delete))}, CPU "
              f"{ratio(median(hi.cpu), median(lo.cpu))}")
    goals = []
    s10 = speakers.get(10_000)
    if s10 is not None:
        goals += [("cold start <= 1.0 s", s10.cold <= 1.0),
                  ("one change <= 50 ms to BIRD",
                   max(median(s10.add), median(s10.delete)) <= 0.05),
                  ("<= 20 ms CPU per change", median(s10.cpu) <= 0.02),
                  ("idle <= 1 % of a core", s10.idle <= 0.01),
                  ("peak RSS <= 100 MB", s10.rss_mb <= 100)]
    c10 = controllers.get(10_000)
    if c10 is not None:
        goals += [("controller all assigned <= 2 s", c10.all_assigned <= 2.0),
                  ("controller one change <= 50 ms", median(c10.add) <= 0.05)]
    if 1_000 in speakers and 50_000 in speakers:
        lo, hi = speakers[1_000], speakers[50_000]
        goals.append(("per change at 50k within 2x of 1k",
                      all(median(a) <= 2 * median(b) for a, b in
                          ((hi.add, lo.add), (hi.delete, lo.delete), (hi.cpu, lo.cpu)))))
    if goals:
        print("goals at 10,000: " + "; ".join(f"{what}: {'yes' if ok else 'NO'}"
                                              for what, ok in goals))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000",
                        help="comma-separated Service counts (default 1000,10000; add 50000)")
    parser.add_argument("--changes", type=int, default=10,
                        help="Services added and deleted per size (default 10)")
    parser.add_argument("--controller-changes", type=int, default=5,
                        help="Services added to the controller's file per size (default 5)")
    parser.add_argument("--starts", type=int, default=3,
                        help="cold starts per size, of the speaker and of the direct path; "
                             "the median is printed (default 3)")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds the idle speaker is watched (default 10)")
    parser.add_argument("--skip-direct", action="store_true", help="no direct-path reference")
    parser.add_argument("--skip-speaker", action="store_true")
    parser.add_argument("--skip-controller", action="store_true")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temp dir with manifests and logs")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or max(sizes) + args.changes > 131_072 or args.changes < 1 \
            or args.starts < 1:
        parser.error("bad --sizes or --changes")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    missing = [t for t in ("bird", "ip") if not shutil.which(t)]
    if missing:
        parser.error(f"missing: {', '.join(missing)}")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tag = new_tag()
    tmp = Path(tempfile.mkdtemp(prefix="skein-scale-"))
    bench = bgp_scale.Bench(tag, tmp, "split")
    scale = Scale(bench, tmp, args.changes, args.controller_changes, args.idle,
                  args.starts)
    print(f"scale benchmark: namespaces bgs{tag}r (router BIRD {ROUTER_IP}) and bgs{tag}s "
          f"(speaker {SPEAKER_IP}, /32s from {FIRST}); {os.cpu_count()} CPUs; load average "
          f"{loadavg()}", flush=True)
    direct: dict[int, bgp_scale.Result] = {}
    speakers: dict[int, SpeakerResult] = {}
    controllers: dict[int, ControllerResult] = {}
    try:
        bench.setup()
        failed = False
        for size in sizes:
            # A phase that fails (a daemon too slow for the timeouts, say) is
            # reported and the others still run.
            try:
                if not args.skip_direct:
                    direct[size] = bgp_scale.median_result(
                        [bench.measure("ours", size) for _ in range(args.starts)])
                    print(f"  direct {size}: {direct[size].total:.3f} s", file=sys.stderr,
                          flush=True)
            except Failed as exc:
                failed = True
                print(f"FAILED: direct {size}: {exc}", file=sys.stderr, flush=True)
            try:
                if not args.skip_speaker:
                    speakers[size] = s = SpeakerResult()
                    scale.speaker(size, s)
                    colds = ", ".join(f"{c:.3f}" for c in s.colds)
                    print(f"  speaker {size}: cold {s.cold:.3f} s ({colds}), "
                          f"add {ms(median(s.add))} ms, "
                          f"delete {ms(median(s.delete))} ms, CPU {ms(median(s.cpu))} ms, "
                          f"idle {s.idle * 100:.2f} %", file=sys.stderr, flush=True)
            except Failed as exc:
                failed = True
                print(f"FAILED: speaker {size}: {exc}", file=sys.stderr, flush=True)
            try:
                if not args.skip_controller:
                    controllers[size] = c = ControllerResult()
                    scale.controller(size, c)
                    print(f"  controller {size}: all {c.all_assigned:.3f} s, one more "
                          f"{ms(median(c.add))} ms", file=sys.stderr, flush=True)
            except Failed as exc:
                failed = True
                print(f"FAILED: controller {size}: {exc}", file=sys.stderr, flush=True)
        report(direct, speakers, controllers)
        print(f"load average at the end: {loadavg()}")
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        bench.teardown()
        if args.keep_logs:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
