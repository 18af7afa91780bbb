#!/usr/bin/env python3
"""BGP announce at scale: our speaker against BIRD 2 and ExaBGP, same run, same router.

For each size N (default 10,000 and 100,000 /32s from 10.200.0.0) and each
implementation, one after the other, a speaker process is started in a "speaker"
namespace and announces the N prefixes over eBGP (AS 64512) to a receiving BIRD 2
(AS 65112) in a "router" namespace, joined by a veth pair:

  ours     python3 -m speaker.bgp.runner CONFIG, the announce_range command written
           to its stdin right after the exec (the range is expanded and encoded in
           the speaker process, so that work is counted)
  bird     bird 2 with a `protocol static` of N blackhole routes generated into its
           config, exported over BGP (`connect delay time 1`, BIRD's minimum: BIRD
           waits that long before its first active connect)
  exabgp   ExaBGP 5 (`python3 -m exabgp server`, env exabgp_daemon_user=root), by
           default with static routes in its config written as the fewest aligned
           blocks `route 10.200.0.0/16 next-hop ... split /32;` (6 lines for 100k),
           the fastest way found to feed it: N `route` lines (`--exabgp-mode config`)
           took 3.6 s / 30 s here at 10k / 100k, its API (`--exabgp-mode api`: a
           helper process printing `announce attributes next-hop ... nlri P1 P2 ...`
           lines of 1,000 prefixes, acks off) 3.4 s / 38 s, split 3.2 s / 19 s

The router BIRD is restarted fresh for every run and is passive; its BGP channel
is `import all; export none;` and it has NO kernel protocol, so nothing is
installed into the router's kernel and the kernel is not the bottleneck.

Measured per run, on the monotonic clock, polling BIRD's control socket directly
(`show protocols all`) every few milliseconds:
  start->Est   exec of the speaker process until BIRD says Established
  Est->held    Established until BIRD has imported all N routes
  peak RSS     VmHWM of the speaker process (/proc/PID/status) when all are held
               (ExaBGP's API helper process is not included)

Our packages are compiled to bytecode first (their __pycache__, as Python
writes it by default, and as pip does for the image): with
PYTHONDONTWRITEBYTECODE set, every start would compile every module again.

Everything lives in two namespaces named bgs<tag>r / bgs<tag>s (random tag), with
configs, logs and control sockets in a temp dir; all daemons are killed and the
namespaces deleted at the end, also on Ctrl-C or failure.  Run as root:
`python3 bench/bgp_scale.py [--sizes 10000,100000] [--quick] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.netns import Netns, new_tag, veth_between  # noqa: E402
from tests.bgp.lab import Lab  # noqa: E402

IMPLS = ("ours", "bird", "exabgp")
PACKAGES = ("foundation", "speaker", "ipam", "cni_plugin")
ROUTER_IP = "10.97.0.1"
SPEAKER_IP = "10.97.0.2"
ROUTER_AS = 65112
SPEAKER_AS = 64512
FIRST = "10.200.0.0"
POLL = 0.005
EXABGP_LINE = 1000  # prefixes per `announce attributes ... nlri` API line


def prefixes(count: int) -> Iterator[str]:
    """count /32s from 10.200.0.0 upwards (at most 55 * 65536)."""
    for i in range(count):
        yield f"10.{200 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32"


def aligned_blocks(first: str, count: int) -> Iterator[str]:
    """The fewest aligned CIDR blocks covering `count` addresses from `first`."""
    start = int.from_bytes(socket.inet_aton(first), "big")
    end = start + count
    while start < end:
        size = start & -start if start else 1 << 32
        while size > end - start:
            size >>= 1
        yield f"{socket.inet_ntoa(start.to_bytes(4, 'big'))}/{33 - size.bit_length()}"
        start += size


# --- BIRD's control socket ---------------------------------------------------------------

class BirdControl:
    """The birdc protocol without spawning birdc: send a line, read numbered lines
    until one whose code is followed by a space (the last line of a reply)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.buf = b""
        self._reply()  # "0001 BIRD 2.x ready."

    def _reply(self) -> str:
        lines = []
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("BIRD closed its control socket")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            text = line.decode(errors="replace")
            lines.append(text)
            if len(text) >= 5 and text[:4].isdigit() and text[4] == " ":
                return "\n".join(lines)

    def cmd(self, command: str) -> str:
        self.sock.sendall(command.encode() + b"\n")
        return self._reply()

    def close(self) -> None:
        self.sock.close()


