"""The fuzz tier: the four parsers that take bytes from outside, under
Hypothesis, each for a fixed time budget (SKEIN_FUZZ_SECONDS per target,
default 4; set it higher for a long run, e.g. 600).

  BGP decoder        whatever the bytes, only BgpError leaves it (the session
                     turns that into a NOTIFICATION);
  ARP/NDP parser     the responder never raises, answers only for addresses it
                     owns, reports claims only from foreign MACs, and the
                     kernel's socket filter lets through every frame it acts on;
  CNI request parser the fast path's wire format and the plugin's request and
                     config parsing raise only their own refusals;
  manifests parser   only yaml.YAMLError leaves it, messages are one line, and
                     the linear pre-scan's depth bound is never below the real
                     nesting (what keeps libyaml's recursion off the stack).

A budget is spent in rounds of ROUND examples, each round a fresh Hypothesis
run (a failure shrinks and is saved in .hypothesis/, replayed first next
time).  Every crash a run found is a test of its own below the targets.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_plugin import fastpath
from cni_plugin.agent.fastpath_server import read_request
from cni_plugin.config import parse_netconf
from foundation.cni.skel import parse_request
from foundation.cni.spec import CniError
from foundation.kube.sources.file import _ManifestLoader, depth_bound, parse_manifests
from speaker.l2 import frames
from speaker.l2.rawsock import BPF_ARP_OR_ND
from speaker.l2.responder import Responder
from tests.bgp.test_fuzz import VALID as BGP_VALID
from tests.bgp.test_fuzz import decode_or_bgp_error
from tests.bgp.test_fuzz import mutated as bgp_mutated
from tests.fuzzing import mutate

T = TypeVar("T")
BUDGET = float(os.environ.get("SKEIN_FUZZ_SECONDS", "4"))
ROUND = 50


def fuzz(strategy: st.SearchStrategy[T], check: Callable[[T], None],
         budget: float = BUDGET) -> int:
    """Run `check` on examples of `strategy` for `budget` seconds (one round at
    least); the number of rounds run."""

    @settings(max_examples=ROUND, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one_round(value: T) -> None:
        check(value)

    stop, rounds = time.monotonic() + budget, 0
    while rounds == 0 or time.monotonic() < stop:
        one_round()
        rounds += 1
    return rounds


def mutations(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes flipped, set, cut or inserted."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        return bytes(mutate(draw, draw(st.sampled_from(seeds)), 5))

    return build()


# ---- the BGP decoder ---------------------------------------------------------------


def test_fuzz_bgp_decoder() -> None:
    fuzz(st.tuples(st.one_of(st.binary(max_size=300), bgp_mutated(),
                             st.sampled_from(BGP_VALID)), st.booleans()),
         lambda args: decode_or_bgp_error(*args))


# ---- the ARP/NDP parser ------------------------------------------------------------

OURS = bytes.fromhex("02aabbccdd01")
OTHER_PORT = bytes.fromhex("02aabbccdd02")  # this node's other announcing interface
CLIENT = bytes.fromhex("0211223344ff")
LB4, LB6 = ipaddress.ip_address("10.99.0.200"), ipaddress.ip_address("fd99::200")
CLIENT4, CLIENT6 = ipaddress.ip_address("10.99.0.100"), ipaddress.ip_address("fd99::100")
FRAME_SEEDS = [
    frames.arp_request(CLIENT, CLIENT4.packed, LB4.packed),
    frames.arp_request(CLIENT, bytes(4), LB4.packed),
    *frames.gratuitous_arps(CLIENT, LB4.packed),
    *frames.gratuitous_arps(OTHER_PORT, LB4.packed),
    frames.arp_reply(CLIENT, LB4.packed, frames.ArpRequest(OURS, OURS, CLIENT4.packed,
                                                          LB4.packed)),
    frames.neighbor_solicitation(CLIENT, CLIENT6.packed, LB6.packed),
    frames.neighbor_solicitation(CLIENT, LB6.packed, CLIENT6.packed),
    frames.unsolicited_advertisement(CLIENT, LB6.packed),
    frames.unsolicited_advertisement(OURS, LB6.packed),
]


def bpf_accepts(frame: bytes, program: tuple[tuple[int, int, int, int], ...] = BPF_ARP_OR_ND
                ) -> bool:
    """The classic BPF program as the kernel runs it (only the opcodes it uses);
    a load past the frame's end rejects it, as in the kernel."""
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x28:  # ldh [k]
            if k + 2 > len(frame):
                return False
            acc, pc = int.from_bytes(frame[k:k + 2], "big"), pc + 1
        elif code == 0x30:  # ldb [k]
            if k + 1 > len(frame):
                return False
            acc, pc = frame[k], pc + 1
        elif code == 0x15:  # jeq #k
            pc = pc + 1 + (jt if acc == k else jf)
        elif code == 0x06:  # ret #k
            return k != 0
        else:
            raise AssertionError(f"opcode {code:#x} not simulated")


