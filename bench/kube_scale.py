#!/usr/bin/env python3
"""N LoadBalancer Services through the Kubernetes API: skein-controller and the
skein-speaker DaemonSet of the kube lab, to the lab's BIRD router.

    python3 bench/kube_scale.py [--workdir DIR] [--up] [--services 10000] [--changes 10]

Against the kube lab that `skein-lab kube up` started in DIR (or, with `--up`,
one it starts and removes): bench/scale.py's measurement with the API as the
source instead of a manifests file, and everything else a cluster has running
beside it (three kubelets and kube-proxies, the speakers' status objects).

- In namespace `scale`: a Deployment `scale-backend` of 3 busybox pods, one per
  node, so that every Service has ready endpoints (a speaker announces only
  those); in metallb-system an IPAddressPool `scale-pool` (10.200.0.0/16, apart
  from the lab's pods, Services, underlay and example pools: checked) and a
  BGPAdvertisement of it to the peer `router` (install/examples/bgp-peer.yaml).
- N Services of type LoadBalancer (allocateLoadBalancerNodePorts: false, so
  that N may exceed the NodePort range; the scale-pool annotation), created
  through the API by --threads clients.  Timed from the first create: all
  created; all assigned (status.loadBalancer.ingress, seen on a watch); all
  held at BIRD (one path each, then one per node); the speakers' status
  objects (a ServiceBGPStatus per Service and node, as MetalLB's) all written;
  the speakers and the controller quiet again (at most --settle seconds:
  quiet is at most one 10 ms tick over its idle rate in half a second).
- The idle CPU of each process over --idle seconds, before the Services
  ("idle0") and with them ("idle").
- --changes times: one more Service (asking for its address, so that BIRD is
  polled for it from the create on), timed from the create call to its
  ingress, to its /32 at BIRD from a first node and from all of them; then
  deleted, to its /32 withdrawn.  The CPU of each process for each add and
  each delete is /proc/PID/stat utime+stime from before the API call until
  every daemon is quiet again (its status objects and Events written too; at
  most 10 s), as measured and net of its idle rate over that time.
- How often each speaker found a peer dead by its heartbeats (from its log):
  a change of liveness makes a speaker elect the owner of every layer 2
  address again and give each announcer its whole plan.
- kube-proxy's sync_proxy_rules duration (its metrics, in each node's network
  namespace) over the bulk and over the changes, as it has to program every
  Service too.
- At the end: every process's peak RSS (VmHWM) and the restarts of Skein's
  pods (a container over its memory limit is killed and starts over).

The measurement runs in the control plane's network namespace; BIRD is asked
through its control socket (a unix socket, as birdc does).  What it created is
deleted at the end (the namespace, the pool, the advertisement; the time until
BIRD no longer holds any of the N is printed) unless --keep.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bgp_scale import BirdControl, status_mb, vm_hwm_mb  # noqa: E402
from scale import loadavg, median  # noqa: E402

from lab.kube.cluster import (  # noqa: E402
    BGP_POOL,
    CLUSTER_CIDR,
    DEFAULT_WORKDIR,
    EXAMPLES,
    SERVICE_CIDR,
    SKEIN_NAMESPACE,
    UNDERLAY,
    KubeLab,
)
from lab.kube.image import BUSYBOX_IMAGE  # noqa: E402

NS = "scale"
BACKEND = "scale-backend"
METALLB_NS = "metallb-system"
POOL_NAME = "scale-pool"
POOL = ipaddress.ip_network("10.200.0.0/16")
PEER = "router"                     # install/examples/bgp-peer.yaml's BGPPeer
CHANGE_NET = "10.200.254"           # the changes ask for .1, .2, ...: far above the N
MAX_SERVICES = 60_000               # so that the N never reach CHANGE_NET
POLL = 0.005
CHANGE_QUIET = 10.0                 # seconds a change's CPU is followed at most
QUIET_WINDOW = 0.5                  # a daemon is done when it used (almost) no CPU ...
QUIET_CPU = 0.01                    # ... in a window: at most one 10 ms tick over its idle
CLK_TCK = os.sysconf("SC_CLK_TCK")
_COUNT = re.compile(r"(\d+) of (\d+) routes for (\d+) networks")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ms(value: float) -> str:
    return "n/a" if value != value else f"{value * 1000:.0f}"


def check_pool() -> None:
    """10.200.0.0/16 must meet none of the lab's own ranges."""
    others = {"pods": CLUSTER_CIDR, "services": "10.96.0.0/12", "lab services": SERVICE_CIDR,
              "underlay": str(UNDERLAY), "bgp-pool example": BGP_POOL}
    text = (EXAMPLES / "l2-pool.yaml").read_text()
    for first, last in re.findall(r"(\d+\.\d+\.\d+\.\d+)-(\d+\.\d+\.\d+\.\d+)", text):
        for net in ipaddress.summarize_address_range(ipaddress.ip_address(first),
                                                     ipaddress.ip_address(last)):
            others[f"l2-pool example {net}"] = str(net)
    for what, cidr in others.items():
        if POOL.overlaps(ipaddress.ip_network(cidr)):
            raise SystemExit(f"{POOL} overlaps the lab's {what} ({cidr})")


