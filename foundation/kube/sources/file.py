"""FileSource: cluster state from a multi-document YAML file (`--manifests FILE`).

This is how the lab and the tests drive every daemon: they write Kubernetes
objects to a file and the daemons follow it as they would follow the API.

Robustness rules, because the file is edited by hand and by scripts while
daemons run:
- one bad object (or one bad document) is logged as ONE line naming the file,
  the line, the object and the field, and skipped; every other object is used;
- a file that is not valid YAML as a whole is logged and the last good state is
  kept (a half-written file must not withdraw every announcement);
- a missing file (between an unlink and a rename, or not yet written) keeps the
  last state too, and is picked up as soon as it appears;
- an empty file (no bytes but whitespace) is a valid "nothing" when the source
  starts, but once a file with content has been read, a file that becomes
  empty is taken for a half-written edit (a truncating editor, `> FILE`, a
  writer that has not written yet): logged, and the last good state kept, as
  for a missing or unparsable file.  To withdraw everything on purpose, write
  a file with no objects in it but not empty: `---`, or a comment;
- nesting deeper than MAX_DEPTH levels is refused as invalid YAML before any
  node is built, whatever libyaml the node has (see `check_depth`);
- kinds Skein does not use are ignored (logged at debug).

Change detection polls os.stat (device, inode, size, mtime in ns) every
`poll_interval` seconds (default 50 ms, so that a Service added to or removed
from the file is announced or withdrawn within the 100 ms the speaker
promises): cheap, and it sees in-place writes and atomic rename-replacement
alike.  As git does for its index ("racy git"), a file whose
mtime is too recent to be trusted is re-read on the next poll as well: a second
write within the filesystem's timestamp granularity that keeps the size would
otherwise go unseen.  Re-reading costs a read and a byte comparison, and parses
only when the bytes differ.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from foundation.kube.model.cluster import (
    ClusterState,
    ModelObject,
    expand_document,
    object_ref,
    parse_object,
    ref_of,
)
from foundation.kube.model.errors import ModelError, ObjectRef
from foundation.kube.sources.base import Source

log = logging.getLogger(__name__)

# Pairs that merge keys may copy: a fixed allowance plus one per character, so
# merging costs at most a few times what parsing the same bytes costs.
MERGE_BUDGET_BASE = 50_000
MERGE_BUDGET_PER_CHAR = 1

# Coarsest mtime granularity in common use (FAT: 2 s); newer than this is racy.
_RACY_WINDOW_NS = 2_000_000_000

# libyaml is several times faster on large files; PyYAML may be built without it.
_FastSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ManifestLoader(_FastSafeLoader):
    """YAML read as Kubernetes reads it: without YAML 1.1's base-60 numbers.

    PyYAML turns an unquoted `65535:65282` (how MetalLB's docs write a
    community) into the integer 3997382; Kubernetes' reader keeps it a string.
    Only the int and float resolvers change; the rest stays PyYAML's.

    Merge keys (`<<: *anchor`) copy the merged pairs into every mapping that
    names them, so a chain of anchors each merging the one before costs the
    square of its length (5,000 lines: 48 s).  As go-yaml does for aliases,
    the pairs merged per file are capped in proportion to its size.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._merge_budget = MERGE_BUDGET_BASE + MERGE_BUDGET_PER_CHAR * len(stream)

    def flatten_mapping(self, node: Any) -> None:
        before = len(node.value)
        super().flatten_mapping(node)
        self._merge_budget -= max(0, len(node.value) - before)
        if self._merge_budget < 0:
            raise yaml.constructor.ConstructorError(
                None, None, "merge keys (<<) copy too many pairs for the file's size",
                node.start_mark)


# Deeper nesting is refused.  Kubernetes objects stay far below it (a CRD's
# OpenAPI schema, among the deepest, reaches 20-40 levels); libyaml 0.2.6 stops
# at 1000; PyYAML's composer recurses once per level (in C with libyaml, where
# 0.2.5 lets 25,000 levels overflow the stack: SIGSEGV, no log line).
MAX_DEPTH = 128


class NestingTooDeep(yaml.YAMLError):
    """A YAMLError, so every caller already treats it as "not valid YAML"."""

    def __init__(self, line: int) -> None:
        super().__init__(f"line {line}: nested deeper than {MAX_DEPTH} levels")
        self.problem = f"nested deeper than {MAX_DEPTH} levels"
        self.problem_mark = yaml.Mark("<manifests>", 0, line - 1, 0, None, 0)


