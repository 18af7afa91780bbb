"""FileSource follows a manifests file: edits, atomic replacement, bad YAML, bad
objects, a file briefly missing; and the Source interface for threads and asyncio.

Nothing here sleeps to assert: each wait is a poll against a deadline for an
observable event (a new revision, a log line).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.model import ClusterState
from foundation.kube.sources import FileSource, changes, yaml_documents
from foundation.kube.sources import file as file_source
from foundation.kube.sources.file import (
    MAX_DEPTH,
    ManifestParser,
    NestingTooDeep,
    ParsedFile,
    check_depth,
    depth_bound,
    parse_manifests,
    racy_window_ns,
)
from foundation.sequences import identity_delta
from lab.speakers import poll
from tests.calls import record_calls

LOGGER = "foundation.kube.sources.file"
DEADLINE = 10.0


def node(name: str, ip: str) -> str:
    return (f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"
            f"status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n")


def pool(name: str, cidr: str) -> str:
    return (f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n"
            f"metadata: {{name: {name}, namespace: metallb-system}}\n"
            f"spec: {{addresses: [{cidr}]}}\n")


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    poll(condition, DEADLINE, what, interval=0.01)


def logged(caplog: pytest.LogCaptureFixture, fragment: str) -> Callable[[], bool]:
    return lambda: any(fragment in r.getMessage() for r in caplog.records)


def names(state: ClusterState) -> list[str]:
    return [n.name for n in state.nodes]


def atomic_write(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(docs(node("n1", "10.0.0.1"), pool("lab", "192.168.50.0/28")))
    return path


@pytest.fixture
def source(manifests: Path, caplog: pytest.LogCaptureFixture) -> Iterator[FileSource]:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    src = FileSource(str(manifests), poll_interval=0.02)
    src.start()
    try:
        yield src
    finally:
        src.close()


def next_state(src: FileSource, after: ClusterState) -> ClusterState:
    state = src.wait_for_change(after.revision, timeout=DEADLINE)
    assert state is not None, "no new state published"
    return state


def test_start_loads_synchronously(source: FileSource) -> None:
    state = source.snapshot()
    assert state.revision == 1 and names(state) == ["n1"]
    assert state.pool("lab") is not None


def test_in_place_edit_is_picked_up(source: FileSource, manifests: Path) -> None:
    first = source.snapshot()
    manifests.write_text(docs(node("n1", "10.0.0.1"), node("n2", "10.0.0.2")))
    state = next_state(source, first)
    assert state.revision == first.revision + 1
    assert names(state) == ["n1", "n2"] and state.pool("lab") is None


def test_atomic_rename_replacement_is_picked_up(source: FileSource, manifests: Path) -> None:
    first = source.snapshot()
    atomic_write(manifests, docs(node("n3", "10.0.0.3")))
    assert names(next_state(source, first)) == ["n3"]


def test_bad_yaml_keeps_last_good_state_until_fixed(
        source: FileSource, manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = source.snapshot()
    manifests.write_text(docs(node("n1", "10.0.0.1"), "kind: Node\n  metadata: [oops\n"))
    wait_until(logged(caplog, "not valid YAML"), "the bad-YAML log line")
    record = next(r for r in caplog.records if "not valid YAML" in r.getMessage())
    assert record.levelno == logging.ERROR and "\n" not in record.getMessage()
    assert record.getMessage().startswith(f"{manifests}: not valid YAML (line ")
    assert record.getMessage().endswith("keeping the last good state")
    assert source.snapshot() is good

    manifests.write_text(docs(node("n1", "10.0.0.1"), node("n4", "10.0.0.4")))
    assert names(next_state(source, good)) == ["n1", "n4"]


def test_bad_object_is_skipped_with_one_line_and_the_rest_kept(
        source: FileSource, manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = source.snapshot()
    bad_service = ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                   "spec: {type: LoadBalancer, ports: [{port: http}]}\n")
    manifests.write_text(docs(node("n1", "10.0.0.1"), bad_service, "- just a list\n",
                              "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
                              node("n2", "10.0.0.2")))
    state = next_state(source, first)
    assert names(state) == ["n1", "n2"] and state.services == ()
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert skipped == [
        f'skipped {manifests}:6: Service default/web: spec.ports[0].port: expected an integer '
        f'1-65535, got "http"',
        f"skipped {manifests}:11: expected a Kubernetes object (a mapping), got a list",
    ]
    ignored = [r for r in caplog.records if "ignored kind" in r.getMessage()]
    assert [r.levelno for r in ignored] == [logging.DEBUG]
    assert ignored[0].getMessage() == f"ignored kind {manifests}:13: ConfigMap c"


def test_cross_object_problems_are_logged_and_nothing_dropped(
        source: FileSource, manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = source.snapshot()
    manifests.write_text(docs(pool("a", "192.168.50.0/28"), pool("b", "192.168.50.8/29")))
    state = next_state(source, first)
    assert [p.name for p in state.ip_address_pools] == ["a", "b"]
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("inconsistent")]
    assert warned == [f"inconsistent: {manifests}: IPAddressPool metallb-system/b: "
                      "spec.addresses[0]: overlaps IPAddressPool a"]


def test_missing_file_keeps_state_and_recovers(
        source: FileSource, manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = source.snapshot()
    manifests.unlink()
    wait_until(logged(caplog, "missing; keeping the last state"), "the missing-file warning")
    assert source.snapshot() is first
    manifests.write_text(docs(node("n5", "10.0.0.5")))
    assert names(next_state(source, first)) == ["n5"]
    missing = [r for r in caplog.records if "missing;" in r.getMessage()]
    assert len(missing) == 1  # said once, not every poll


def test_a_file_that_is_not_utf8_is_reported_once_and_the_last_state_kept(
        manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    src = FileSource(str(manifests))
    assert src.poll()
    good = src.snapshot()
    bad = docs(node("n1", "10.0.0.1")).encode() + b"# caf\xe9\n"
    atomic_write_bytes(manifests, bad)
    assert not src.poll() and src.snapshot() is good
    atomic_write_bytes(manifests, bad)  # the same bytes again: a new inode, no new line
    assert not src.poll()
    lines = [r for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        f"{manifests}: not UTF-8 (byte {len(bad) - 2}); keeping the last good state"]
    atomic_write(manifests, docs(node("n2", "10.0.0.2")))
    assert src.poll() and names(src.snapshot()) == ["n2"]


def test_rewriting_identical_content_publishes_nothing(manifests: Path) -> None:
    src = FileSource(str(manifests))
    assert src.poll() and src.snapshot().revision == 1
    atomic_write(manifests, manifests.read_text())
    assert not src.poll()
    # Same objects in another order and with comments: still the same state.
    atomic_write(manifests, "# reordered\n" + docs(pool("lab", "192.168.50.0/28"),
                                                   node("n1", "10.0.0.1")))
    assert not src.poll() and src.snapshot().revision == 1


def test_same_size_rewrite_within_timestamp_granularity_is_seen(manifests: Path) -> None:
    # Two writes in one mtime tick that keep the size leave os.stat unchanged
    # but for the inode-preserving content; the racy-file rule catches it.  The
    # mtime is made a whole second, as a coarse filesystem stamps it (2 s window).
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    os.utime(manifests, ns=(now, now))
    src = FileSource(str(manifests))
    assert src.poll()
    before = os.stat(manifests)
    text = manifests.read_text().replace("n1", "n9")
    with open(manifests, "r+") as f:
        f.write(text)
    os.utime(manifests, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(manifests)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)
    assert src.poll() and names(src.snapshot()) == ["n9"]


def _racy_now(path: Path) -> None:
    """The file's mtime made a whole second from now (as a coarse filesystem stamps
    it): racy for the next 2 s."""
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    os.utime(path, ns=(now, now))


def test_a_racy_write_not_yet_closed_is_read_when_the_mtime_is_old_enough(
        manifests: Path) -> None:
    """A writer that holds the file open sends IN_MODIFY only: not read while it
    writes, but the racy file's second read still comes, and finds the change."""
    _racy_now(manifests)
    src = FileSource(str(manifests), poll_interval=3600, backstop_interval=3600)
    src.start()
    try:
        assert names(src.snapshot()) == ["n1"] and src._racy  # noqa: SLF001
        text = manifests.read_text().replace("n1", "n9")
        with open(manifests, "r+") as f:
            f.write(text)
            f.flush()
            state = src.wait_for_change(1, timeout=DEADLINE)
            assert state is not None and names(state) == ["n9"]
    finally:
        src.close()