# --- the lab's processes, from the host's /proc -------------------------------------------

@dataclass
class Proc:
    role: str   # skein-speaker, skein-controller, kube-proxy, kube-apiserver, etcd
    where: str  # node1 ... or control-plane
    pid: int

    @property
    def label(self) -> str:
        return f"{self.role} ({self.where})" if self.role != "skein-speaker" else \
            f"speaker {self.where}"


ROLES = ("skein-speaker", "skein-controller", "kube-proxy", "kube-apiserver", "etcd")


def lab_procs(lab: KubeLab) -> list[Proc]:
    """The daemons of this lab (and no other's: by the lab's cgroup), speakers first."""
    assert lab.state is not None
    prefix = lab.state.cgroup + "/"
    found: list[Proc] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            with open(f"/proc/{entry}/cgroup") as fh:
                cgroup = fh.read()
        except OSError:
            continue
        # The daemon itself, not a shell or nsenter around it: its program (or, for
        # an interpreter, its script) is the role.
        names = [os.path.basename(a) for a in argv[:2]]
        role = next((r for r in ROLES if r in names), None)
        at = cgroup.find(prefix)
        if role is None or at < 0 or argv[0] in ("nsenter", "unshare"):
            continue
        where = cgroup[at + len(prefix):].split("/", 1)[0].split("\n", 1)[0]
        found.append(Proc(role, where, int(entry)))
    order = {r: i for i, r in enumerate(ROLES)}
    return sorted(found, key=lambda p: (order[p.role], p.where, p.pid))


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (its threads, live and gone) and of the
    children it waited for (kube-proxy's iptables-restore), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return float("nan")
    fields = text[text.rfind(")") + 2:].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def vm_rss_mb(pid: int) -> float:
    return status_mb(pid, "VmRSS")


def cpu_of(procs: Iterable[Proc]) -> dict[int, float]:
    return {p.pid: cpu_seconds(p.pid) for p in procs}


def wait_quiet(procs: list[Proc], idle: dict[int, float], timeout: float) -> bool:
    """Until every process used at most QUIET_CPU over its idle rate (CPU seconds per
    second) in one QUIET_WINDOW; False on timeout."""
    deadline = time.monotonic() + timeout
    last = cpu_of(procs)
    while time.monotonic() < deadline:
        time.sleep(QUIET_WINDOW)
        now = cpu_of(procs)
        if all(now[p.pid] - last[p.pid] <= QUIET_CPU + idle.get(p.pid, 0.0) * QUIET_WINDOW
               for p in procs):
            return True
        last = now
    return False


# --- kube-proxy's metrics -----------------------------------------------------------------

# Its IPv4 syncs, full (every rule) and partial (the Services that changed).
_SYNC = re.compile(r'^kubeproxy_sync_(full|partial)_proxy_rules_duration_seconds_(sum|count)'
                   r'\{ip_family="IPv4"\} (\S+)$', re.M)
Syncs = dict[tuple[str, str, str], float]  # (node, full|partial, sum|count) -> value


def proxy_sync(lab: KubeLab) -> Syncs:
    """kube-proxy's sync histograms so far, from each node's metrics port."""
    out: Syncs = {}
    for spec in lab.node_specs():
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{spec.netns}", "curl", "-sS",
                               "--max-time", "10", "http://127.0.0.1:10249/metrics"],
                              capture_output=True, text=True, check=False, timeout=20)
        for kind, stat, value in _SYNC.findall(proc.stdout):
            out[spec.name, kind, stat] = float(value)
    return out