_STATE = re.compile(r"BGP state:\s+(\w+)")
_IMPORTED = re.compile(r"Routes:\s+(\d+) imported")


def router_config() -> str:
    return f"""
router id {ROUTER_IP};
protocol device {{ }}
protocol bgp spk {{
  local {ROUTER_IP} as {ROUTER_AS};
  neighbor {SPEAKER_IP} as {SPEAKER_AS};
  passive on;
  ipv4 {{ import all; export none; }};
}}
"""


def bird_speaker_config(count: int) -> str:
    routes = "".join(f"  route {p} blackhole;\n" for p in prefixes(count))
    return f"""
router id {SPEAKER_IP};
protocol device {{ }}
protocol static st {{
  ipv4;
{routes}}}
protocol bgp rtr {{
  local {SPEAKER_IP} as {SPEAKER_AS};
  neighbor {ROUTER_IP} as {ROUTER_AS};
  connect delay time 1;
  ipv4 {{ import none; export all; }};
}}
"""


# --- ExaBGP ------------------------------------------------------------------------------

EXABGP_HELPER = """\
import sys
first, count, nexthop, chunk = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
a, b, _, _ = (int(x) for x in first.split("."))
out = sys.stdout
for start in range(0, count, chunk):
    nlri = " ".join(f"{a}.{b + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32"
                    for i in range(start, min(count, start + chunk)))
    out.write(f"announce attributes next-hop {nexthop} nlri {nlri}\\n")
out.flush()
sys.stdin.read()  # stay until ExaBGP goes away
"""


def exabgp_config(count: int, mode: str, helper: Path) -> str:
    neighbor_head = f"""
neighbor {ROUTER_IP} {{
  router-id {SPEAKER_IP};
  local-address {SPEAKER_IP};
  local-as {SPEAKER_AS};
  peer-as {ROUTER_AS};
  family {{ ipv4 unicast; }}
"""
    if mode == "api":
        return f"""
process feeder {{
  run {sys.executable} {helper} {FIRST} {count} {SPEAKER_IP} {EXABGP_LINE};
  encoder text;
}}
{neighbor_head}
  api {{ processes [ feeder ]; }}
}}
"""
    if mode == "split":
        routes = "".join(
            f"    route {p} next-hop {SPEAKER_IP}{'' if p.endswith('/32') else ' split /32'};\n"
            for p in aligned_blocks(FIRST, count))
    else:
        routes = "".join(f"    route {p} next-hop {SPEAKER_IP};\n" for p in prefixes(count))
    return f"{neighbor_head}  static {{\n{routes}  }}\n}}\n"


# --- one run -----------------------------------------------------------------------------

@dataclass
class Result:
    impl: str
    size: int
    established: float
    held: float
    rss_mb: float
    totals: tuple[float, ...] = ()  # of every run, when repeated

    @property
    def total(self) -> float:
        return self.established + self.held


class Failed(Exception):
    pass


