"""The fast path's own guarantees: an agent killed in the middle of an ADD
loses and duplicates nothing, a missing agent means in-process work, STATUS
tells whether the node is ready, only root may use the socket, and the wire
format is read whole and strictly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from cni_plugin import attachment, fastpath
from tests.cni.conftest import served, start_agent
from tests.cni.helpers import host_veths, lease_files, netconf, pod_address


def test_agent_killed_mid_add_loses_nothing(node, netns_factory, tmp_path, cni_path):
    from tests.conftest import CniRunner

    cni = CniRunner(node, cni_path)
    sock = str(tmp_path / "run" / "agent.sock")
    # The agent does the whole ADD, then pauses before answering: kill it there.
    agent = start_agent(node, sock, str(tmp_path / "agent.log"),
                        {"SKEIN_AGENT_FAULT_PAUSE": "30"})
    conf = dict(netconf(str(tmp_path / "ipam")), agentSocket=sock)
    pod = netns_factory("p")
    client = cni.popen("skein", "ADD", conf, container_id="c1", netns=pod.path)
    deadline = time.monotonic() + 30
    while not lease_files(str(tmp_path / "ipam")):
        assert time.monotonic() < deadline, "the agent never allocated"
        time.sleep(0.02)
    assert "eth0" in pod.ip("link").stdout  # the agent got that far
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, out + err
    result = json.loads(out)
    # Exactly one lease, one veth, one address in the pod: the one reported.
    assert lease_files(str(tmp_path / "ipam")) == [pod_address(result)]
    assert host_veths(node) == [result["interfaces"][1]["name"]]
    addrs = json.loads(pod.ip("-j", "-4", "addr", "show", "eth0").stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs] == [pod_address(result)]
    assert cni.call("skein", "DEL", conf, container_id="c1", netns=pod.path).code == 0
    assert lease_files(str(tmp_path / "ipam")) == [] and host_veths(node) == []


def test_the_agent_makes_the_next_lease_file_ahead_and_leaves_none_behind(
        node, netns_factory, tmp_path, cni_path):
    """After answering an ADD the agent holds an unnamed file in the lease
    directory for the next lease (ipam/spare.py); the next ADD's lease is that
    file, and a kill -9 leaves the directory holding exactly the leases."""
    from tests.conftest import CniRunner
    from tests.ipam.helpers import unnamed_files_held

    cni = CniRunner(node, cni_path)
    sock = str(tmp_path / "run" / "agent.sock")
    agent = start_agent(node, sock, str(tmp_path / "agent.log"))
    conf = dict(netconf(str(tmp_path / "ipam")), agentSocket=sock)
    leases = tmp_path / "ipam" / "sknet"

    def spares() -> list[str]:
        return unnamed_files_held(agent.pid, leases)

    try:
        pods = [netns_factory(f"p{i}") for i in range(3)]
        for i, pod in enumerate(pods):
            res = cni.call("skein", "ADD", conf, container_id=f"c{i}", netns=pod.path)
            assert res.code == 0, res.stdout
            # made after the answer: give the worker its moment
            deadline = time.monotonic() + 10
            while len(spares()) != 1:
                assert time.monotonic() < deadline, spares()
                time.sleep(0.01)
        assert served(str(tmp_path / "agent.log")) == 3
        # Each lease the agent wrote is a plain file with one name and host-local's content.
        addresses = lease_files(str(tmp_path / "ipam"))
        assert len(addresses) == 3
        for i, address in enumerate(sorted(addresses, key=lambda a: int(a.split(".")[-1]))):
            assert (leases / address).read_bytes() == f"c{i}\r\neth0".encode()
            assert (leases / address).stat().st_nlink == 1
    finally:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
    assert sorted(os.listdir(leases)) == sorted([*addresses, "last_reserved_ip.0", "lock"])
    for i, pod in enumerate(pods):
        assert cni.call("skein", "DEL", conf, container_id=f"c{i}", netns=pod.path).code == 0
    assert lease_files(str(tmp_path / "ipam")) == []


def test_the_agent_sees_leases_the_reference_host_local_wrote(
        node, netns_factory, tmp_path, cni_path):
    """The agent keeps the leases in memory (ipam/leasecache.py); a lease that
    host-local writes between two of its ADDs must count all the same."""
    from tests.conftest import CniRunner
    from tests.ipam.helpers import HOST_LOCAL
    from tests.ipam.helpers import call as ipam_call

    cni = CniRunner(node, cni_path)
    sock = str(tmp_path / "run" / "agent.sock")
    agent = start_agent(node, sock, str(tmp_path / "agent.log"))
    conf = dict(netconf(str(tmp_path / "ipam")), agentSocket=sock)
    try:
        first = netns_factory("p0")
        made = cni.call("skein", "ADD", conf, container_id="c0", netns=first.path)
        assert made.code == 0, made.stdout
        taken = ipam_call("ADD", conf, "c9", binary=HOST_LOCAL).ips()
        pod = netns_factory("p9")
        refused = cni.call("skein", "ADD", conf, container_id="c9", netns=pod.path)
        assert refused.code != 0 and "already holds" in refused.json["msg"], refused.stdout
        assert "eth0" not in pod.ip("link").stdout
        assert len(host_veths(node)) == 1
        assert ipam_call("DEL", conf, "c9", binary=HOST_LOCAL).code == 0
        res = cni.call("skein", "ADD", conf, container_id="c9", netns=pod.path)
        assert res.code == 0, res.stdout
        assert served(str(tmp_path / "agent.log")) == 3
        # host-local's lease is gone, and the agent did not hand out c0's address twice.
        assert sorted(lease_files(str(tmp_path / "ipam"))) == sorted(
            [pod_address(made.json), pod_address(res.json)])
        assert pod_address(res.json) not in (pod_address(made.json), *taken)
    finally:
        agent.terminate()
        agent.wait()


def test_missing_agent_means_in_process_work(cni, netns_factory, tmp_path):
    conf = dict(netconf(str(tmp_path)), agentSocket=str(tmp_path / "nobody-here.sock"))
    pod = netns_factory("p")
    res = cni.call("skein", "ADD", conf, container_id="c1", netns=pod.path)
    assert res.code == 0, res.stdout
    assert cni.call("skein", "DEL", conf, container_id="c1", netns=pod.path).code == 0


def test_status_says_not_ready_without_the_agent_of_an_overlay(node, cni_path, tmp_path):
    from tests.conftest import CniRunner

    cni = CniRunner(node, cni_path)
    sock = str(tmp_path / "run" / "agent.sock")
    conf = dict(netconf(str(tmp_path / "ipam"), version="1.1.0"), agentSocket=sock,
                vxlan={"vni": 1})
    res = cni.call("skein", "STATUS", conf, ifname="")
    assert res.code != 0 and res.json["code"] == 50
    assert "skein-agent is not running" in res.json["msg"]
    agent = start_agent(node, sock, str(tmp_path / "agent.log"))
    try:
        assert cni.call("skein", "STATUS", conf, ifname="").code == 0
    finally:
        agent.terminate()
        agent.wait()


_CLIENT = r"""
import json, os, socket, sys
from cni_plugin import fastpath
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("refused by the kernel"); sys.exit(0)
try:
    s.sendall(fastpath.encode_request({"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"}, b"{}"))