def test_a_racy_file_nobody_wrote_is_not_read_again(
        manifests: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With inotify, no event since the racy read means nothing was written: the
    second read is skipped (at many thousand Services it is a read of the file)."""
    compared = record_calls(monkeypatch, file_source, "_reads_as")
    src = FileSource(str(manifests), poll_interval=3600, backstop_interval=3600)
    src.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while src._racy and time.monotonic() < deadline:  # noqa: SLF001 - under test
            time.sleep(0.05)
        compared.clear()  # the first read came before the watch: it is read again once
        (manifests.parent / "other.log").touch()
        atomic_write(manifests, docs(node("n2", "10.0.0.2")))
        state = src.wait_for_change(1, timeout=DEADLINE)
        assert state is not None and names(state) == ["n2"]
        assert src._racy  # noqa: SLF001 - a fresh mtime
        with open(manifests.parent / "other.log", "a") as log:  # a neighbour's writes
            while src._racy and time.monotonic() < deadline:  # noqa: SLF001
                log.write("a line\n")
                log.flush()
                time.sleep(0.01)
        assert not src._racy and compared == []  # noqa: SLF001
        # Written again now, it is still seen.
        atomic_write(manifests, docs(node("n3", "10.0.0.3")))
        state = src.wait_for_change(2, timeout=DEADLINE)
        assert state is not None and names(state) == ["n3"]
    finally:
        src.close()


def test_missing_at_start_is_empty_then_loaded(tmp_path: Path) -> None:
    path = tmp_path / "later.yaml"
    src = FileSource(str(path), poll_interval=0.02)
    src.start()
    try:
        assert src.snapshot() == ClusterState() and src.snapshot().revision == 0
        path.write_text(node("n1", "10.0.0.1"))
        state = src.wait_for_change(0, timeout=DEADLINE)
        assert state is not None and names(state) == ["n1"]
    finally:
        src.close()


def test_wait_for_change_is_race_free_and_times_out(source: FileSource,
                                                    manifests: Path) -> None:
    first = source.snapshot()
    manifests.write_text(node("n2", "10.0.0.2"))
    wait_until(lambda: source.snapshot().revision > first.revision, "the reload")
    # The change landed before we asked: asking with the old revision returns it at once.
    state = source.wait_for_change(first.revision, timeout=0)
    assert state is not None and names(state) == ["n2"]
    assert source.wait_for_change(state.revision, timeout=0.05) is None


def test_subscribers_are_called_and_can_leave(source: FileSource, manifests: Path) -> None:
    seen: list[int] = []
    unsubscribe = source.subscribe(lambda s: seen.append(s.revision))
    manifests.write_text(node("n2", "10.0.0.2"))
    wait_until(lambda: seen == [2], "the subscriber call")
    unsubscribe()
    manifests.write_text(node("n3", "10.0.0.3"))
    wait_until(lambda: source.snapshot().revision == 3, "the next reload")
    assert seen == [2]


def test_a_failing_subscriber_does_not_stop_the_others(
        source: FileSource, manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def broken(state: ClusterState) -> None:
        raise RuntimeError("boom")

    source.subscribe(broken)
    source.subscribe(lambda s: seen.append(s.revision))
    manifests.write_text(node("n2", "10.0.0.2"))
    wait_until(lambda: seen == [2], "the healthy subscriber")
    assert logged(caplog, "subscriber")()


def test_asyncio_changes(source: FileSource, manifests: Path) -> None:
    async def follow() -> list[list[str]]:
        got: list[list[str]] = []
        stream = changes(source)
        got.append(names(await asyncio.wait_for(anext(stream), DEADLINE)))
        manifests.write_text(docs(node("n1", "10.0.0.1"), node("n2", "10.0.0.2")))
        got.append(names(await asyncio.wait_for(anext(stream), DEADLINE)))
        await stream.aclose()
        return got

    assert asyncio.run(follow()) == [["n1"], ["n1", "n2"]]


def test_an_emptied_file_keeps_the_last_state_and_a_file_with_no_objects_clears_it(
        source: FileSource, manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Empty (a truncating writer caught half-way) keeps; `---` means nothing."""
    first = source.snapshot()
    manifests.write_text("")
    wait_until(logged(caplog, "empty; keeping the last good state (1 nodes"), "the warning")
    assert source.snapshot() is first
    manifests.write_text("\n  \n")  # whitespace only: as empty
    time.sleep(0.1)
    assert source.snapshot() is first
    manifests.write_text("---\n# nothing, on purpose\n")
    assert next_state(source, first).nodes == ()
    assert len([r for r in caplog.records if "empty; keeping" in r.getMessage()]) == 1


def test_empty_at_start_is_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = tmp_path / "empty.yaml"
    path.write_text("")
    src = FileSource(str(path))
    assert not src.poll()  # nothing to publish: the empty state is the current one
    assert src.snapshot() == ClusterState()
    assert any("empty: no objects" in r.getMessage() for r in caplog.records)
    path.write_text(node("n1", "10.0.0.1"))
    assert src.poll() and names(src.snapshot()) == ["n1"]


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000,
    "- " * 5000 + "x",
    "a:\u2028" + "".join(" " * i + f"k{i}:\u2028" for i in range(1, 400)) + "  v",
])
def test_deep_nesting_is_refused_with_one_line_and_the_last_state_kept(
        source: FileSource, manifests: Path, caplog: pytest.LogCaptureFixture,
        text: str) -> None:
    """Whichever stops it first: this check, or a libyaml >= 0.2.6 that looks
    ahead over a run of "[" (its own limit is 1000)."""
    first = source.snapshot()
    manifests.write_text(docs(node("n7", "10.0.0.7"), text))
    wait_until(logged(caplog, "not valid YAML"), "the refusal")
    record = next(r for r in caplog.records if "not valid YAML" in r.getMessage())
    assert record.levelno == logging.ERROR and "\n" not in record.getMessage()
    assert f"nested deeper than {MAX_DEPTH} levels" in record.getMessage() or \
        "maximum nesting depth" in record.getMessage()
    assert "keeping the last good state" in record.getMessage()
    assert source.snapshot() is first