def check_frame(frame: bytes) -> None:
    responder = Responder(OURS)
    responder.own_macs = {OURS, OTHER_PORT}
    responder.v4, responder.v6 = {LB4.packed}, {LB6.packed}
    reply, claim = responder.handle(frame, 1.0)
    if reply is not None or claim is not None:
        assert bpf_accepts(frame), frame.hex()
    if reply is not None:
        arp = frames.parse_arp(reply)
        if arp is not None:
            assert arp.op == 2 and arp.sender_mac == OURS and arp.sender_ip == LB4.packed
        else:
            assert reply[12:14] == b"\x86\xdd" and reply[6:12] == OURS
            assert reply[22:38] == LB6.packed  # the IPv6 source is the owned address
    if claim is not None:
        assert claim.address in (LB4.packed, LB6.packed)
        assert claim.mac not in (OURS, OTHER_PORT)


def test_fuzz_arp_ndp_parser() -> None:
    fuzz(st.one_of(st.binary(max_size=120), mutations(FRAME_SEEDS),
                   st.sampled_from(FRAME_SEEDS)), check_frame)


def test_the_filter_passes_what_the_responder_needs_and_drops_the_rest() -> None:
    for frame in FRAME_SEEDS:
        assert bpf_accepts(frame)
    ipv4 = bytes(12) + b"\x08\x00" + bytes(40)
    icmp_echo = bytearray(frames.unsolicited_advertisement(CLIENT, LB6.packed))
    icmp_echo[54] = 128
    rarp = bytearray(FRAME_SEEDS[0])
    rarp[21] = 3
    assert not any(bpf_accepts(f) for f in (ipv4, bytes(icmp_echo), bytes(rarp), b"\x08\x06"))


# ---- the CNI request parser ------------------------------------------------------

NETCONF = {"cniVersion": "1.0.0", "name": "sknet", "type": "skein", "bridge": "cni0",
           "isGateway": True, "ipMasq": True, "mtu": 1450, "hairpinMode": True,
           "vxlan": {"vni": 1, "port": 8472}, "agentSocket": "/run/skein/agent.sock",
           "ipam": {"type": "skein-ipam", "ranges": [[{"subnet": "10.77.0.0/24"}]]}}
WIRE_SEEDS = [fastpath.encode_request({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
                                       "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/x"},
                                      json.dumps(NETCONF).encode()),
              fastpath.encode_request({}, b"")]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**33, 2**33) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


def check_wire(raw: bytes) -> None:
    try:
        fastpath.decode_request(raw)
    except ValueError:
        pass
    a, b = socket.socketpair()
    with a, b:
        a.sendall(raw[:60000])
        a.shutdown(socket.SHUT_WR)
        try:
            read_request(b, time.monotonic() + 0.2)
        except (ValueError, ConnectionError, TimeoutError):
            pass


def test_fuzz_fast_path_wire_format() -> None:
    fuzz(st.one_of(st.binary(max_size=200), mutations(WIRE_SEEDS)), check_wire)


@st.composite
def cni_requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    env = {"CNI_COMMAND": draw(st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "GC",
                                                  "VERSION", "", "add"])),
           "CNI_PATH": "/opt/cni/bin"}
    for key, values in (("CNI_CONTAINERID", st.text(max_size=20)),
                        ("CNI_IFNAME", st.text(max_size=18)),
                        ("CNI_NETNS", st.text(max_size=20)),
                        ("CNI_ARGS", st.text(alphabet="ab=;IgnoreUnknown1MAC:", max_size=30))):
        if draw(st.booleans()):
            env[key] = draw(values)
    config: Any = dict(NETCONF)
    for _ in range(draw(st.integers(0, 3))):
        config[draw(st.sampled_from(sorted(NETCONF) + ["prevResult", "runtimeConfig",
                                                        "ipMasqExclude", "dns"]))] = \
            draw(json_values)
    stdin = json.dumps(config).encode() if draw(st.booleans()) else draw(st.binary(max_size=60))
    return env, stdin