except OSError:
    pass  # the agent answers a caller that is not root without reading, and hangs up
print(fastpath.recv_reply(s)[1])
"""


def test_only_root_may_use_the_socket(node, tmp_path):
    # Not under tmp_path: pytest's base directory is 0700, nobody could reach it anyway.
    base = tempfile.mkdtemp(prefix="skein-fastpath-")
    sock = os.path.join(base, "run", "agent.sock")
    agent = start_agent(node, sock, str(tmp_path / "agent.log"))
    try:
        assert os.stat(sock).st_mode & 0o777 == 0o600
        assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700
        run = [sys.executable, "-c", _CLIENT, sock]
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        out = subprocess.run(run, capture_output=True, text=True, env=env, check=True).stdout
        assert "refused by the kernel" in out
        # Even if the file modes were lost (a bind mount, a careless chmod), the
        # agent checks the peer's credentials itself.
        os.chmod(base, 0o755)
        os.chmod(os.path.dirname(sock), 0o755)
        os.chmod(sock, 0o666)
        out = subprocess.run(run, capture_output=True, text=True, env=env, check=True).stdout
        assert json.loads(out)["code"] == 4 and "only root" in json.loads(out)["msg"]
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("pieces", [1, 3, 40])
def test_a_request_arrives_whole_or_in_pieces(pieces):
    """The agent reads a request with one recv(2) when it can, and keeps
    reading when the client's bytes come in several segments."""
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
    stdin = b'{"cniVersion": "1.1.0", "name": "n", "type": "skein"}' * 50
    wire = fastpath.encode_request(env, stdin)
    a, b = socket.socketpair()
    with a, b:
        step = -(-len(wire) // pieces)
        sender = threading.Thread(target=lambda: [
            (a.sendall(wire[i:i + step]), time.sleep(0.002)) for i in range(0, len(wire), step)])
        sender.start()
        assert fastpath.recv_request(b) == (env, stdin)
        sender.join()


def test_malformed_requests_are_refused():
    env = {"CNI_COMMAND": "ADD"}
    for wire in (fastpath.encode_request(env, b"{}") + b"extra",
                 b"XXXX" + fastpath.encode_request(env, b"{}")[4:],
                 fastpath.MAGIC + fastpath.u32(fastpath.MAX_FRAME + 1)):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(wire)
            with pytest.raises(ValueError):
                fastpath.recv_request(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(fastpath.encode_request(env, b"{}")[:-1])
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError):
            fastpath.recv_request(b)


def test_an_attachment_lock_excludes_threads_and_processes_until_released(tmp_path):
    """One holder per attachment, whether the other contender is a thread of
    the same process (the agent's workers) or another process (the fallback);
    other attachments are not held up; a waiter wakes when the holder lets go,
    and a holder that dies lets go too."""
    sock = str(tmp_path / "agent.sock")
    first = attachment.lock(sock, "c1", "eth0")
    assert first is not None
    assert attachment.lock(sock, "c1", "eth0", timeout=0.1) is None  # another thread's turn
    other = attachment.lock(sock, "c1", "eth1", timeout=0)  # another attachment: free
    assert other is not None
    attachment.unlock(other)
    holder = [sys.executable, "-c",
              "import sys; from cni_plugin import attachment; "
              "assert attachment.lock(sys.argv[1], 'c1', 'eth0', timeout=0.1) is None; "
              "print('held elsewhere', flush=True)", sock]
    proc = subprocess.run(holder, capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout == "held elsewhere\n", proc.stderr

    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(
        attachment.lock(sock, "c1", "eth0", timeout=10)))
    waiter.start()
    time.sleep(0.1)
    assert not got  # still waiting
    attachment.unlock(first)
    waiter.join()
    assert got[0] is not None
    attachment.unlock(got[0])

    # A holder that dies (the agent killed mid-ADD) releases with its last fd.
    dying = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; from cni_plugin import attachment; "
                              "assert attachment.lock(sys.argv[1], 'c1', 'eth0') is not None; "
                              "print('locked', flush=True); time.sleep(60)", sock],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert dying.stdout is not None and dying.stdout.readline() == "locked\n"
        assert attachment.lock(sock, "c1", "eth0", timeout=0.1) is None
        dying.kill()
        dying.wait()
        last = attachment.lock(sock, "c1", "eth0", timeout=10)
        assert last is not None
        attachment.unlock(last)
    finally:
        dying.kill()
        dying.wait()
    assert os.listdir(tmp_path) == [attachment.LOCK_FILE]  # one file for every attachment