def test_the_depth_bound_is_cheap_and_lets_ordinary_files_straight_through() -> None:
    """depth_bound decides alone for ordinary files (no second pass): a CRD-like
    schema 40 levels deep with flow lists still passes it."""
    lines = []
    for level in range(40):
        lines.append("  " * level + f"k{level}:")
    lines.append("  " * 40 + "type: [string, 'null']")
    text = "\n".join(lines)
    assert depth_bound(text) <= MAX_DEPTH
    assert len(yaml_documents(text)) == 1
    nested = "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth_bound(nested) > MAX_DEPTH
    check_depth("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))  # 128 levels: fine
    with pytest.raises(NestingTooDeep):
        check_depth(nested)


# -- re-reading reuses what did not change ------------------------------------------------

def service(name: str, ip: str, port: int = 80) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
            f"spec: {{type: LoadBalancer, ports: [{{port: {port}}}]}}\n"
            f"status: {{loadBalancer: {{ingress: [{{ip: {ip}}}]}}}}\n")


PIECES = [
    node("n1", "10.0.0.1"), pool("p", "10.1.0.0/24"), service("a", "10.1.0.1"),
    service("a", "10.1.0.2"),  # defined again: a duplicate, reported with both lines
    service("b", "10.1.0.3", port=0),  # a bad object: skipped with one line
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
    "# only a comment\n",
    "apiVersion: v1\nkind: List\nitems:\n- "
    + service("c", "10.1.0.4").replace("\n", "\n  ").rstrip(" "),
    "{apiVersion: v1, kind: Service, metadata: {name: d}}\n...\n",
    "key: |\n  a block scalar\n  --- not a marker here\n",
    "# caf\u00e9: not ASCII, in a comment\n" + service("e", "10.1.0.5"),
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: \"a\u2028b\"}\n",
]


