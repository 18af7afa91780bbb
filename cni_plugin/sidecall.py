"""One blocking call made on a thread of its own while the caller goes on.

Why: two slow steps of an ADD in skein-agent do not depend on each other.
The kernel makes the veth pair inside one netlink send (~0.5 ms, during which
the sending thread holds no GIL), and skein-ipam writes the lease (Python and
file system calls).  Done side by side, the pair costs nothing on top of the
lease.

Two details make the difference between a gain and a loss, both measured:
- the thread is made once per worker and kept: starting a thread per ADD
  costs about what the overlap saves;
- `SideThread.start` returns only once the side thread is about to make its
  call.  A thread that wakes while another one runs Python waits for the GIL
  until that one blocks or its switch interval (5 ms) runs out: had the
  caller gone straight on to the lease, the send would mostly have started
  after it.

The side thread needs the GIL once more after its call returns, to report;
the caller's `Pending.result` lets it have it.  A call made this way must not
share anything with what the caller does meanwhile but the GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a SideThread is made: the executable never does
    from queue import SimpleQueue

_STARTED = object()


class Pending:
    """The outcome of one call made by a SideThread."""

    def __init__(self, events: SimpleQueue[Any]) -> None:
        self._events = events
        self._outcome: tuple[bool, Any] | None = None

    def result(self) -> Any:
        """Wait for the call; return its value or raise its exception."""
        if self._outcome is None:
            self._outcome = self._events.get()
        ok, value = self._outcome
        if not ok:
            raise value
        return value


class SideThread:
    """A daemon thread that makes one call at a time for the thread that owns
    it (one owner: `start` and `Pending.result` alternate)."""

    def __init__(self, name: str = "side") -> None:
        from queue import SimpleQueue

        self._jobs: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = SimpleQueue()
        self._events: SimpleQueue[Any] = SimpleQueue()
        self._last: Pending | None = None
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def start(self, call: Callable[..., Any], *args: Any) -> Pending:
        """Have `call(*args)` made on the side thread; returns once it is
        being made.  A previous call whose outcome nobody collected is waited
        for first (its outcome dropped), so the two never mix."""
        if self._last is not None:
            try:
                self._last.result()
            except BaseException:  # noqa: BLE001, S110 - its owner gave up on it
                pass
        self._jobs.put((call, args))
        marker = self._events.get()
        assert marker is _STARTED
        self._last = Pending(self._events)
        return self._last

    def _serve(self) -> None:
        while True:
            call, args = self._jobs.get()
            self._events.put(_STARTED)
            try:
                outcome = (True, call(*args))
            except BaseException as exc:  # noqa: BLE001 - the owner raises it
                outcome = (False, exc)
            self._events.put(outcome)
            del call, args, outcome  # nothing of this call outlives it here