def test_attachment_lock_on_the_main_thread_wakes_on_release(tmp_path):
    """A plugin (main thread) waits in F_OFD_SETLKW under SIGALRM: it wakes
    when the holder lets go, and gives up at its timeout."""
    sock = str(tmp_path / "agent.sock")
    held = attachment.lock(sock, "c1", "eth0")
    assert held is not None
    script = ("import sys, time; from cni_plugin import attachment; "
              "t = time.monotonic(); fd = attachment.lock(sys.argv[1], 'c1', 'eth0', "
              "timeout=float(sys.argv[2])); print(fd is not None, round(time.monotonic() - t, 1))")
    timed_out = subprocess.run([sys.executable, "-c", script, sock, "0.3"], capture_output=True,
                               text=True, timeout=60, check=False)
    assert timed_out.stdout.split() == ["False", "0.3"], timed_out.stderr
    waiter = subprocess.Popen([sys.executable, "-c", script, sock, "30"], stdout=subprocess.PIPE,
                              text=True)
    time.sleep(1.0)
    attachment.unlock(held)
    out, _ = waiter.communicate(timeout=60)
    won, waited = out.split()
    assert won == "True" and 0.5 < float(waited) < 5


def test_a_request_must_arrive_whole_within_the_deadline():
    """A connection that sends part of a request (or nothing) holds a worker for
    READ_DEADLINE at most, and an oversized one is refused on its header."""
    from cni_plugin.agent.fastpath_server import read_request

    wire = fastpath.encode_request({"CNI_COMMAND": "DEL"}, b"{}")
    for sent in (b"", wire[:10]):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(sent)
            with pytest.raises(TimeoutError):
                read_request(b, time.monotonic() + 0.2)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(fastpath.MAGIC + fastpath.u32(16 << 20))  # nothing more needs reading
        with pytest.raises(ValueError, match="too large"):
            read_request(b, time.monotonic() + 5)


