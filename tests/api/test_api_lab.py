"""The speaker's gRPC API and skeinctl against real speakers in a two-node netns lab.

Every speaker runs in its node namespace with its API socket under the lab's
work directory (`--api-socket`), metrics on 127.0.0.1 inside the node namespace,
and, where TCP is tested, its API on its underlay address inside the lab.  What
skeinctl says is checked against what a client on the segment sees (arping).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lab.cluster import Lab, Node, scripts_dir
from lab.netns import Netns
from lab.speakers import (
    address_pool,
    arping_macs,
    l2_advertisement,
    lb_service,
    node_mac,
    poll,
    speaker_log,
    start_speaker,
    stop_speaker,
)
from tests.api.certs import issue

LB4, MANUAL = "10.99.0.200", "10.99.0.230"  # MANUAL is in no pool: only `announce` makes it
OBJECTS = [address_pool("lab", "10.99.0.200-10.99.0.215"), l2_advertisement("l2", pools=["lab"]),
           lb_service("web", LB4)]
METRICS_PORT = 9472


def skeinctl_argv(*args: str) -> list[str]:
    return [os.path.join(scripts_dir(), "skeinctl"), *args]


class Cluster:
    def __init__(self, lab: Lab, client: Netns) -> None:
        self.lab, self.client = lab, client
        self.speakers: dict[str, Any] = {}

    def socket(self, node: Node) -> str:
        return os.path.join(node.workdir, "api", "speaker.sock")

    def start(self, node: Node, *extra: str, socket: str | None = None) -> None:
        self.speakers[node.name] = start_speaker(
            self.lab, node, "--assign-to-lo", "--api-socket", socket or self.socket(node),
            "--metrics-address", f"127.0.0.1:{METRICS_PORT}", *extra)

    def start_all(self) -> None:
        for node in self.lab.nodes.values():
            self.start(node)

    def ctl(self, node: Node, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """skeinctl in `node`'s namespace, on its speaker's socket."""
        proc = node.ns.run(*skeinctl_argv("--socket", self.socket(node), *args), check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"skeinctl {' '.join(args)}: {proc.stderr}")
        return proc

    def json(self, node: Node, *args: str) -> Any:
        return json.loads(self.ctl(node, *args, "-o", "json").stdout)

    def route(self, node: Node, address: str) -> dict[str, Any] | None:
        proc = self.ctl(node, "routes", "-o", "json", check=False)
        if proc.returncode != 0:
            return None
        return next((r for r in json.loads(proc.stdout)["announcements"]
                     if r["address"] == address), None)

    def owner(self, node: Node, address: str) -> str:
        """The owner `node`'s speaker reports, once it reports one."""
        return str(poll(lambda: (r := self.route(node, address)) and r["owner"], 20,
                        f"{node.name}'s speaker to report an owner of {address}"))

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{speaker_log(n)}" for n in self.lab.nodes.values())


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with Lab(nodes=2) as lab:
        client = lab.add_client("cl", 100)
        lab.write_manifests(extra=OBJECTS)
        c = Cluster(lab, client)
        yield c
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.logs(), file=sys.stderr)