def sync_text(before: Syncs, after: Syncs) -> str:
    parts = []
    for node in sorted({k[0] for k in after}):
        words = []
        for kind in ("full", "partial"):
            n = after.get((node, kind, "count"), 0.0) - before.get((node, kind, "count"), 0.0)
            total = after.get((node, kind, "sum"), 0.0) - before.get((node, kind, "sum"), 0.0)
            words.append(f"{n:.0f} {kind}" + (f" (mean {total / n:.2f} s)" if n else ""))
        parts.append(f"{node} " + ", ".join(words))
    return "; ".join(parts) or "no metrics"


# --- the watch of the bench's Services -----------------------------------------------------

class IngressWatch:
    """When each Service of NS was first seen with status.loadBalancer.ingress: one
    watch of the namespace (raw JSON lines, no model objects), resumed from the last
    resourceVersion seen, listed again on 410."""

    def __init__(self, make_core: Callable[[], Any]) -> None:
        self.core = make_core()
        self.assigned: dict[str, float] = {}
        self.ips: dict[str, str] = {}
        self.stop = threading.Event()
        self.errors = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="IngressWatch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _see(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if ingress and name not in self.assigned:
            with self.lock:
                self.ips[name] = ingress[0].get("ip", "")
                self.assigned[name] = now

    def last(self) -> float:
        with self.lock:
            return max(self.assigned.values(), default=float("nan"))

    def _list(self) -> str:
        resp = self.core.list_namespaced_service(NS, _preload_content=False)
        body = json.loads(resp.data)
        now = time.monotonic()
        for obj in body.get("items") or []:
            self._see(obj, now)
        return str(body["metadata"]["resourceVersion"])

    def _run(self) -> None:
        version = ""
        while not self.stop.is_set():
            try:
                if not version:
                    version = self._list()
                resp = self.core.list_namespaced_service(
                    NS, watch=True, resource_version=version, allow_watch_bookmarks=True,
                    timeout_seconds=300, _preload_content=False, _request_timeout=(10, 330))
                buffer = b""
                for chunk in resp.stream(65536):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            version = ""  # 410 Gone or worse: list again
                            raise ConnectionError(str(obj.get("message")))
                        version = obj.get("metadata", {}).get("resourceVersion") or version
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._see(obj, time.monotonic())
                    if self.stop.is_set():
                        return
                resp.release_conn()
            except Exception as exc:  # noqa: BLE001 - the watch goes on
                self.errors += 1
                if self.errors <= 3:
                    log(f"  (Service watch: {type(exc).__name__}: {exc}; resuming)")
                time.sleep(0.5)


# --- BIRD ---------------------------------------------------------------------------------

class Bird:
    def __init__(self, socket_path: Path) -> None:
        self.ctl = BirdControl(str(socket_path))

    def pool_count(self) -> tuple[int, int]:
        """(routes, networks) of the pool at BIRD."""
        text = self.ctl.cmd(f"show route where net ~ {POOL} count")
        match = _COUNT.search(text)
        return (int(match.group(1)), int(match.group(3))) if match else (0, 0)

    def paths(self, ip: str) -> int:
        """How many paths (one per announcing node) BIRD holds for ip/32."""
        text = self.ctl.cmd(f"show route {ip}/32")
        return len(re.findall(r"\bunicast\b", text))

    def close(self) -> None:
        self.ctl.close()


# --- results ------------------------------------------------------------------------------

@dataclass
class Bulk:
    flaps: dict[str, int] = field(default_factory=dict)   # per node, over the bulk
    created: float = float("nan")
    assigned: float = float("nan")
    bird_one: float = float("nan")      # every /32 held with at least one path
    bird_all: float = float("nan")      # every /32 held from every node
    statuses: float = float("nan")      # every ServiceBGPStatus written
    quiet: float = float("nan")
    status_count: int = 0
    cpu: dict[int, float] = field(default_factory=dict)


@dataclass
class Changes:
    create: list[float] = field(default_factory=list)     # the API call
    ingress: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    all: list[float] = field(default_factory=list)
    withdrawn: list[float] = field(default_factory=list)
    # CPU seconds per process and change, as measured and net of its idle rate
    cpu_add: dict[int, list[float]] = field(default_factory=dict)
    cpu_del: dict[int, list[float]] = field(default_factory=dict)
    net_add: dict[int, list[float]] = field(default_factory=dict)
    net_del: dict[int, list[float]] = field(default_factory=dict)
    window: list[float] = field(default_factory=list)  # seconds from the call to quiet
    not_quiet: int = 0
    flaps: dict[str, int] = field(default_factory=dict)   # per node, idle and changes