# Line breaks as YAML counts them (libyaml and PyYAML alike): not only "\n".
_BREAKS = str.maketrans({"\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})
_DOCUMENT_MARKER = re.compile(r"\n(?:---|\.\.\.)(?=[ \t\n]|\Z)")
# What may precede a block collection's first token on its line: indentation,
# then the indicators of compact forms ("- - x", "? - x", "- a: b") and a
# document marker.  A block collection starts at the end of one of these runs.
_LINE_PREFIX = re.compile(r"[ \t]*(?:(?:[-?:]|---)[ \t]+)*")
_PREFIX_STEP = re.compile(r"(?:[-?:]|---)[ \t]+")
# Columns up to this one are all counted as possible starts without looking;
# only lines whose prefix characters reach past it are looked at (they are few:
# finding each prefix of a 10,000-Service file would cost 5 % of its parse).
_SHALLOW = 16
_DEEP_LINE = re.compile(rf"\n([ \t?:-]{{{_SHALLOW + 1},}})")


def depth_bound(text: str) -> int:
    """An upper bound of the nesting depth of every document of `text`, from a
    linear scan (no parser).  Sound for any input: a block collection starts at
    the end of an indentation or a compact indicator of its line (_LINE_PREFIX),
    and at most two open ones share a column (a mapping and the sequence that is
    one of its values); a flow collection needs a "[" or "{" of its own
    document, and "[" may add an implicit one-pair mapping ("[a: [b: c]]" is
    four levels).  Quoted and block scalars only make it count more."""
    text = "\n" + text
    if any(ch in text for ch in "\r\x85\u2028\u2029"):
        text = text.translate(_BREAKS)
    columns = set(range(_SHALLOW + 1))
    for run in set(_DEEP_LINE.findall(text)):
        prefix = _LINE_PREFIX.match(run)
        assert prefix is not None  # it matches the empty string
        column = len(run) - len(run.lstrip(" \t"))
        columns.add(column)
        columns.update(step.end() for step in _PREFIX_STEP.finditer(prefix.group(), column))
    block = 2 * len(columns)
    flow = 2 * text.count("[") + text.count("{")
    if block + flow > MAX_DEPTH:  # then per document: each has a depth of its own
        edges = [0, *(m.start() for m in _DOCUMENT_MARKER.finditer(text)), len(text)]
        flow = max(2 * text.count("[", a, b) + text.count("{", a, b)
                   for a, b in zip(edges, edges[1:], strict=False))
    return block + flow


def check_depth(text: str) -> None:
    """NestingTooDeep if a document of `text` nests deeper than MAX_DEPTH.

    Nodes are composed by recursion (PyYAML's composer, in C with libyaml), so
    the depth is bounded before composing: by `depth_bound` alone for every
    ordinary file (a few ms for 10,000 Services), else by walking libyaml's
    events, which a state machine produces without recursion at any depth.
    """
    if depth_bound(text) <= MAX_DEPTH:
        return
    events = _ManifestLoader(text)
    try:
        depth = 0
        while events.check_event():
            event = events.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise NestingTooDeep(mark.line + 1 if mark is not None else 0)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except NestingTooDeep:
        raise
    except yaml.YAMLError:
        return  # composing stops at the same place, with the same error
    finally:
        events.dispose()


_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_NUMBER_TAGS = {"tag:yaml.org,2002:int": _INT, "tag:yaml.org,2002:float": _FLOAT}
_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, _NUMBER_TAGS.get(tag, regexp)) for tag, regexp in resolvers]
    for first, resolvers in _FastSafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class ParsedFile:
    """What one read of a manifests file yielded."""

    state: ClusterState
    # One line each: "FILE:LINE: Kind ns/name: field.path: message".
    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # Objects defined twice, and cross-object inconsistencies
    # (ClusterState.problems); nothing is dropped for them.
    problems: list[str] = field(default_factory=list)


def yaml_documents(text: str) -> list[tuple[int, Any]]:
    """(1-based start line, decoded document) for every document; YAMLError if any is bad.

    Composing node by node (rather than yaml.safe_load_all) keeps each
    document's line number for the messages.  Nesting is bounded first
    (`check_depth`).
    """
    check_depth(text)
    loader = _ManifestLoader(text)
    try:
        out = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # check_node said there is one; only the stubs doubt it
                break
            out.append((node.start_mark.line + 1, loader.construct_document(node)))
        return out
    except RecursionError:  # not expected past check_depth: still one line, not a crash
        raise yaml.YAMLError(f"nested too deeply for this parser (over {MAX_DEPTH} "
                             "levels?)") from None
    finally:
        loader.dispose()