def scrape(node: Node) -> str:
    code = ("import sys, urllib.request\n"
            f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics',"
            " timeout=5).read().decode())\n")
    return node.ns.run(sys.executable, "-c", code).stdout


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def test_peers_routes_and_metrics_show_the_real_state(cluster: Cluster) -> None:
    cluster.start_all()
    node1, node2 = cluster.lab.nodes["node1"], cluster.lab.nodes["node2"]
    owner_name = cluster.owner(node1, LB4)
    owner = cluster.lab.nodes[owner_name]
    other = node2 if owner is node1 else node1
    # What the API says is what the segment sees: the owner's MAC answers, alone.
    macs = poll(lambda: arping_macs(cluster.client, LB4), 20, f"an ARP answer for {LB4}")
    assert set(macs) == {node_mac(owner)}
    assert cluster.owner(other, LB4) == owner_name  # both speakers agree
    for node in (owner, other):
        routes = cluster.json(node, "routes")
        assert routes["node"] == node.name
        (web,) = [r for r in routes["announcements"] if r["address"] == LB4]
        assert web == {"address": LB4, "mode": "l2", "owner": owner_name,
                       "local": node is owner, "manual": False, "services": ["default/web"],
                       "interfaces": []}
    assert [r["address"] for r in cluster.json(other, "routes", "--here")["announcements"]] == []
    table = cluster.ctl(owner, "routes").stdout
    assert table.splitlines()[0].split() == ["ADDRESS", "MODE", "OWNER", "HERE", "SERVICES"]
    assert table.splitlines()[1].split() == [LB4, "l2", owner_name, "yes", "default/web"]

    peers = cluster.json(owner, "peers")
    assert peers["node"] == owner_name
    (peer,) = peers["peers"]
    assert (peer["kind"], peer["name"], peer["state"]) == ("member", other.name, "alive")
    assert peer["uptime"] is not None and peer["uptime"] >= 0
    assert peer["addresses"] == [other.underlay_ip]
    assert cluster.ctl(owner, "peers").stdout.split()[6:9] == ["member", other.name, "alive"]

    text = scrape(owner)
    replies = metric(text, "skein_speaker_l2_replies_total", family="ipv4")
    assert replies is not None and replies >= 1
    assert metric(text, "skein_speaker_sessions_up", kind="member") == 1
    assert metric(text, "skein_speaker_sessions_up", kind="bgp") == 0
    assert metric(text, "skein_speaker_prefixes_announced", mode="l2") == 1
    assert metric(scrape(other), "skein_speaker_prefixes_announced", mode="l2") == 0


def test_announce_and_withdraw_by_hand(cluster: Cluster) -> None:
    cluster.start_all()
    node1 = cluster.lab.nodes["node1"]
    cluster.owner(node1, LB4)  # up and elected
    assert arping_macs(cluster.client, MANUAL, count=1, wait=1) == []

    reply = cluster.json(node1, "announce", MANUAL)
    assert reply["announcements"] == [{"address": MANUAL, "mode": "l2", "owner": "node1",
                                       "local": True, "manual": True, "services": [],
                                       "interfaces": []}]
    # `announce` returns once applied: node1 answers ARP for it now.
    assert set(arping_macs(cluster.client, MANUAL)) == {node_mac(node1)}
    assert cluster.route(node1, MANUAL) == reply["announcements"][0]
    assert cluster.route(cluster.lab.nodes["node2"], MANUAL) is None  # node1's own doing

    assert cluster.json(node1, "withdraw", MANUAL) == {"address": MANUAL, "withdrawn": True}
    assert cluster.route(node1, MANUAL) is None
    assert arping_macs(cluster.client, MANUAL, count=2, wait=2) == []

    # Only addresses announced by hand can be withdrawn; bad input is refused.
    proc = cluster.ctl(node1, "withdraw", LB4, check=False)
    assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr and "by hand" in proc.stderr
    proc = cluster.ctl(node1, "announce", "not-an-ip", check=False)
    assert proc.returncode == 2 and "not an IP address" in proc.stderr


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_event(lines: queue.Queue[str | None], what: str) -> dict[str, Any]:
    try:
        line = lines.get(timeout=30)
    except queue.Empty:
        raise AssertionError(f"no event within 30 s while waiting for {what}") from None
    assert line is not None, f"the event stream ended while waiting for {what}"
    return dict(json.loads(line))