# --- the bench ----------------------------------------------------------------------------

class Bench:
    def __init__(self, lab: KubeLab, args: argparse.Namespace) -> None:
        from kubernetes import client, config

        self.lab = lab
        self.args = args
        self.client = client
        self.configuration = client.Configuration()
        config.load_kube_config(str(lab.kubeconfig), client_configuration=self.configuration)
        self.configuration.connection_pool_maxsize = max(4, args.threads)
        self.api = client.ApiClient(self.configuration)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.nodes = len(lab.node_specs())
        self.local = threading.local()

    def new_core(self) -> Any:
        return self.client.CoreV1Api(self.client.ApiClient(self.configuration))

    def thread_core(self) -> Any:
        core = getattr(self.local, "core", None)
        if core is None:
            core = self.local.core = self.new_core()
        return core

    # -- objects ------------------------------------------------------------------
    @staticmethod
    def service_body(name: str, ip: str | None = None) -> dict[str, Any]:
        annotations = {"metallb.io/address-pool": POOL_NAME}
        if ip is not None:
            annotations["metallb.io/loadBalancerIPs"] = ip
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": NS, "annotations": annotations},
                "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                         "selector": {"app": BACKEND},
                         "ports": [{"port": 80, "protocol": "TCP"}]}}

    def create_service(self, name: str, ip: str | None = None) -> None:
        for attempt in range(8):
            try:
                resp = self.thread_core().create_namespaced_service(
                    NS, self.service_body(name, ip), _preload_content=False)
                resp.read()  # the whole body, or the pooled connection is left mid-reply
                resp.release_conn()
                return
            except self.client.ApiException as exc:
                if exc.status == 409:
                    return
                if exc.status not in (429, 500, 503, 504) or attempt == 7:
                    raise
            except OSError:
                if attempt == 7:
                    raise
            time.sleep(0.2 * (attempt + 1))

    def setup(self) -> None:
        client = self.client
        try:
            self.core.read_namespace(NS)
            log(f"namespace {NS} exists (a --keep run?): deleting it first")
            self.delete_namespace(timeout=900)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        namespace: Any = {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": NS}}
        self.core.create_namespace(namespace)
        objects: tuple[tuple[str, dict[str, Any]], ...] = (
                ("ipaddresspools", {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                                    "metadata": {"name": POOL_NAME, "namespace": METALLB_NS},
                                    "spec": {"addresses": [str(POOL)]}}),
                ("bgpadvertisements", {"apiVersion": "metallb.io/v1beta1",
                                       "kind": "BGPAdvertisement",
                                       "metadata": {"name": POOL_NAME, "namespace": METALLB_NS},
                                       "spec": {"ipAddressPools": [POOL_NAME],
                                                "peers": [PEER]}}))
        for plural, body in objects:
            try:
                self.custom.create_namespaced_custom_object("metallb.io", "v1beta1", METALLB_NS,
                                                            plural, body)
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
        pod_spec = {"terminationGracePeriodSeconds": 0,
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": BACKEND}}}],
                    "containers": [{"name": "c", "image": BUSYBOX_IMAGE,
                                    "imagePullPolicy": "Never",
                                    "command": ["sleep", "1000000"]}]}
        deployment: Any = {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": BACKEND},
            "spec": {"replicas": self.nodes, "selector": {"matchLabels": {"app": BACKEND}},
                     "template": {"metadata": {"labels": {"app": BACKEND}}, "spec": pod_spec}}}
        self.apps.create_namespaced_deployment(NS, deployment)
        deadline = time.monotonic() + 300
        while True:
            pods: list[Any] = self.core.list_namespaced_pod(NS,
                                                            label_selector=f"app={BACKEND}").items
            ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                            for c in (p.status.conditions or []))]
            if len(ready) >= self.nodes:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{BACKEND}: {len(ready)}/{self.nodes} pods ready in 300 s")
            time.sleep(1)
        on = sorted({p.spec.node_name for p in ready})
        log(f"{BACKEND}: {len(ready)} pods ready on {', '.join(on)}")

    def status_objects(self) -> int:
        """How many ServiceBGPStatus objects exist (one page of 1: the count is in it)."""
        body: Any = self.custom.list_namespaced_custom_object(
            "metallb.io", "v1beta1", SKEIN_NAMESPACE, "servicebgpstatuses", limit=1)
        meta = body.get("metadata") or {}
        return len(body.get("items") or []) + int(meta.get("remainingItemCount") or 0)

    def delete_namespace(self, timeout: float) -> bool:
        try:
            self.core.delete_namespace(NS)
        except self.client.ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.core.read_namespace(NS)
            except self.client.ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            time.sleep(1)
        return False

    def clean(self, bird: Bird) -> None:
        start = time.monotonic()
        self.core.delete_namespace(NS)
        gone = float("nan")
        while time.monotonic() - start < 900:
            if bird.pool_count() == (0, 0):
                gone = time.monotonic() - start
                break
            time.sleep(0.5)
        log(f"cleanup: namespace {NS} deleted; BIRD holds none of the pool after "
            f"{gone:.1f} s")
        if not self.delete_namespace(timeout=900):
            log(f"namespace {NS} still terminating after 900 s")
        for plural in ("bgpadvertisements", "ipaddresspools"):
            try:
                self.custom.delete_namespaced_custom_object("metallb.io", "v1beta1", METALLB_NS,
                                                            plural, POOL_NAME)
            except self.client.ApiException as exc:
                if exc.status != 404:
                    raise

    # -- the measurements ---------------------------------------------------------
    def bulk(self, count: int, watch: IngressWatch, bird: Bird, procs: list[Proc],
             idle: dict[int, float], result: Bulk) -> None:
        speakers = [p for p in procs if p.role in ("skein-speaker", "skein-controller")]
        cpu0 = cpu_of(procs)
        t0 = time.monotonic()
        created = [0]

        def create(i: int) -> None:
            self.create_service(f"svc-{i}")
            created[0] += 1

        pool = ThreadPoolExecutor(self.args.threads)
        futures = [pool.submit(create, i) for i in range(count)]
        deadline = t0 + self.args.timeout
        next_report = t0 + 10
        next_status = t0
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if result.created != result.created and all(f.done() for f in futures):
                    for f in futures:
                        f.result()  # raises what a create raised
                    result.created = now - t0
                if result.assigned != result.assigned and len(watch.assigned) >= count:
                    result.assigned = watch.last() - t0
                routes, networks = bird.pool_count()
                if result.bird_one != result.bird_one and networks >= count:
                    result.bird_one = time.monotonic() - t0
                if result.bird_all != result.bird_all and routes >= count * self.nodes:
                    result.bird_all = time.monotonic() - t0
                if now >= next_status:
                    result.status_count = self.status_objects()
                    next_status = now + 2
                    if (result.statuses != result.statuses
                            and result.status_count >= count * self.nodes):
                        result.statuses = time.monotonic() - t0
                if now >= next_report:
                    log(f"  {now - t0:5.0f} s: created {created[0]}, assigned "
                        f"{len(watch.assigned)}, BIRD {networks} networks / {routes} routes, "
                        f"{result.status_count} ServiceBGPStatus; load {loadavg()}")
                    next_report = now + 10
                if result.statuses == result.statuses and result.bird_all == result.bird_all:
                    break
                time.sleep(0.5)
            else:
                log(f"timed out after {self.args.timeout:.0f} s")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if wait_quiet(speakers, idle, timeout=self.args.settle):
            result.quiet = time.monotonic() - t0
        cpu1 = cpu_of(procs)
        result.cpu = {pid: cpu1[pid] - cpu0[pid] for pid in cpu0}
        result.flaps = self.flaps(time.monotonic() - t0)

    def idle(self, procs: list[Proc], seconds: float) -> dict[int, float]:
        """CPU seconds per second of each process with nothing changing."""
        before = cpu_of(procs)
        time.sleep(seconds)
        after = cpu_of(procs)
        return {pid: (after[pid] - before[pid]) / seconds for pid in before}

    def changes(self, count: int, watch: IngressWatch, bird: Bird, procs: list[Proc],
                idle: dict[int, float], result: Changes) -> None:
        daemons = [p for p in procs if p.role in ("skein-speaker", "skein-controller")]
        for i in range(count):
            name, ip = f"change-{i}", f"{CHANGE_NET}.{i + 1}"
            before = cpu_of(daemons)
            t0 = time.monotonic()
            self.create_service(name, ip)
            result.create.append(time.monotonic() - t0)
            first = ingress = everywhere = float("nan")
            deadline = t0 + 120
            while time.monotonic() < deadline:
                paths = bird.paths(ip)
                now = time.monotonic()
                if paths and first != first:
                    first = now - t0
                if paths >= self.nodes:
                    everywhere = now - t0
                if name in watch.assigned and ingress != ingress:
                    ingress = watch.assigned[name] - t0
                if everywhere == everywhere and ingress == ingress:
                    break
                time.sleep(POLL)
            else:
                raise SystemExit(f"{name} ({ip}): ingress {ms(ingress)} ms, first path "
                                 f"{ms(first)} ms, not at BIRD from every node in 120 s")
            result.ingress.append(ingress)
            result.first.append(first)
            result.all.append(everywhere)
            if not wait_quiet(daemons, idle, CHANGE_QUIET):
                result.not_quiet += 1
            after = cpu_of(daemons)
            self.account(daemons, idle, before, after, time.monotonic() - t0,
                         result.cpu_add, result.net_add, result.window)

            before = after
            t0 = time.monotonic()
            self.thread_core().delete_namespaced_service(name, NS)
            while bird.paths(ip):
                if time.monotonic() - t0 > 120:
                    raise SystemExit(f"{name} ({ip}) still at BIRD 120 s after its delete")
                time.sleep(POLL)
            result.withdrawn.append(time.monotonic() - t0)
            if not wait_quiet(daemons, idle, CHANGE_QUIET):
                result.not_quiet += 1
            after = cpu_of(daemons)
            self.account(daemons, idle, before, after, time.monotonic() - t0,
                         result.cpu_del, result.net_del, result.window)
            log(f"  change {i + 1}/{count}: ingress {ms(ingress)} ms, BIRD first "
                f"{ms(first)} ms, all {ms(everywhere)} ms, withdrawn "
                f"{ms(result.withdrawn[-1])} ms")

    @staticmethod
    def account(procs: list[Proc], idle: dict[int, float], before: dict[int, float],
                after: dict[int, float], seconds: float, raw: dict[int, list[float]],
                net: dict[int, list[float]], windows: list[float]) -> None:
        windows.append(seconds)
        for p in procs:
            used = after[p.pid] - before[p.pid]
            raw.setdefault(p.pid, []).append(used)
            net.setdefault(p.pid, []).append(used - idle.get(p.pid, 0.0) * seconds)

    def flaps(self, since: float) -> dict[str, int]:
        """Per speaker pod: how often it logged a peer dead by its heartbeats in the last
        `since` seconds (each is a change of liveness, which the speaker re-plans on)."""
        out = {}
        pods: list[Any] = self.core.list_namespaced_pod(
            SKEIN_NAMESPACE, label_selector="app.kubernetes.io/name=skein-speaker").items
        for pod in pods:
            text = self.core.read_namespaced_pod_log(pod.metadata.name, SKEIN_NAMESPACE,
                                                     since_seconds=max(1, int(since)))
            out[pod.spec.node_name] = text.count("considered dead")
        return out

    def restarts(self) -> list[str]:
        lines = []
        pods: list[Any] = self.core.list_namespaced_pod(SKEIN_NAMESPACE).items
        for pod in pods:
            for c in pod.status.container_statuses or []:
                if c.restart_count:
                    last = c.last_state.terminated if c.last_state else None
                    lines.append(f"{pod.metadata.name}/{c.name}: {c.restart_count} restarts"
                                 f" (last: {last.reason if last else '?'})")
        return lines