def status_mb(pid: int, field: str) -> float:
    """A /proc/PID/status size in MB (VmHWM: peak RSS, VmRSS: now); nan if gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def vm_hwm_mb(pid: int) -> float:
    return status_mb(pid, "VmHWM")


def compiled_env() -> dict[str, str]:
    """os.environ for processes that load our packages from bytecode, compiled now."""
    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Bench:
    def __init__(self, tag: str, tmp: Path, exabgp_mode: str) -> None:
        self.tag = tag
        self.tmp = tmp
        self.exabgp_mode = exabgp_mode
        self.router = Netns(f"bgs{tag}r")
        self.speaker = Netns(f"bgs{tag}s")
        self.lab = Lab(self.router, [self.speaker], tmp)  # its stop_all kills what we start
        self.files: list[IO[Any]] = []
        self.runs = 0
        self.env = compiled_env()

    # lab -------------------------------------------------------------------------------

    def setup(self) -> None:
        self.router.create()
        self.speaker.create()
        veth_between(self.router, f"bgs{self.tag}r0", self.speaker, f"bgs{self.tag}s0")
        self.router.ip("addr", "add", f"{ROUTER_IP}/24", "dev", f"bgs{self.tag}r0")
        self.speaker.ip("addr", "add", f"{SPEAKER_IP}/24", "dev", f"bgs{self.tag}s0")

    def teardown(self) -> None:
        self.stop_procs()
        for ns in (self.speaker, self.router):
            ns.delete()

    def stop_procs(self) -> None:
        self.lab.stop_all()
        self.lab.procs.clear()
        for fh in self.files:
            fh.close()
        self.files.clear()

    def log(self, name: str) -> IO[Any]:
        fh = open(self.tmp / name, "w")  # noqa: SIM115 - closed in stop_procs
        self.files.append(fh)
        return fh

    def popen(self, ns: Netns, argv: list[str], log: str, **kw: Any) -> subprocess.Popen[Any]:
        out = self.log(log)
        kw.setdefault("env", self.env)
        proc = ns.popen(*argv, stdout=kw.pop("stdout", out), stderr=out, **kw)
        self.lab.procs.append(proc)
        return proc

    def start_router(self, run: str) -> BirdControl:
        cfg = self.tmp / f"{run}-router.conf"
        cfg.write_text(router_config())
        sock = str(self.tmp / f"{run}-router.ctl")
        proc = self.popen(self.router, ["bird", "-f", "-c", str(cfg), "-s", sock],
                          f"{run}-router.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Failed(f"router BIRD exited: {(self.tmp / f'{run}-router.log').read_text()}")
            if os.path.exists(sock):
                try:
                    return BirdControl(sock)
                except OSError:
                    pass
            time.sleep(0.01)
        raise Failed("router BIRD control socket did not appear")

    # speakers --------------------------------------------------------------------------

    def prepare(self, impl: str, count: int, run: str) -> tuple[list[str], dict[str, str]]:
        """argv and env of the speaker process; files are written before the clock starts."""
        env = dict(self.env)
        if impl == "ours":
            cfg = self.tmp / f"{run}.json"
            cfg.write_text(json.dumps({
                "router_id": SPEAKER_IP, "listen": None,
                "peers": [{"peer_address": ROUTER_IP, "peer_asn": ROUTER_AS,
                           "my_asn": SPEAKER_AS, "families": ["ipv4-unicast"]}]}))
            env["PYTHONPATH"] = str(REPO)
            return [sys.executable, "-m", "speaker.bgp.runner", str(cfg)], env
        if impl == "bird":
            cfg = self.tmp / f"{run}.conf"
            cfg.write_text(bird_speaker_config(count))
            return ["bird", "-f", "-c", str(cfg), "-s", str(self.tmp / f"{run}.ctl")], env
        helper = self.tmp / "exabgp_feeder.py"
        helper.write_text(EXABGP_HELPER)
        cfg = self.tmp / f"{run}.conf"
        cfg.write_text(exabgp_config(count, self.exabgp_mode, helper))
        env.update(exabgp_daemon_user="root", exabgp_api_ack="false",
                   exabgp_log_destination="stdout")
        # The interpreter itself, not a pyenv shim (a shell script in front of it).
        return [sys.executable, "-m", "exabgp", "server", str(cfg)], env

    def measure(self, impl: str, count: int) -> Result:
        self.runs += 1
        run = f"{impl}-{count}-{self.runs}"
        ctl = self.start_router(run)
        try:
            argv, env = self.prepare(impl, count, run)
            stdin = subprocess.PIPE if impl == "ours" else subprocess.DEVNULL
            t0 = time.monotonic()
            proc = self.popen(self.speaker, argv, f"{run}.log", env=env, cwd=str(REPO),
                              stdin=stdin, stdout=subprocess.DEVNULL if impl == "ours" else None)
            if impl == "ours":
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"cmd": "announce_range", "start": FIRST,
                                             "count": count}).encode() + b"\n")
                proc.stdin.flush()
            t_est: float | None = None
            deadline = t0 + 60 + count / 1000
            while True:
                now = time.monotonic()
                if now > deadline:
                    raise Failed(f"{impl} {count}: timed out (Established: {t_est is not None})")
                if proc.poll() is not None:
                    raise Failed(f"{impl} exited with {proc.returncode}: "
                                 f"{(self.tmp / f'{run}.log').read_text()[-2000:]}")
                text = ctl.cmd("show protocols all spk")
                now = time.monotonic()
                state = _STATE.search(text)
                if t_est is None and state and state.group(1) == "Established":
                    t_est = now
                if t_est is not None:
                    imported = _IMPORTED.search(text)
                    if imported and int(imported.group(1)) >= count:
                        rss = vm_hwm_mb(proc.pid)
                        return Result(impl, count, t_est - t0, now - t_est, rss)
                time.sleep(POLL)
        finally:
            ctl.close()
            self.stop_procs()


# --- report ------------------------------------------------------------------------------

def median_result(results: list[Result]) -> Result:
    """The run with the median total (the lower one of an even count), with every
    run's total attached."""
    ordered = sorted(results, key=lambda r: r.total)
    pick = ordered[(len(ordered) - 1) // 2]
    return dataclasses.replace(pick, totals=tuple(r.total for r in results))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def report(table: dict[int, dict[str, Result]], repeat: int) -> None:
    head = f"{'start->Est s':>12} {'Est->held s':>12} {'total s':>8} {'peak RSS MB':>12}"
    print(f"{'size':>7}  {'impl':13} {head}" + ("  totals of all runs" if repeat > 1 else ""))
    for size, row in table.items():
        for impl, r in row.items():
            runs = " ".join(f"{t:.3f}" for t in r.totals) if repeat > 1 else ""
            print(f"{size:>7}  {impl:13} {r.established:12.3f} {r.held:12.3f} "
                  f"{r.total:8.3f} {r.rss_mb:12.1f}  {runs}".rstrip())
    for size, row in table.items():
        ours = row.get("ours")
        for other in ("bird", "exabgp"):
            base = row.get(other)
            if ours is None or base is None:
                continue
            print(f"{size:>7}  {'ours/' + other:13} "
                  f"{ratio(ours.established, base.established):>12} "
                  f"{ratio(ours.held, base.held):>12} {ratio(ours.total, base.total):>8} "
                  f"{ratio(ours.rss_mb, base.rss_mb):>12}")
    if repeat > 1:
        print(f"(the run with the median total of {repeat}; ratios between those runs)")
    goals = []
    for size, row in table.items():
        ours = row.get("ours")
        if ours is None:
            continue
        if "exabgp" in row:
            goals.append((f"{size}: total faster than ExaBGP", ours.total < row["exabgp"].total))
        if "bird" in row:
            goals.append((f"{size}: total within 2x of BIRD", ours.total <= 2 * row["bird"].total))
        if size >= 100_000:
            goals.append((f"{size}: peak RSS <= 100 MB", ours.rss_mb <= 100))
    if goals:
        print("goals: " + "; ".join(f"{what}: {'yes' if ok else 'NO'}" for what, ok in goals))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000",
                        help="comma-separated prefix counts (default 10000,100000)")
    parser.add_argument("--quick", action="store_true", help="10,000 prefixes only")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per cell (default 3); the run with the median total is shown")
    parser.add_argument("--exabgp-mode", choices=("split", "config", "api"), default="split",
                        help="ExaBGP's routes: config blocks with `split /32` (default), "
                        "N config lines, or its API")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temp dir with configs and logs")
    args = parser.parse_args(argv)
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    impls = [i for i in args.impls.split(",") if i]
    unknown = set(impls) - set(IMPLS)
    if unknown or not sizes or max(sizes) > 55 * 65536:
        parser.error(f"bad --impls {sorted(unknown)} or --sizes")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    missing = [t for t in ("bird", "ip") if not shutil.which(t)]
    if "exabgp" in impls:
        probe = subprocess.run([sys.executable, "-c", "import exabgp"], capture_output=True,
                               check=False)
        if probe.returncode != 0:
            missing.append("exabgp (pip install exabgp)")
    if missing:
        parser.error(f"missing: {', '.join(missing)}")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tag = new_tag()
    tmp = Path(tempfile.mkdtemp(prefix="skein-bgpbench-"))
    bench = Bench(tag, tmp, args.exabgp_mode)
    print(f"BGP announce benchmark: namespaces bgs{tag}r (router BIRD {ROUTER_IP}, passive, "
          f"import all, export none, no kernel protocol) and bgs{tag}s (speaker {SPEAKER_IP}); "
          f"/32s from {FIRST}; ExaBGP routes: {args.exabgp_mode}", flush=True)
    table: dict[int, dict[str, Result]] = {}
    try:
        bench.setup()
        for size in sizes:
            table[size] = {}
            for impl in impls:
                runs = []
                for _ in range(max(1, args.repeat)):
                    runs.append(bench.measure(impl, size))
                    print(f"  {impl} {size}: {runs[-1].total:.3f} s, {runs[-1].rss_mb:.1f} MB",
                          file=sys.stderr, flush=True)
                table[size][impl] = median_result(runs)
        report(table, args.repeat)
        return 0
    except Failed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
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