def same(one: object, other: object) -> None:
    assert one == other, f"{one}\n!=\n{other}"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=8), min_size=1, max_size=4))
def test_reparsing_equals_a_fresh_parse(files: list[list[str]]) -> None:
    """Whatever was parsed before, the result (objects, errors with their lines,
    duplicates, ignored kinds) is exactly what parsing the text afresh gives."""
    parser = ManifestParser()
    for pieces in files:
        text = docs(*pieces)
        cached, fresh = parser.parse(text.encode(), "F"), parse_manifests(text, "F")
        same(cached.state, fresh.state)
        same((cached.errors, cached.ignored, cached.problems),
             (fresh.errors, fresh.ignored, fresh.problems))


def _parsed_or_error(parse: Callable[[], object]) -> object:
    try:
        return parse()
    except yaml.YAMLError as exc:
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=8),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3),
                          st.sampled_from(["---\n", "--- \n", "...\n", "-", "\n", " ", "a",
                                           "\u00e9", "\r\n", ""])), min_size=1, max_size=5))
def test_an_edit_anywhere_reparses_as_a_fresh_parse(
        pieces: list[str], edits: list[tuple[int, int, str]]) -> None:
    """The unchanged head and tail are found from the texts' common prefix and
    suffix: an edit that lands inside a marker, a line or a boundary gives what
    a fresh parse does."""
    parser = ManifestParser()
    text = docs(*pieces)
    before = parser.parse(text.encode(), "F").state
    for at, cut, insert in edits:
        at = at % (len(text) + 1)
        text = text[:at] + insert + text[at + cut:]
        cached = _parsed_or_error(lambda: parser.parse(text.encode(), "F"))  # noqa: B023
        fresh = _parsed_or_error(lambda: parse_manifests(text, "F"))  # noqa: B023
        if isinstance(cached, type) or isinstance(fresh, type):
            assert cached == fresh
            continue
        assert isinstance(cached, ParsedFile) and isinstance(fresh, ParsedFile)
        same(cached.state, fresh.state)
        same((cached.errors, cached.ignored, cached.problems),
             (fresh.errors, fresh.ignored, fresh.problems))
        # The Services that came and went, as the parser recorded them (or found by
        # comparing, when it parsed whole), are the difference by identity.
        came, went = cached.state.services_since(before)
        expected = identity_delta(before.services, cached.state.services)
        assert sorted(map(id, came)) == sorted(map(id, expected[0]))
        assert sorted(map(id, went)) == sorted(map(id, expected[1]))
        before = cached.state


