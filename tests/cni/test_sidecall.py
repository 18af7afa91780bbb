"""cni_plugin/sidecall.py: one call at a time on a kept side thread."""

from __future__ import annotations

import threading

import pytest

from cni_plugin.sidecall import SideThread


def test_the_call_runs_while_the_owner_goes_on() -> None:
    side = SideThread()
    owner_went_on = threading.Event()
    ran_on: list[str] = []

    def call(x: int) -> int:
        ran_on.append(threading.current_thread().name)
        # Finishes only once the owner has moved past start(): they overlap.
        assert owner_went_on.wait(10)
        return x * 2

    pending = side.start(call, 21)
    owner_went_on.set()
    assert pending.result() == 42
    assert pending.result() == 42  # collected once, kept
    assert ran_on == ["side"]


def test_an_exception_reaches_the_owner() -> None:
    side = SideThread("s1")

    def fails() -> None:
        raise OSError(5, "boom")

    pending = side.start(fails)
    with pytest.raises(OSError, match="boom"):
        pending.result()
    assert side.start(lambda: "next").result() == "next"  # the thread goes on


def test_an_uncollected_outcome_never_mixes_with_the_next() -> None:
    side = SideThread("s2")
    release = threading.Event()
    first = side.start(lambda: release.wait(10) and "first")
    release.set()
    # `first` is never collected; the next start waits it out and drops it.
    second = side.start(lambda: "second")
    assert second.result() == "second"
    assert first.result() == "first"


def test_calls_are_made_one_after_the_other_on_one_thread() -> None:
    side = SideThread("s3")
    threads = {side.start(lambda: threading.get_ident()).result() for _ in range(20)}
    assert len(threads) == 1 and threading.get_ident() not in threads
