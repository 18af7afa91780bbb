"""Item 4: addresses that can never be LoadBalancer addresses are refused,
and one address that `lo` refuses does not keep the others off it.

Before: the gRPC Announce took 0.0.0.0, 127.0.0.5, 224.0.0.1,
255.255.255.255, :: and ff02::1; the speaker then answered ARP for
224.0.0.1, and the first address that lo refused (ff02::1) ended the whole lo
update, so the addresses after it were never added.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Iterator

import pytest

from lab.cluster import Lab
from lab.netns import Netns
from lab.speakers import (
    address_pool,
    arping_macs,
    l2_advertisement,
    poll,
    speaker_log,
    start_speaker,
)
from tests.api.test_api_lab import skeinctl_argv
from tests.l2.test_loopback import lo_addresses

BOGUS = ("0.0.0.0", "127.0.0.5", "224.0.0.1", "255.255.255.255", "::", "ff02::1",
         "169.254.0.9", "::ffff:10.99.0.201")
MANUAL = "10.99.0.231"


@pytest.fixture
def lab_node(request: pytest.FixtureRequest) -> Iterator[tuple[Lab, Netns]]:
    with Lab(nodes=1) as lab:
        client = lab.add_client("cl", 100)
        lab.write_manifests(extra=[address_pool("lab", "10.99.0.200-10.99.0.215"),
                                   l2_advertisement("l2", pools=["lab"])])
        yield lab, client
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(speaker_log(lab.nodes["node1"]), file=sys.stderr)


def test_announce_refuses_what_cannot_be_announced(lab_node) -> None:
    lab, client = lab_node
    node = lab.nodes["node1"]
    sock = os.path.join(node.workdir, "speaker.sock")
    start_speaker(lab, node, "--assign-to-lo")
    poll(lambda: os.path.exists(sock), 20, "the API socket")

    def ctl(*args: str) -> tuple[int, str]:
        proc = node.ns.run(*skeinctl_argv("--socket", sock, *args), check=False)
        return proc.returncode, proc.stdout + proc.stderr

    code, out = ctl("announce", "224.0.0.1")  # what an operator sees
    assert code != 0 and "224.0.0.1 is a multicast address: it cannot be announced" in out
    answers = json.loads(node.ns.run(sys.executable, "-c", _ANNOUNCE, sock, *BOGUS,
                                     env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout)
    for address in BOGUS:  # the others through the API directly: one process, not eight
        status, details = answers[address]
        assert status == "INVALID_ARGUMENT" and "cannot be announced" in details, address
    routes = json.loads(ctl("routes", "-o", "json")[1])["announcements"]
    assert routes == []
    assert arping_macs(client, "224.0.0.1", count=1, wait=1) == []
    assert lo_addresses(node.ns) == set()
    # A real address goes through, as before.
    code, out = ctl("announce", MANUAL)
    assert code == 0, out
    assert poll(lambda: arping_macs(client, MANUAL, count=1, wait=1), 20, "an answer")
    assert lo_addresses(node.ns) == {MANUAL}


_ANNOUNCE = r"""
import json, sys
import grpc
from speaker.api.client import Endpoint, connect
from speaker.api.stubs import pb
out = {}
with connect(Endpoint(socket=sys.argv[1])) as stub:
    for address in sys.argv[2:]:
        try:
            stub.Announce(pb.AnnounceRequest(address=address), timeout=30)
            out[address] = ["OK", ""]
        except grpc.RpcError as exc:
            out[address] = [exc.code().name, exc.details()]
print(json.dumps(out))
"""

_SYNC = r"""
import asyncio, ipaddress, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from speaker.loopback import LoopbackAddresses
lo = LoopbackAddresses(83)
asyncio.run(lo.sync({ipaddress.ip_address(a) for a in sys.argv[1:]}))
"""


def test_an_address_lo_refuses_leaves_the_others_on_it(netns_factory) -> None:
    ns = netns_factory("lo")
    ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "1")  # lo refuses every IPv6 address
    v4 = [f"10.77.0.{i}" for i in range(1, 11)]
    v6 = [f"fd77::{i}" for i in range(1, 6)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def sync(addresses: list[str]) -> str:
        proc = ns.run(sys.executable, "-c", _SYNC, *addresses, env=env)
        return proc.stderr

    log = sync(v4 + v6)
    assert lo_addresses(ns) == set(v4)  # every one lo takes, whatever order the set has
    for address in v6:
        assert log.count(f"cannot add {address} to lo") == 1, log
    assert "cannot set LoadBalancer addresses" not in log
    ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "0")
    sync(v4[:5] + v6)
    assert lo_addresses(ns) == set(v4[:5]) | {str(ipaddress.ip_address(a)) for a in v6}