def test_unchanged_documents_are_not_parsed_again() -> None:
    parser = ManifestParser()
    services = [service(f"s{i}", f"10.1.{i // 200}.{i % 200}") for i in range(300)]
    first = parser.parse(docs(pool("p", "10.1.0.0/16"), *services).encode()).state
    services[150] = service("s150", "10.1.9.9")
    second = parser.parse(docs(pool("p", "10.1.0.0/16"), *services,
                               service("new", "10.1.9.10")).encode()).state
    before = {s.key: s for s in first.services}
    after = {s.key: s for s in second.services}
    assert [k for k in after if before.get(k) is not after[k]] == ["default/new",
                                                                   "default/s150"]
    assert first.ip_address_pools is second.ip_address_pools  # untouched: the same tuple
    changes = second.service_changes
    assert changes is not None and changes.before is first.services
    came, went = second.services_since(first)
    assert sorted(s.name for s in came) == ["new", "s150"]
    assert [s.name for s in went] == ["s150"]
    # Against any other state the record does not apply: the tuples are compared.
    other = replace(first, services=first.services[1:])
    assert [s.name for s in second.services_since(other)[1]] == ["s150"]
    assert [str(i) for i in after["default/s150"].ingress_ips] == ["10.1.9.9"]


def test_bad_yaml_in_one_document_names_its_line_in_the_file() -> None:
    parser = ManifestParser()
    good = docs(node("n1", "10.0.0.1"), pool("p", "10.1.0.0/24"))
    parser.parse(good.encode())
    with pytest.raises(yaml.YAMLError) as caught:
        parser.parse(docs(node("n1", "10.0.0.1"), pool("p", "10.1.0.0/24"),
                          "a: [b\n").encode())
    mark = getattr(caught.value, "problem_mark", None)
    assert mark is not None and mark.line + 1 >= good.count("\n") + 2