def check_request(request: tuple[dict[str, str], bytes]) -> None:
    env, stdin = request
    try:
        req = parse_request(env, stdin)
    except CniError as err:
        assert json.loads(err.to_json("1.0.0"))["code"] == err.code
        return
    if req.command != "VERSION":
        try:
            parse_netconf(req.config)
        except CniError:
            pass


def test_fuzz_cni_request_parser() -> None:
    fuzz(cni_requests(), check_request)


# ---- the manifests parser ----------------------------------------------------------

MANIFEST_SEED = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, annotations: {metallb.io/allow-shared-ip: k}}
spec:
  type: LoadBalancer
  ports:
  - port: 80
    protocol: TCP
status:
  loadBalancer:
    ingress: [{ip: 10.99.0.200}]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: &meta
  name: lab
  namespace: metallb-system
spec:
  addresses: ["10.99.0.200-10.99.0.215", fd99::200/124]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  <<: *meta
  name: l2
spec: {ipAddressPools: [lab]}
"""
YAML_TOKENS = ["- ", "? ", ": ", ":", "[", "]", "{", "}", ", ", "\n", " ", "  ", "    ", "\t",
               "a", "b: c", "key:", "&x ", "*x", "<<: *x", "'q'", '"d"', "|\n", ">\n", "---\n",
               "... \n", "# c\n", "\u2028", "\r", "\x85", "!!str ", "!!map ", "%YAML 1.1\n",
               "kind: Service\n", "apiVersion: v1\n", "metadata:\n  name: x\n", "- - - "]


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return "".join(draw(st.lists(st.sampled_from(YAML_TOKENS), max_size=60)))
    raw = draw(mutations([MANIFEST_SEED.encode()]))
    return raw.decode("utf-8", errors="replace")


def event_depth(text: str) -> int:
    """The deepest nesting libyaml's events reach (up to any error)."""
    loader = _ManifestLoader(text)
    depth = deepest = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                deepest = max(deepest, depth)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    return deepest


def check_manifests(text: str) -> None:
    assert event_depth(text) <= depth_bound(text), repr(text)
    try:
        parsed = parse_manifests(text)
    except yaml.YAMLError:
        return
    for line in (*parsed.errors, *parsed.problems, *parsed.ignored):
        assert "\n" not in line, line


def test_fuzz_manifests_parser() -> None:
    fuzz(yaml_texts(), check_manifests)


# ---- what the runs found, kept ---------------------------------------------------


@pytest.mark.parametrize("text", [
    "[a: [b: [c: d]]]",   # an implicit one-pair mapping per "[": two levels each
    "a:\u2028 b:\u2028  c: d",  # YAML's other line breaks count as lines
    "- ? - a\n  : - b",
])
def test_depth_bound_corner_cases(text: str) -> None:
    check_manifests(text)


def test_a_merge_key_chain_is_refused_by_its_budget() -> None:
    """Each mapping merging the one before copies all its pairs, quadratic in
    the chain: the copy budget refuses it instead of constructing it."""
    lines = ["a0: &a0 {k: 1}"] + [f"a{i}: &a{i} {{<<: *a{i - 1}, x{i}: 1}}"
                                  for i in range(1, 5000)]
    with pytest.raises(yaml.YAMLError, match="merge keys"):
        parse_manifests("\n".join(lines))


def test_aliases_are_not_expanded() -> None:
    """A "billion laughs" document: aliases stay references, nothing walks them."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    parsed = parse_manifests("\n".join(lines) + "\nkind: List\nitems: *l9\n")
    assert parsed.state.services == ()


def test_a_deeply_nested_config_is_a_decoding_failure() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/x", "CNI_PATH": "/x"}
    with pytest.raises(CniError) as refused:
        parse_request(env, b"[" * 100_000)
    assert refused.value.code == 6