def test_events_stream_an_owner_change_when_the_owner_dies(cluster: Cluster) -> None:
    cluster.start_all()
    node1 = cluster.lab.nodes["node1"]
    owner = cluster.lab.nodes[cluster.owner(node1, LB4)]
    survivor = next(n for n in cluster.lab.nodes.values() if n is not owner)
    cluster.owner(survivor, LB4)
    proc = survivor.ns.popen(*skeinctl_argv("--socket", cluster.socket(survivor), "-o", "json",
                                            "events"), stdout=subprocess.PIPE, text=True)
    cluster.lab.processes.append(proc)
    lines = _lines(proc)
    initial = []
    while (event := _next_event(lines, "the initial state"))["kind"] != "synced":
        assert event["initial"] is True
        initial.append(event)
    assert {"kind": "owner", "address": LB4, "mode": "l2", "owner": owner.name} in [
        {k: e.get(k) for k in ("kind", "address", "mode", "owner")} for e in initial]

    stop_speaker(cluster.speakers[owner.name], kill=True)
    seen: list[dict[str, Any]] = []
    while not any(e["kind"] == "owner" for e in seen):
        seen.append(_next_event(lines, "an owner change"))
    change = next(e for e in seen if e["kind"] == "owner")
    assert change["address"] == LB4 and change["node"] == survivor.name
    assert (change["previous_owner"], change["owner"]) == (owner.name, survivor.name)
    assert change["initial"] is False
    dead = next(e for e in seen if e["kind"] == "peer")  # the liveness change came first
    assert (dead["peer"]["name"], dead["peer"]["state"], dead["previous_state"]) == (
        owner.name, "dead", "alive")
    announce = _next_event(lines, "the survivor's announcement")
    assert (announce["kind"], announce["address"], announce["owner"]) == (
        "announce", LB4, survivor.name)
    assert set(poll(lambda: arping_macs(cluster.client, LB4), 20, "the new owner")) == {
        node_mac(survivor)}
    proc.terminate()


# Drops to uid/gid 65534 after importing everything skeinctl needs (nobody cannot read
# the interpreter's tree under /root), then runs `skeinctl --socket PATH peers`.
_AS_NOBODY = r"""
import difflib, os, sys  # difflib: click imports it on an error
import grpc
import speaker.cli
from speaker.api.client import Endpoint, connect
with connect(Endpoint(socket="/nonexistent")):  # loads grpc's channel modules
    pass
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
speaker.cli.main(["--socket", sys.argv[1], "-o", "json", "peers"])
"""


def test_a_client_without_access_to_the_socket_is_refused(cluster: Cluster) -> None:
    node1 = cluster.lab.nodes["node1"]
    cluster.start(node1)
    cluster.owner(node1, LB4)
    sock = cluster.socket(node1)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(sock)).st_mode & 0o777) == "0o700"

    def as_nobody() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _AS_NOBODY, sock], capture_output=True,
                              text=True, check=False, timeout=60)

    refused = as_nobody()
    assert refused.returncode == 1, refused.stderr
    assert "cannot reach the speaker" in refused.stderr
    assert "Permission denied" in refused.stderr
    # The same client is served once the modes let it in: it was the kernel that refused.
    for directory in (cluster.lab.workdir, node1.workdir, os.path.dirname(sock)):
        os.chmod(directory, 0o755)
    os.chmod(sock, 0o666)
    served = as_nobody()
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["node"] == "node1"


def test_a_live_socket_is_never_taken_over_and_a_stale_one_is(cluster: Cluster) -> None:
    node1, node2 = cluster.lab.nodes["node1"], cluster.lab.nodes["node2"]
    shared = cluster.socket(node1)
    cluster.start(node1)
    cluster.owner(node1, LB4)
    cluster.start(node2, socket=shared)
    poll(lambda: "another process" in speaker_log(node2), 20, "node2 to leave the socket alone")
    assert cluster.json(node1, "routes")["node"] == "node1"
    assert cluster.speakers["node2"].poll() is None  # it runs on, without the API
    stop_speaker(cluster.speakers["node1"], kill=True)  # leaves a stale socket behind
    stop_speaker(cluster.speakers["node2"])
    assert os.path.exists(shared)
    cluster.start(node2, socket=shared)
    poll(lambda: (p := cluster.ctl(node1, "-o", "json", "routes", check=False)).returncode == 0
         and json.loads(p.stdout)["node"] == "node2", 20, "node2 to serve the stale socket")


_HOLD_PORT = """
import socket, sys, time
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("listening", flush=True)
time.sleep(120)
"""


