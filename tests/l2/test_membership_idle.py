"""The heartbeat membership sleeps while it is alone and wakes when it is not.

Run in a network namespace of its own (`unshare --net`, loopback only): two
speakers on 127.0.0.1 and 127.0.0.2."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import asyncio, ipaddress, json, time
    from speaker.membership.udp import UdpMembership

    async def main():
        a = UdpMembership("a", port=17946, bind="::ffff:127.0.0.1")
        b = UdpMembership("b", port=17946, bind="::ffff:127.0.0.2")
        sent = {"a": 0, "b": 0}
        expired = {"a": 0}
        for name, m in (("a", a), ("b", b)):
            original = m._send
            def counting(kind, original=original, name=name):
                sent[name] += 1
                original(kind)
            m._send = counting
        original_expire = a.view.expire
        def counting_expire(now):
            expired["a"] += 1
            return original_expire(now)
        a.view.expire = counting_expire
        changes = []
        await a.start(lambda joined, left: changes.append((sorted(joined), sorted(left))))
        await b.start(lambda joined, left: None)
        # Alone: nobody else is a member.
        a.set_members({"a": (ipaddress.ip_address("127.0.0.1"),)})
        await asyncio.sleep(0.5)
        alone = dict(sent, expiry=expired["a"])
        members = {"a": (ipaddress.ip_address("127.0.0.1"),),
                   "b": (ipaddress.ip_address("127.0.0.2"),)}
        a.set_members(members)
        b.set_members(members)
        await asyncio.sleep(0.3)
        together = dict(sent, expiry=expired["a"], live=sorted(a.live()))
        await b.close()  # b goes silent without a word
        await asyncio.sleep(0.5)
        after = sorted(a.live())
        await a.close()
        print(json.dumps({"alone": alone, "together": together, "after": after,
                          "changes": changes}))

    asyncio.run(main())
""")


def test_alone_it_sleeps_and_with_a_peer_it_beats_and_detects() -> None:
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c",
         f'ip link set lo up && ip addr add 127.0.0.2/8 dev lo 2>/dev/null; '
         f'exec {sys.executable} -c "$0"', SCRIPT],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # Alone, half a second: no heartbeat and no expiry tick (at 50 ms they would be
    # 10 and 20).
    assert out["alone"] == {"a": 0, "b": 0, "expiry": 0}
    together = out["together"]
    assert together["a"] > 0 and together["b"] > 0 and together["expiry"] > 0
    assert together["live"] == ["a", "b"]
    # b's silence is noticed: the expiry loop runs while someone is alive.
    assert out["after"] == ["a"]
    assert out["changes"] == [[["b"], []], [[], ["b"]]]
