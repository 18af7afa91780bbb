"""What `skein` does when skein-agent took a request and never answered.

Imported only on that path, so the executable's normal start stays small.
"""

from __future__ import annotations

import os

from cni_plugin import attachment, fastpath
from foundation.cni import spec
from foundation.cni.skel import Plugin, dispatch, error_reply
from foundation.cni.spec import CniError

# How long to wait for an agent still working on this attachment: with the
# fast path's own waits (fastpath.py) well within kubelet's 2 min runtime timeout.
LOCK_TIMEOUT = 30.0


def complete_after_agent_failure(plugin: Plugin, stdin: bytes) -> tuple[int, str]:
    """The agent took the request and died, hung, or never picked it up: wait
    until it no longer holds the attachment, undo what it may have done, then do
    it ourselves.  The connection is closed by now, so an agent that picks the
    request up later drops it (cni_plugin/agent/fastpath_server.py)."""
    socket_path = fastpath.agent_socket(stdin) or ""
    container_id = os.environ.get("CNI_CONTAINERID", "")
    ifname = os.environ.get("CNI_IFNAME", "")
    try:
        fd = attachment.lock(socket_path, container_id, ifname, timeout=LOCK_TIMEOUT)
    except OSError as exc:
        return error_reply(CniError(spec.ERR_IO, "cannot take the attachment's lock after "
                                    "skein-agent stopped answering",
                                    f"{attachment.lock_path(socket_path)}: {exc}"), stdin)
    if fd is None:
        return error_reply(CniError(spec.ERR_TRY_AGAIN_LATER,
                                    "skein-agent stopped answering and still holds this "
                                    "attachment",
                                    f"retry; check skein-agent on this node ({socket_path})"),
                           stdin)
    environ = dict(os.environ)
    try:
        if environ.get("CNI_COMMAND") == "ADD":
            dispatch(plugin, {**environ, "CNI_COMMAND": "DEL"}, stdin)
        return dispatch(plugin, environ, stdin)
    finally:
        attachment.unlock(fd)