def test_client_gone_and_the_acknowledged_reply():
    from cni_plugin.agent.fastpath_server import client_gone

    a, b = socket.socketpair()
    with b:
        assert not client_gone(b)
        b.sendall(fastpath.ACK + fastpath.encode_reply(0, "{}"))
        assert fastpath.recv_reply(a) == (0, "{}")
        a.close()
        assert client_gone(b)
    a, b = socket.socketpair()
    with a, b:  # a reply without an acknowledgement (a refusal) reads the same
        b.sendall(fastpath.encode_reply(1, '{"code": 4}'))
        assert fastpath.recv_reply(a) == (1, '{"code": 4}')


class _Stub:
    """A plugin for the server's own tests: ADD answers, CHECK fails."""

    def add(self, req):
        return {"ips": [{"address": "10.9.0.2/24"}]}

    def check(self, req):
        from foundation.cni.spec import CniError

        raise CniError(3, "no such attachment")


def _scrape(address: tuple[str, int]) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics",
                                  timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("skein_agent_")}


def test_the_agents_metrics_count_requests_latency_and_fallbacks(tmp_path):
    """skein-agent's /metrics (served on the loopback here): requests by
    command and result, their latency, and the requests whose client gave up
    and did the work itself."""
    from cni_plugin.agent.fastpath_server import FastPathServer
    from cni_plugin.agent.metrics import AgentMetrics, serve

    metrics = AgentMetrics()
    sock = str(tmp_path / "run" / "agent.sock")
    server = FastPathServer(sock, _Stub, workers=2, metrics=metrics)
    server.start()
    address = serve(metrics, "127.0.0.1:0")
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "skein",
                       "agentSocket": sock}).encode()
    env = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}
    try:
        code, out = fastpath.forward({**env, "CNI_COMMAND": "ADD"}, conf)
        assert code == 0 and json.loads(out)["ips"][0]["address"] == "10.9.0.2/24"
        assert fastpath.forward({**env, "CNI_COMMAND": "CHECK"}, conf)[0] == 1
        # Another request holds the attachment; this client gives up meanwhile.
        held = attachment.lock(sock, "c1", "eth0")
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(sock)
        client.sendall(fastpath.encode_request({**env, "CNI_COMMAND": "ADD"}, conf))
        assert client.recv(1) == fastpath.ACK
        client.close()
        deadline = time.monotonic() + 10
        while 'skein_agent_fastpath_fallbacks_total{reason="client_gone"}' not in \
                _scrape(address):
            assert time.monotonic() < deadline, "the dropped request was not counted"
            time.sleep(0.05)
        attachment.unlock(held)
        seen = _scrape(address)
    finally:
        server.close()
    assert seen['skein_agent_fastpath_requests_total{command="ADD",result="ok"}'] == 1
    assert seen['skein_agent_fastpath_requests_total{command="CHECK",result="error"}'] == 1
    assert seen['skein_agent_fastpath_request_seconds_count{command="ADD"}'] == 1
    assert seen['skein_agent_fastpath_fallbacks_total{reason="client_gone"}'] == 1
    assert seen["skein_agent_peers"] == 0 and seen["skein_agent_routes"] == 0


def test_the_fallback_answers_json_when_it_cannot_take_the_lock(tmp_path, monkeypatch):
    from cni_plugin.fallback import complete_after_agent_failure

    (tmp_path / "file").write_text("")
    sock = str(tmp_path / "file" / "run" / "agent.sock")   # under a file: no lock there
    for key, value in (("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"),
                       ("CNI_IFNAME", "eth0")):
        monkeypatch.setenv(key, value)
    stdin = json.dumps({"cniVersion": "0.4.0", "agentSocket": sock}).encode()
    code, out = complete_after_agent_failure(_Stub(), stdin)
    answer = json.loads(out)
    assert (code, answer["code"], answer["cniVersion"]) == (1, 5, "0.4.0")
    assert "attachments.lock" in answer["details"]