def parse_manifests(text: str, origin: str = "<manifests>") -> ParsedFile:
    """Every usable object in a multi-document YAML text.

    Raises yaml.YAMLError when the text is not YAML at all; bad objects are
    reported in `errors` and left out.
    """
    objects: dict[ObjectRef, ModelObject] = {}
    where: dict[ObjectRef, int] = {}
    duplicates: list[str] = []
    result = ParsedFile(ClusterState())
    for line, doc in yaml_documents(text):
        for item in expand_document(doc):
            try:
                obj = parse_object(item)
            except ModelError as exc:
                result.errors.append(f"{origin}:{line}: {exc}")
                continue
            if obj is None:
                result.ignored.append(f"{origin}:{line}: {object_ref(item)}")
                continue
            ref = ref_of(obj)
            if ref in objects:
                duplicates.append(f"{origin}:{line}: {ref}: defined again (first at line "
                                  f"{where[ref]}); the later definition is used")
            objects[ref] = obj
            where[ref] = line
    result.state = ClusterState.from_objects(objects.values())
    result.problems = duplicates + [f"{origin}: {exc}" for exc in result.state.problems()]
    return result


def read_manifests(path: str) -> ParsedFile:
    """One-shot read of a manifests file (for CLIs); OSError / yaml.YAMLError propagate."""
    with open(path, encoding="utf-8") as f:
        return parse_manifests(f.read(), path)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line (PyYAML's own text spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"line {mark.line + 1} column {mark.column + 1}: {problem}"
    return str(problem)


class FileSource(Source):
    """Follows a manifests file; see the module docstring for the rules."""

    def __init__(self, path: str, poll_interval: float = 0.05) -> None:
        super().__init__()
        self.path = path
        self.poll_interval = poll_interval
        self._signature: tuple[int, int, int, int] | None = None
        self._racy = False
        self._content: bytes | None = None
        self._missing_reported = False
        self._had_content = False  # a file with content was read: emptying it is no edit
        self._empty_reported = False
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self.poll()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"FileSource({self.path})",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("%s: unexpected error while reloading", self.path)

    def poll(self) -> bool:
        """Look at the file once; True if a new state was published."""
        with self._poll_lock:
            content = self._read_if_changed()
            if content is None or content == self._content:
                return False
            self._content = content
            return self._load(content)

    def _read_if_changed(self) -> bytes | None:
        """The file's bytes if it may have changed since the last look, else None."""
        try:
            st = os.stat(self.path)
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if signature == self._signature and not self._racy:
                return None
            with open(self.path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            if not self._missing_reported:
                log.warning("%s: missing; keeping the last state until it reappears",
                            self.path)
                self._missing_reported = True
            self._signature = None
            return None
        except OSError as exc:
            log.warning("%s: cannot read (%s); keeping the last state", self.path, exc)
            self._signature = None
            return None
        if self._missing_reported:
            log.info("%s: present again", self.path)
            self._missing_reported = False
        self._signature = signature
        self._racy = time.time_ns() - st.st_mtime_ns < _RACY_WINDOW_NS
        return content

    def _load(self, content: bytes) -> bool:
        if not content.strip():
            return self._load_empty()
        try:
            parsed = parse_manifests(content.decode("utf-8"), self.path)
        except UnicodeDecodeError as exc:
            log.error("%s: not UTF-8 (byte %d); keeping the last good state",
                      self.path, exc.start)
            return False
        except yaml.YAMLError as exc:
            log.error("%s: not valid YAML (%s); keeping the last good state",
                      self.path, _yaml_problem(exc))
            return False
        for line in parsed.errors:
            log.warning("skipped %s", line)
        for line in parsed.problems:
            log.warning("inconsistent: %s", line)
        for line in parsed.ignored:
            log.debug("ignored kind %s", line)
        self._had_content = True
        self._empty_reported = False
        changed = self._publish(parsed.state)
        if changed:
            state = self.snapshot()
            log.info("%s: revision %d: %d nodes, %d services, %d pools", self.path,
                     state.revision, len(state.nodes), len(state.services),
                     len(state.ip_address_pools))
        return changed

    def _load_empty(self) -> bool:
        """An empty file: "nothing" before any content was read, afterwards most
        likely a writer caught between truncating and writing (module docstring)."""
        if self._had_content:
            if self._empty_reported:
                return False
            self._empty_reported = True
            state = self.snapshot()
            log.warning("%s: empty; keeping the last good state (%d nodes, %d services): a "
                        "half-written file?  To withdraw everything, write '---' or a "
                        "comment into it", self.path, len(state.nodes), len(state.services))
            return False
        log.info("%s: empty: no objects", self.path)
        return self._publish(ClusterState())
