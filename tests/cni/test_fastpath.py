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
from tests.cni.conftest import start_agent
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
s.sendall(fastpath.encode_request({"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"}, b"{}"))
head = fastpath.recv_exact(s, 8)
print(fastpath.recv_exact(s, int.from_bytes(head[4:], "big")).decode())
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


def test_attachment_locks_are_removed_by_del_and_never_shared(tmp_path):
    """DEL removes the attachment's lock file while holding it; whoever was
    waiting on the removed file must not take that as the lock, but lock the
    file now at the path, so two holders never overlap."""
    sock = str(tmp_path / "agent.sock")
    path = attachment.lock_path(sock, "c1", "eth0")
    first = attachment.lock(sock, "c1", "eth0")
    assert first is not None and os.path.exists(path)
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(
        attachment.lock(sock, "c1", "eth0", timeout=10)))
    waiter.start()
    time.sleep(0.1)  # the waiter now polls the first file
    attachment.unlock(first, sock, "c1", "eth0", deleted=True)
    waiter.join()
    second = got[0]
    assert second is not None
    assert os.path.exists(path) and os.fstat(second).st_ino == os.stat(path).st_ino
    assert attachment.lock(sock, "c1", "eth0", timeout=0.2) is None  # held
    attachment.unlock(second, sock, "c1", "eth0", deleted=False)
    third = attachment.lock(sock, "c1", "eth0", timeout=1)
    assert third is not None
    attachment.unlock(third, sock, "c1", "eth0", deleted=True)
    assert not os.path.exists(path)