# --- report -------------------------------------------------------------------------------

def report(count: int, nodes: int, bulk: Bulk, changes: Changes, idle0: dict[int, float],
           idle: dict[int, float], procs: list[Proc], sync: list[Syncs],
           restarts: list[str], idle_seconds: float) -> None:
    def s(value: float) -> str:
        return "n/a" if value != value else f"{value:.1f}"

    print(f"\nN = {count} Services of type LoadBalancer through the API, {nodes} nodes, "
          f"{os.cpu_count()} CPUs")
    print(f"  all created                        {s(bulk.created):>7} s")
    print(f"  all assigned (ingress written)     {s(bulk.assigned):>7} s")
    print(f"  all held at BIRD, one path each    {s(bulk.bird_one):>7} s")
    print(f"  all held at BIRD from every node   {s(bulk.bird_all):>7} s")
    print(f"  all ServiceBGPStatus written       {s(bulk.statuses):>7} s   "
          f"({bulk.status_count} of {count * nodes})")
    print(f"  speakers and controller quiet      {s(bulk.quiet):>7} s"
          + ("" if bulk.quiet == bulk.quiet else "   (not within --settle)"))
    n = len(changes.all)
    print(f"\none more Service, median of {n}: create call {ms(median(changes.create))} ms, "
          f"ingress {ms(median(changes.ingress))} ms, at BIRD first {ms(median(changes.first))}"
          f" ms / from all {nodes} {ms(median(changes.all))} ms; deleted: withdrawn "
          f"{ms(median(changes.withdrawn))} ms"
          + (f"\n  ({changes.not_quiet} of {2 * n} changes: the daemons not quiet within "
             f"{CHANGE_QUIET:.0f} s)" if changes.not_quiet else ""))
    nan = float("nan")
    print(f"\n{'process':<30} {'bulk CPU s':>10} {'add ms':>6} {'net':>5} {'del ms':>6} "
          f"{'net':>5} {'idle0 %':>7} {'idle %':>7} {'peak RSS MB':>11} {'RSS MB':>7}")
    for p in procs:
        print(f"{p.label:<30} {bulk.cpu.get(p.pid, nan):10.1f} "
              f"{ms(median(changes.cpu_add.get(p.pid, []))):>6} "
              f"{ms(median(changes.net_add.get(p.pid, []))):>5} "
              f"{ms(median(changes.cpu_del.get(p.pid, []))):>6} "
              f"{ms(median(changes.net_del.get(p.pid, []))):>5} "
              f"{idle0.get(p.pid, nan) * 100:7.2f} {idle.get(p.pid, nan) * 100:7.2f} "
              f"{vm_hwm_mb(p.pid):11.1f} {vm_rss_mb(p.pid):7.1f}")
    print(f"(CPU: /proc/PID/stat utime+stime+cutime+cstime, 10 ms ticks; add/del: medians "
          f"from the API call until every daemon is quiet, {median(changes.window):.1f} s "
          f"median, and net of the idle rate; idle0: over {idle_seconds:.0f} s before the "
          f"Services, idle: over {idle_seconds:.0f} s with the N)")
    if len(sync) == 3:
        print(f"\nkube-proxy sync_proxy_rules, bulk: {sync_text(sync[0], sync[1])}")
        print(f"kube-proxy sync_proxy_rules, changes: {sync_text(sync[1], sync[2])}")
    if bulk.flaps or changes.flaps:
        print("\npeers the speakers found dead by heartbeats (liveness changes, each an "
              f"L2 election and a whole apply): bulk {bulk.flaps}, idle and changes "
              f"{changes.flaps}")
    if restarts:
        print("\nrestarts in " + SKEIN_NAMESPACE + ": " + "; ".join(restarts))
    speakers = [p for p in procs if p.role == "skein-speaker"]
    if speakers:
        add = max(median(changes.first), median(changes.withdrawn))
        cpu = max(median(changes.net_add.get(p.pid, [])) for p in speakers)
        goals = [("one change <= 100 ms to BIRD", add <= 0.1),
                 ("speaker CPU per add <= 20 ms", cpu <= 0.02),
                 ("speaker idle <= 1 % of a core",
                  max(idle.get(p.pid, 1.0) for p in speakers) <= 0.01),
                 ("speaker peak RSS <= 100 MB", max(vm_hwm_mb(p.pid) for p in speakers) <= 100)]
        print(f"goals at N={count}: " + "; ".join(f"{what}: {'yes' if ok else 'NO'}"
                                                 for what, ok in goals))


