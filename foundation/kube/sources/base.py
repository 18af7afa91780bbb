"""The one interface every daemon reads cluster state through.

A source holds the latest `ClusterState` and tells its readers when there is a
newer one.  Two styles of reader must be served by the same object:

- a thread-based loop (the CNI node agent) calls
  `state = src.wait_for_change(state.revision, timeout)`; passing the revision
  it last saw makes the call race-free: a change that landed between two calls
  is returned at once rather than missed;
- an asyncio daemon (the speaker) iterates `async for state in changes(src)`,
  which bridges the source's thread into the event loop with
  `call_soon_threadsafe` and coalesces bursts into the newest snapshot.

`subscribe(callback)` is the primitive under both; callbacks run on the source's
own thread and must only hand the state off.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from dataclasses import fields, replace
from typing import Self

from foundation.kube.model.cluster import ClusterState

log = logging.getLogger(__name__)

Callback = Callable[[ClusterState], None]

# ClusterState's field for each model type, found by asking ClusterState itself, so
# that a source can build a state from per-kind tuples it keeps sorted (changing
# only the kinds that changed) rather than through ClusterState.from_objects.
STATE_FIELDS: dict[type, str] = {}


def state_field(obj: object) -> str | None:
    """The ClusterState field holding objects of `obj`'s type (None: not a model kind)."""
    kind = type(obj)
    if kind not in STATE_FIELDS:
        try:
            probe = ClusterState.from_objects([obj])  # type: ignore[list-item]
        except (AttributeError, KeyError, TypeError):
            return None
        for f in fields(ClusterState):
            if getattr(probe, f.name) == (obj,):
                STATE_FIELDS[kind] = f.name
                break
    return STATE_FIELDS.get(kind)


class Source(ABC):
    """Latest cluster state plus change notification; subclasses call `_publish`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state = ClusterState()
        self._subscribers: list[Callback] = []

    # -- for readers ------------------------------------------------------------

    def refusals(self) -> tuple[str, ...]:
        """The objects skipped because they cannot be used, one line each, naming
        the object and the field (as logged); none by default."""
        return ()

    def snapshot(self) -> ClusterState:
        """The newest state (revision 0 and empty until the first load)."""
        with self._cond:
            return self._state

    def wait_for_change(self, since_revision: int,
                        timeout: float | None = None) -> ClusterState | None:
        """The newest state once its revision exceeds `since_revision`; None on timeout."""
        with self._cond:
            if self._cond.wait_for(lambda: self._state.revision > since_revision, timeout):
                return self._state
            return None

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(state)` after every change; returns the unsubscribe function."""
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    @abstractmethod
    def start(self) -> None:
        """Load the current state (synchronously, so snapshot() is useful at once)
        and begin following changes in the background."""

    @abstractmethod
    def close(self) -> None:
        """Stop following changes; the last state stays readable."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for implementations ------------------------------------------------------

    def _publish(self, state: ClusterState) -> bool:
        """Make `state` current if it differs from the current one; True if it did."""
        with self._cond:
            if state == self._state:
                return False
            self._state = replace(state, revision=self._state.revision + 1)
            published = self._state
            subscribers = list(self._subscribers)
            self._cond.notify_all()
        for callback in subscribers:
            try:
                callback(published)
            except Exception:  # noqa: BLE001 - one bad reader must not stop the others
                log.exception("state change subscriber %r failed", callback)
        return True


async def changes(source: Source, since_revision: int = 0) -> AsyncGenerator[ClusterState, None]:
    """Each newer state of `source` (the current one first if newer than `since_revision`).

    States published faster than the consumer reads are coalesced: it always
    gets the newest, never a backlog.
    """
    import asyncio  # here: the controller and the agent, which never call this, skip it

    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def on_change(_state: ClusterState) -> None:
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop is closed; the generator is going away
            pass

    # Subscribe before the first look, so nothing between the two is lost.
    unsubscribe = source.subscribe(on_change)
    try:
        seen = since_revision
        while True:
            state = source.snapshot()
            if state.revision > seen:
                seen = state.revision
                yield state
            await wake.wait()
            wake.clear()
    finally:
        unsubscribe()
