"""RFC 7606 against a real peer: ExaBGP, in the router namespace, learns a
LoadBalancer route from our speaker and then sends it UPDATEs with a bad ORIGIN and a
malformed AS_PATH (ExaBGP's generic `attribute [ code flags value ]` puts any bytes on
the wire).

Under RFC 4271 alone each of them costs a NOTIFICATION and a session reset, and the
router drops every route it learnt over the session.  With RFC 7606 the speaker treats
the UPDATE as a withdrawal of its own prefixes, and the session, and what the router
learnt over it, stays.  Assertions read ExaBGP's own account (its API process's JSON
events) and our speaker's status and log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bgp.lab import ROUTER_V4, Lab, SpeakerProc, node_v4, speaker_config, wait_for

# ExaBGP's API process: every event line into EVENTS, every line appended to COMMANDS
# out to ExaBGP; it ends when ExaBGP does (its stdin closes).
HELPER = """\
import os, sys, threading, time
commands, events = sys.argv[1], sys.argv[2]
def forward():
    done = 0
    while True:
        with open(commands) as f:
            lines = f.read().splitlines()
        for line in lines[done:]:
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()
        done = len(lines)
        time.sleep(0.05)
threading.Thread(target=forward, daemon=True).start()
with open(events, "a") as out:
    for line in sys.stdin:
        out.write(line)
        out.flush()
os._exit(0)
"""

BAD_ORIGIN = "attribute [ 0x01 0x40 0x07 ]"  # ORIGIN 7 (0-2 are defined)
BAD_AS_PATH = "attribute [ 0x02 0x40 0x0701000000ff ]"  # AS_PATH segment of type 7


class ExaBgp:
    def __init__(self, lab: Lab, neighbor: str) -> None:
        self.neighbor = neighbor
        self.commands = lab.tmp / "exabgp.commands"
        self.events = lab.tmp / "exabgp.events"
        self.commands.write_text("")
        self.events.write_text("")
        helper = lab.tmp / "exabgp_helper.py"
        helper.write_text(HELPER)
        cfg = lab.tmp / "exabgp.conf"
        cfg.write_text(f"""
process control {{
  run {sys.executable} {helper} {self.commands} {self.events};
  encoder json;
}}
neighbor {neighbor} {{
  router-id {ROUTER_V4};
  local-address {ROUTER_V4};
  local-as 65112;
  peer-as 64512;
  family {{ ipv4 unicast; }}
  api {{ processes [ control ]; receive {{ parsed; update; notification; }} neighbor-changes; }}
}}
""")
        env = dict(os.environ, exabgp_daemon_user="root", exabgp_api_ack="false",
                   exabgp_log_destination="stdout")
        self.log_path = lab.tmp / "exabgp.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed with the lab
        proc = lab.router.popen(sys.executable, "-m", "exabgp", "server", str(cfg),
                                stdout=self.log, stderr=subprocess.STDOUT, env=env)
        lab.procs.append(proc)

    def send(self, line: str) -> None:
        with open(self.commands, "a") as f:
            f.write(f"neighbor {self.neighbor} {line}\n")

    def read_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.events.read_text().splitlines()
                if line.startswith("{")]

    def states(self) -> list[str]:
        return [e["neighbor"]["state"] for e in self.read_events() if e["type"] == "state"]

    def notifications(self) -> list[dict[str, Any]]:
        return [e for e in self.read_events() if e["type"] == "notification"]

    def learnt(self) -> set[str]:
        """The prefixes ExaBGP holds from us: announced and not withdrawn since."""
        held: set[str] = set()
        for event in self.read_events():
            if event["type"] == "state" and event["neighbor"]["state"] == "down":
                held.clear()
            update = event.get("neighbor", {}).get("message", {}).get("update", {})
            for by_hop in update.get("announce", {}).get("ipv4 unicast", {}).values():
                held |= {route["nlri"] for route in by_hop}
            for route in update.get("withdraw", {}).get("ipv4 unicast", []):
                held.discard(route["nlri"])
        return held


def _need_exabgp() -> None:
    probe = subprocess.run([sys.executable, "-c", "import exabgp"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        pytest.fail("this test needs ExaBGP (pip install exabgp)")


def test_malformed_updates_from_a_real_peer_keep_the_session_and_its_routes(lab: Lab) -> None:
    _need_exabgp()
    peer = {"peer_address": ROUTER_V4, "peer_asn": 65112, "my_asn": 64512, "passive": True,
            "families": ["ipv4-unicast"]}
    speaker = SpeakerProc(lab, lab.nodes[0], speaker_config(0, [peer], listen=["0.0.0.0"]),
                          "n0")
    speaker.cmd(cmd="announce", prefixes=["10.200.0.1/32"])
    exabgp = ExaBgp(lab, node_v4(0))
    wait_for(lambda: exabgp.learnt() == {"10.200.0.1/32"}, 30,
             what="ExaBGP to learn the route from our speaker")
    assert exabgp.states().count("up") == 1

    exabgp.send(f"announce attributes next-hop {ROUTER_V4} {BAD_ORIGIN} nlri 192.0.2.0/24")
    exabgp.send(f"announce attributes next-hop {ROUTER_V4} {BAD_AS_PATH} nlri 192.0.2.1/32")
    logs = Path(speaker.log_path)
    wait_for(lambda: logs.read_text().count("treat-as-withdraw (RFC 7606)") == 2,
             what="both UPDATEs handled by treat-as-withdraw")
    text = logs.read_text()
    assert "Invalid ORIGIN Attribute" in text and "Malformed AS_PATH" in text, text

    # The session is the same one: no NOTIFICATION, no reset, the route is still held,
    # and a route announced now travels over it.
    speaker.cmd(cmd="announce", prefixes=["10.200.0.2/32"])
    wait_for(lambda: exabgp.learnt() == {"10.200.0.1/32", "10.200.0.2/32"},
             what="a route announced after the malformed UPDATEs")
    assert exabgp.notifications() == []
    assert exabgp.states().count("up") == 1 and "down" not in exabgp.states()
    status = speaker.status()[ROUTER_V4]
    assert status["state"] == "Established" and "NOTIFICATION" not in status["last_error"]
    assert "sent NOTIFICATION" not in speaker.logs()