# --- inside the lab -----------------------------------------------------------------------

def inner(args: argparse.Namespace) -> int:
    lab = KubeLab(args.workdir)
    if lab.state is None:
        raise SystemExit(f"no kube lab in {args.workdir}")
    bench = Bench(lab, args)
    procs = lab_procs(lab)
    roles = [p.role for p in procs]
    if roles.count("skein-speaker") != bench.nodes or "skein-controller" not in roles:
        raise SystemExit(f"expected {bench.nodes} speakers and a controller, found: "
                         f"{[p.label for p in procs]}")
    print(f"kube lab {lab.state.tag} ({args.workdir}): {bench.nodes} nodes; pool {POOL}; "
          f"load average {loadavg()}", flush=True)
    bird = Bird(lab.bird_socket)
    watch = IngressWatch(bench.new_core)
    bulk, changes = Bulk(), Changes()
    idle0: dict[int, float] = {}
    idle: dict[int, float] = {}
    sync: list[Syncs] = []
    restarts: list[str] = []
    try:
        bench.setup()
        watch.start()
        sync.append(proxy_sync(lab))
        idle0 = bench.idle(procs, args.idle)
        log(f"creating {args.services} Services with {args.threads} threads")
        bench.bulk(args.services, watch, bird, procs, idle0, bulk)
        sync.append(proxy_sync(lab))
        log(f"bulk: created {bulk.created:.1f} s, assigned {bulk.assigned:.1f} s, BIRD "
            f"{bulk.bird_one:.1f} / {bulk.bird_all:.1f} s, status objects "
            f"{bulk.statuses:.1f} s, quiet {bulk.quiet:.1f} s")
        t1 = time.monotonic()
        idle = bench.idle(procs, args.idle)
        bench.changes(args.changes, watch, bird, procs, idle, changes)
        changes.flaps = bench.flaps(time.monotonic() - t1)
        sync.append(proxy_sync(lab))
        restarts = bench.restarts()
        now = lab_procs(lab)
        if {p.pid for p in now} != {p.pid for p in procs}:
            restarts.append("processes changed during the run: "
                            f"{sorted(p.label for p in procs)} -> "
                            f"{sorted(p.label for p in now)}")
        report(args.services, bench.nodes, bulk, changes, idle0, idle, procs, sync,
               restarts, args.idle)
        print(f"load average at the end: {loadavg()}")
        return 0
    except BaseException:
        report(args.services, bench.nodes, bulk, changes, idle0, idle, procs, sync,
               restarts, args.idle)
        raise
    finally:
        watch.stop.set()
        if not args.keep:
            bench.clean(bird)
        bird.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--services", type=int, default=10_000, help="Services (default 10000)")
    p.add_argument("--changes", type=int, default=10, help="Services added and deleted after")
    p.add_argument("--threads", type=int, default=4, help="API clients creating the Services")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds the bulk phase may take")
    p.add_argument("--settle", type=float, default=120.0,
                   help="seconds the daemons are given to be quiet after the bulk")
    p.add_argument("--keep", action="store_true", help="leave the Services, pool and Deployment")
    p.add_argument("--up", action="store_true", help="start a kube lab first, remove it after")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not 1 <= args.services <= MAX_SERVICES or not 1 <= args.changes <= 250:
        p.error(f"--services 1..{MAX_SERVICES}, --changes 1..250")
    check_pool()
    if args.inner:
        return inner(args)
    lab = KubeLab(args.workdir)
    started = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if lab.state is None:
            if not args.up:
                raise SystemExit(f"no kube lab in {args.workdir}: `skein-lab kube up` or --up")
            from lab.kube.build import ensure_kubernetes
            from lab.kube.image import ensure_images

            bin_dir = ensure_kubernetes()
            started = True
            lab.up(ensure_images(bin_dir=bin_dir), bin_dir)
        # Every client of a lab address runs inside the lab.
        argv = ["ip", "netns", "exec", lab.cp_ns.name, sys.executable, __file__, "--inner",
                "--workdir", str(args.workdir), "--services", str(args.services),
                "--changes", str(args.changes), "--threads", str(args.threads),
                "--idle", str(args.idle), "--timeout", str(args.timeout),
                "--settle", str(args.settle)]
        if args.keep or started:  # a lab of our own goes as a whole
            argv.append("--keep")
        # Its own session: a Ctrl-C reaches it once, from here, whoever sent it.
        child = subprocess.Popen(argv, start_new_session=True)
        try:
            return child.wait()
        except KeyboardInterrupt:  # the inner run deletes what it made, then the lab goes
            child.send_signal(signal.SIGINT)
            child.wait()
            return 130
    finally:
        if started:
            problems = KubeLab(args.workdir).down()
            if problems:
                print("kube lab not fully removed: " + "; ".join(problems), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
