"""Entry point of the `skein` CNI plugin executable.

First the fast path (forward to skein-agent; see fastpath.py for why it
imports next to nothing), and only when that fails the in-process plugin,
with its pyroute2 import.
"""

from __future__ import annotations

import os
import sys

from cni_plugin import fastpath


def main() -> None:
    command = os.environ.get("CNI_COMMAND", "")
    stdin = b"" if command == "VERSION" and sys.stdin.isatty() else sys.stdin.buffer.read()
    answer = fastpath.forward(os.environ, stdin)
    if isinstance(answer, tuple):
        code, out = answer
        if out:
            os.write(1, out.encode() + b"\n")
        sys.exit(code)
    from cni_plugin.plugin import SkeinPlugin
    from cni_plugin.skel import dispatch, finish

    plugin = SkeinPlugin()
    if answer == fastpath.PARTIAL:
        from cni_plugin.fallback import complete_after_agent_failure

        finish(*complete_after_agent_failure(plugin, stdin))
    finish(*dispatch(plugin, os.environ, stdin))


if __name__ == "__main__":
    main()