def test_an_api_that_cannot_listen_ends_the_speaker_after_it_withdrew(
        cluster: Cluster, tmp_path: Any) -> None:
    """The API starts once the first plan is applied (the routes come first); a TCP
    address it cannot listen on then ends the speaker in one line, exit status 2,
    and what it announced meanwhile is withdrawn first."""
    node1, node2 = cluster.lab.nodes["node1"], cluster.lab.nodes["node2"]
    server, _, _ = issue(str(tmp_path), "server", ip=node1.underlay_ip, is_ca=True)
    holder = node1.ns.popen(sys.executable, "-c", _HOLD_PORT, node1.underlay_ip, "50051",
                            stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "listening\n"
        cluster.start(node2)  # a live peer: node1 elects an owner at once
        cluster.start(node1, "--api-address", f"tcp://{node1.underlay_ip}:50051",
                      "--api-tls-cert", server.cert, "--api-tls-key", server.key)
        assert cluster.speakers["node1"].wait(timeout=30) == 2
    finally:
        holder.kill()
        holder.wait()
    log = speaker_log(node1)
    assert f"cannot listen on {node1.underlay_ip}:50051 for the API" in log, log
    assert "Traceback" not in log, log
    # It had planned, and withdrawn on the way out: node2 answers for LB4 alone.
    assert f"+{LB4}" in log and f"stopped announcing {LB4}" in log, log
    assert poll(lambda: set(arping_macs(cluster.client, LB4)) == {node_mac(node2)}, 20,
                f"node2 alone to answer for {LB4}")


def test_tcp_api_with_tls_and_mutual_tls(cluster: Cluster, tmp_path: Any) -> None:
    node1, node2 = cluster.lab.nodes["node1"], cluster.lab.nodes["node2"]
    d = str(tmp_path)
    ca, ca_cert, ca_key = issue(d, "ca", is_ca=True)
    server1, _, _ = issue(d, "server1", ca=(ca_cert, ca_key), ip=node1.underlay_ip)
    client_ok, _, _ = issue(d, "client", ca=(ca_cert, ca_key), client=True)
    stranger, _, _ = issue(d, "stranger", client=True)  # self-signed: not from the CA
    server2, _, _ = issue(d, "server2", ip=node2.underlay_ip, is_ca=True)  # self-signed
    addr1, addr2 = f"tcp://{node1.underlay_ip}:50051", f"tcp://{node2.underlay_ip}:50051"
    # node1: mutual TLS; node2: TLS with a self-signed certificate, no client certificates.
    cluster.start(node1, "--api-address", addr1, "--api-tls-cert", server1.cert,
                  "--api-tls-key", server1.key, "--api-tls-ca", ca.cert)
    cluster.start(node2, "--api-address", addr2, "--api-tls-cert", server2.cert,
                  "--api-tls-key", server2.key)
    cluster.owner(node1, LB4)

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        """skeinctl from the client namespace, across the underlay."""
        return cluster.client.run(*skeinctl_argv(*args, "-o", "json", "routes"), check=False)

    ok = remote("--address", addr1, "--tls-ca", ca.cert, "--tls-cert", client_ok.cert,
                "--tls-key", client_ok.key)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["node"] == "node1"
    for creds in ((), ("--tls-cert", stranger.cert, "--tls-key", stranger.key)):
        refused = remote("--address", addr1, "--tls-ca", ca.cert, *creds)
        assert refused.returncode == 1 and "cannot reach the speaker" in refused.stderr, creds
    assert "API on tcp://" in speaker_log(node1) and "(mutual TLS)" in speaker_log(node1)

    plain = poll(lambda: (p := remote("--address", addr2, "--tls-ca", server2.cert))
                 .returncode == 0 and p, 20, "node2's TCP API")
    assert json.loads(plain.stdout)["node"] == "node2"
    # A client that does not trust the certificate gets nothing either.
    untrusted = remote("--address", addr2, "--tls-ca", ca.cert)
    assert untrusted.returncode == 1 and "cannot reach the speaker" in untrusted.stderr


def test_usage_errors_of_the_api_flags(cluster: Cluster) -> None:
    node1 = cluster.lab.nodes["node1"]
    argv = [os.path.join(scripts_dir(), "skein-speaker"), "--node", "node1", "--manifests",
            cluster.lab.manifests_path, "--api-socket", cluster.socket(node1)]
    for extra, message in (
            (["--api-address", "tcp://127.0.0.1:50051"], "TLS only"),
            (["--api-address", "127.0.0.1:50051", "--api-tls-cert", "x", "--api-tls-key", "y"],
             "expected tcp://HOST:PORT"),
            (["--api-tls-ca", "/etc/hostname"], "apply to --api-address"),
            (["--metrics-address", "nowhere"], "--metrics-address")):
        proc = node1.ns.run(*argv, *extra, check=False, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