def test_bytes_that_are_not_utf8_name_their_byte_and_leave_the_parser_as_it_was() -> None:
    parser = ManifestParser()
    good = docs(pool("p", "10.1.0.0/24"), service("a", "10.1.0.1")).encode()
    first = parser.parse(good)
    bad = good + b"---\n# \xff\n"
    with pytest.raises(UnicodeDecodeError) as caught:
        parser.parse(bad)
    assert caught.value.start == len(good) + 6
    again = parser.parse(good + b"---\n# fixed\n")
    assert again.state.services[0] is first.state.services[0]


def test_the_racy_window_follows_the_mtime_granularity() -> None:
    assert racy_window_ns(1_700_000_000 * 1_000_000_000) == 2_000_000_000
    assert racy_window_ns(1_700_000_000 * 1_000_000_000 + 4_000_000) == 100_000_000


@pytest.mark.parametrize("how", ["in place", "renamed over", "configmap symlink swap"])
def test_a_change_wakes_the_source_without_waiting_for_a_poll(tmp_path: Path, how: str) -> None:
    """inotify on the file's directory: with polling and the backstop both an hour
    apart, only the change itself can wake the source."""
    if how == "configmap symlink swap":
        # A ConfigMap volume: cluster.yaml -> ..data/cluster.yaml, ..data -> a
        # timestamped directory, swapped by renaming a new symlink over ..data.
        first = tmp_path / "..2026_01"
        first.mkdir()
        (first / "cluster.yaml").write_text(docs(node("n1", "10.0.0.1")))
        (tmp_path / "..data").symlink_to(first.name)
        path = tmp_path / "cluster.yaml"
        path.symlink_to("..data/cluster.yaml")
    else:
        path = tmp_path / "cluster.yaml"
        path.write_text(docs(node("n1", "10.0.0.1")))
    src = FileSource(str(path), poll_interval=3600, backstop_interval=3600)
    src.start()
    try:
        before = src.snapshot()
        assert names(before) == ["n1"]
        time.sleep(0.2)  # past the racy window, so that only the change wakes it
        text = docs(node("n1", "10.0.0.1"), node("n2", "10.0.0.2"))
        if how == "in place":
            path.write_text(text)
        elif how == "renamed over":
            atomic_write(path, text)
        else:
            second = tmp_path / "..2026_02"
            second.mkdir()
            (second / "cluster.yaml").write_text(text)
            (tmp_path / "..data_tmp").symlink_to(second.name)
            os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        assert names(next_state(src, before)) == ["n1", "n2"]
    finally:
        src.close()
