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
- nesting deeper than MAX_DEPTH levels is refused as invalid YAML, without
  recursion, whatever libyaml the node has (see `yaml_documents`, `check_depth`);
- kinds Skein does not use are ignored (logged at debug).

Change detection looks at os.stat (device, inode, size, mtime in ns) when
inotify says something in the file's directory changed (any name: a
ConfigMap volume swaps a `..data` symlink, not the file), and every
`backstop_interval` seconds besides; without inotify (limits reached, another
OS) it polls every `poll_interval` seconds (default 50 ms, so that a Service
added to or removed from the file is announced or withdrawn within the 100 ms
the speaker promises).  Either way it sees in-place writes and atomic
rename-replacement alike.  As git does for its index ("racy git"), a file whose
mtime was too recent to be trusted when it was read is read once more when its
mtime is old enough (on every poll when polling): a second write within the
filesystem's timestamp granularity that keeps the size would otherwise go
unseen (too recent: 2 s on a filesystem with whole-second mtimes, 100 ms on one
with finer ones, see `racy_window_ns`).  With inotify that second read is
skipped when no event (a write included: IN_MODIFY, which alone never triggers
a read of a file still being written) came since the first, unless the path is
a symlink to another directory, whose writes the watch does not see.
Re-reading costs a read and a byte comparison, and parses only when the bytes
differ; a parse decodes and parses only the documents whose bytes changed
(`ManifestParser`), and a plain block document of a shape seen before is built
from that shape's template (`_block_document`).
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, fields
from io import FileIO
from itertools import accumulate, islice
from typing import Any

import yaml

from foundation import inotify
from foundation.kube.model.cluster import (
    ClusterState,
    ModelObject,
    ServiceChanges,
    expand_document,
    object_ref,
    parse_object,
    ref_of,
)
from foundation.kube.model.errors import ModelError, ObjectRef
from foundation.kube.model.service import Service
from foundation.kube.sources.base import STATE_FIELDS, Source, state_field

log = logging.getLogger(__name__)

# Pairs that merge keys may copy: a fixed allowance plus one per character, so
# merging costs at most a few times what parsing the same bytes costs.
MERGE_BUDGET_BASE = 50_000
MERGE_BUDGET_PER_CHAR = 1

# Coarsest mtime granularity in common use (FAT: 2 s); newer than this is racy.
_RACY_WINDOW_NS = 2_000_000_000
# A filesystem whose mtimes have sub-second digits stamps them from the kernel's
# coarse clock (a tick, 1-10 ms): a file older than this is not racy there.  Re-reading
# a large file every poll for 2 s after each change would cost more than the change.
_FINE_RACY_WINDOW_NS = 100_000_000


def racy_window_ns(mtime_ns: int) -> int:
    """How long after its mtime a file may still change without its mtime changing."""
    return _RACY_WINDOW_NS if mtime_ns % 1_000_000_000 == 0 else _FINE_RACY_WINDOW_NS

# libyaml is several times faster on large files; PyYAML may be built without it.
_FastSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ManifestLoader(_FastSafeLoader):
    """YAML read as Kubernetes reads it: without YAML 1.1's base-60 numbers.

    PyYAML turns an unquoted `65535:65282` (how MetalLB's docs write a
    community) into the integer 3997382; Kubernetes' reader keeps it a string.
    Only the int and float resolvers change; the rest stays PyYAML's.

    Merge keys (`<<: *anchor`) copy the merged pairs into every mapping that
    names them, so a chain of anchors each merging the one before costs the
    square of its length: a file of modest size could keep the daemon parsing
    for as long as it likes.  As go-yaml does for aliases, the pairs merged per
    file are capped in proportion to its size.
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
# only lines whose prefix characters reach past it are looked at (they are few,
# and finding the prefix of every line would cost a noticeable share of a parse).
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


def yaml_documents(text: str, budget: list[int] | None = None) -> list[tuple[int, Any]]:
    """(1-based start line, decoded document) for every document; YAMLError if any is bad.

    A document of the plain block style is read from its lines (`_block_document`);
    others are built straight from libyaml's events (`_build_documents`), in
    one loop that also bounds the nesting; anything that loop leaves to PyYAML
    (an error, a rare tag or merge, see `_build_documents`) sends the whole text
    through PyYAML's composer and constructor (`_composed_documents`), so the
    result and the error are always PyYAML's.  `budget` (a one-element list) is
    the merge-key allowance to draw from and update, when several texts share
    one (`ManifestParser`).
    """
    try:
        return _block_document(text)
    except _Fallback:
        pass
    allowance = (budget[0] if budget is not None
                 else MERGE_BUDGET_BASE + MERGE_BUDGET_PER_CHAR * len(text))
    try:
        built: tuple[list[tuple[int, Any]], int] | None = _build_documents(text, allowance)
    except NestingTooDeep:
        raise  # check_depth, first thing in the composing path, raises it at this event
    except Exception:  # noqa: BLE001 - whatever it was, PyYAML decides and words it
        built = None
    if built is None:  # (outside the handler: PyYAML's error is not chained to it)
        return _composed_documents(text, budget)
    documents, left = built
    if budget is not None:
        budget[0] = left
    return documents


def _composed_documents(text: str, budget: list[int] | None = None) -> list[tuple[int, Any]]:
    """`yaml_documents` by PyYAML's composer and constructor: the reference.

    Composing node by node (rather than yaml.safe_load_all) keeps each
    document's line number for the messages.  Nesting is bounded first
    (`check_depth`).
    """
    check_depth(text)
    loader = _ManifestLoader(text)
    if budget is not None:
        loader._merge_budget = budget[0]
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
        if budget is not None:
            budget[0] = loader._merge_budget
        loader.dispose()


# -- documents from libyaml's events --------------------------------------------------------
#
# PyYAML's composer builds a node per scalar, its resolver and constructor then
# visit each in Python: most of a parse.  `_build_documents` makes the same
# objects from the events in one loop (no recursion, so it bounds the nesting as
# it goes).  It builds what ordinary manifests hold: the implicit scalars
# (through the same resolvers and constructors as `_ManifestLoader`, cached by
# text), the core scalar tags, quoted and block scalars, mappings and sequences
# (untagged, `!` or !!map / !!seq), anchors and aliases, duplicate keys (the last
# wins) and merge keys in the one form every PyYAML merges alike.  Everything
# else raises _Fallback and the whole text goes through PyYAML
# (`_composed_documents`): any error (so that its message and line are PyYAML's),
# !!set, !!omap, !!pairs, an unknown tag, a collection or an unhashable alias as a
# key, a duplicate or recursive anchor, `<<` or `=` anywhere but as a plain key,
# a merge of a list of several mappings, or of a mapping with a key that is not a
# string or that repeats a merged key (PyYAML versions differ there: 6.0 lets the
# last of a merged list win, the venv's lets the first win but only over a key
# whose text is the very same str object, which CPython's string caching
# decides), and a merge over the budget (so that the mapping named is the one
# PyYAML names).

class _Fallback(Exception):
    """What `_build_documents` leaves to PyYAML's composer and constructor."""


_NOKEY: Any = object()  # a mapping waiting for its next key
_MERGE: Any = object()  # the plain key `<<`: its value is merged
_VALUE: Any = object()  # the plain scalar `=` (a str as a key, an error elsewhere)
_PENDING: Any = object()  # an anchored collection that is not complete yet
_MISS: Any = object()
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")
_SPECIAL_TAGS = {"tag:yaml.org,2002:merge": _MERGE, "tag:yaml.org,2002:value": _VALUE}
_SCALAR_CONSTRUCTORS = {
    tag: _ManifestLoader.yaml_constructors[tag]
    for tag in (f"tag:yaml.org,2002:{name}"
                for name in ("null", "bool", "int", "float", "binary", "timestamp"))
    if tag in _ManifestLoader.yaml_constructors
}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()  # scalar constructors keep no state
# The events alone (a loader would also set up a constructor and a resolver);
# without libyaml, PyYAML's Python parser, whose events are the same.
_EventParser: Any = getattr(getattr(yaml, "cyaml", None), "CParser", yaml.SafeLoader)
_RESOLVERS: dict[Any, list[tuple[str, Any]]] = _ManifestLoader.yaml_implicit_resolvers
_WILDCARD = _RESOLVERS.get(None, [])


class _AnyText:
    """Every first character, when some resolver is not keyed by one."""

    def __contains__(self, item: object) -> bool:
        return True


# A plain scalar whose first character no resolver is keyed by is a str as it is.
_RESOLVED_FIRST: Any = (_AnyText() if _WILDCARD
                        else frozenset(k for k in _RESOLVERS if k is not None))
# Plain scalars that some resolver may claim, by text, with what they make: the
# same few numbers, addresses and words recur in every document.  The objects
# are immutable; the cache is emptied when full.
_PLAIN: dict[str, Any] = {}
_PLAIN_MAX = 1 << 16


def _scalar(tag: str, value: str) -> Any:
    """What _ManifestLoader constructs of a scalar node with this (resolved) tag."""
    if tag == _STR_TAG:
        return value
    special = _SPECIAL_TAGS.get(tag)
    if special is not None:
        return special
    construct = _SCALAR_CONSTRUCTORS.get(tag)
    if construct is None:
        raise _Fallback(tag)
    try:
        return construct(_CONSTRUCTOR, yaml.ScalarNode(tag, value))
    except Exception as exc:  # PyYAML's error, or a ValueError it lets through
        raise _Fallback(tag) from exc


def _plain(value: str) -> Any:
    """A plain untagged scalar as the resolver and constructor make it (cached)."""
    for tag, regexp in _RESOLVERS.get(value[:1], []) + _WILDCARD:
        if regexp.match(value):
            result = _scalar(tag, value)
            break
    else:
        result = value
    if result is not _MERGE and result is not _VALUE:
        if len(_PLAIN) >= _PLAIN_MAX:
            _PLAIN.clear()
        _PLAIN[value] = result
    return result


def _merged(own: dict[Any, Any], pairs: int, merges: list[list[tuple[dict[Any, Any], int]]],
            budget: int) -> tuple[dict[Any, Any], int, int]:
    """A mapping with merge keys as SafeConstructor.flatten_mapping makes it: the
    merged pairs first, then its own.  `pairs` counts its own pairs (not the
    `<<` ones), `merges` holds per `<<` key the mappings it merges, each with its
    pair count as flattened.  Returns the mapping, its flattened pair count and
    what is left of the budget, which counts what flatten_mapping adds."""
    out: dict[Any, Any] = {}
    total = 0
    for group in merges:
        for source, count in group:
            out.update(source)
            total += count
    if len(out) != total or any(k.__class__ is not str for k in out):
        raise _Fallback("a merged key repeats or is no string")
    budget -= max(0, total - len(merges))
    if budget < 0:
        raise _Fallback("merge budget")
    out.update(own)
    return out, total + pairs, budget


# The kinds of collection being built.
_DOC, _MAP, _SEQ, _MERGE_SEQ = 0, 1, 2, 3


def _build_documents(text: str, budget: int) -> tuple[list[tuple[int, Any]], int]:
    """What `_composed_documents` returns, and the merge budget left; _Fallback
    (or PyYAML's parse error) where it leaves the text to PyYAML; NestingTooDeep
    at the collection that check_depth refuses."""
    parser = _EventParser(text)
    try:
        return _from_events(parser.get_event, budget)
    finally:
        parser.dispose()


def _from_events(get_event: Any, budget: int) -> tuple[list[tuple[int, Any]], int]:
    scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
    map_start, map_end = yaml.MappingStartEvent, yaml.MappingEndEvent
    seq_start, seq_end = yaml.SequenceStartEvent, yaml.SequenceEndEvent
    doc_start, stream_end = yaml.DocumentStartEvent, yaml.StreamEndEvent
    plain, resolved_first = _PLAIN, _RESOLVED_FIRST
    out: list[tuple[int, Any]] = []
    # The collection being built (its kind, the object, the key waiting for its
    # value, the pairs so far, the merges, its anchor), and those it is inside.
    kind, key, pairs, anchor = _DOC, _NOKEY, 0, None
    cur: Any = None
    merges: Any = None
    stack: list[tuple[Any, ...]] = []
    anchors: dict[str, Any] = {}  # this document's anchors: the object, or _PENDING
    flat: dict[str, int] = {}  # an anchored mapping's flattened pair count
    depth = line = count = 0
    v: Any = None
    while True:
        event = get_event()
        cls = event.__class__
        if cls is scalar_event:
            value = event.value
            tag = event.tag
            if tag is not None and tag != "!":
                v = _scalar(tag, value)
                if v is _MERGE or v is _VALUE:
                    raise _Fallback(tag)
            elif not event.implicit[0]:  # quoted, block, or `!` on a non-plain scalar
                v = value
            elif value[:1] not in resolved_first:
                v = value
            else:
                v = plain.get(value, _MISS)
                if v is _MISS:
                    v = _plain(value)
                    if v is _MERGE or v is _VALUE:
                        if kind != _MAP or key is not _NOKEY or event.anchor is not None:
                            raise _Fallback(value)
                        key = _MERGE if v is _MERGE else value
                        continue
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise _Fallback("duplicate anchor")
                anchors[event.anchor] = v
        elif cls is map_start or cls is seq_start:
            if (kind == _MAP and key is _NOKEY) or kind == _MERGE_SEQ and cls is seq_start:
                raise _Fallback("a collection as a key, or a list in a merged list")
            if event.tag not in (_MAP_TAGS if cls is map_start else _SEQ_TAGS):
                raise _Fallback(event.tag)
            depth += 1
            if depth > MAX_DEPTH:
                raise NestingTooDeep(event.start_mark.line + 1)
            if kind == _DOC:
                line = event.start_mark.line + 1
            stack.append((kind, cur, key, pairs, merges, anchor))
            anchor = event.anchor
            if anchor is not None:
                if anchor in anchors:
                    raise _Fallback("duplicate anchor")
                anchors[anchor] = _PENDING
            if cls is map_start:
                kind, cur, key, pairs, merges = _MAP, {}, _NOKEY, 0, None
            else:
                if kind == _MAP and key is _MERGE:
                    if anchor is not None:
                        raise _Fallback("an anchored list of merged mappings")
                    kind = _MERGE_SEQ
                else:
                    kind = _SEQ
                cur = []
            continue
        elif cls is map_end:
            v, count = cur, pairs
            if merges is not None:
                v, count, budget = _merged(cur, pairs, merges, budget)
            if anchor is not None:
                anchors[anchor] = v
                flat[anchor] = count
            kind, cur, key, pairs, merges, anchor = stack.pop()
            depth -= 1
        elif cls is seq_end:
            v = cur
            if kind == _MERGE_SEQ:
                if len(v) > 1:
                    raise _Fallback("a list of several merged mappings")
                kind, cur, key, pairs, merges, anchor = stack.pop()
                depth -= 1
                if merges is None:
                    merges = []
                merges.append(v)
                key = _NOKEY
                continue
            if anchor is not None:
                anchors[anchor] = v
            kind, cur, key, pairs, merges, anchor = stack.pop()
            depth -= 1
        elif cls is alias_event:
            v = anchors.get(event.anchor, _PENDING)
            if v is _PENDING:
                raise _Fallback("undefined or recursive alias")
            if kind == _MAP and key is _NOKEY and v.__class__ in (dict, list):
                raise _Fallback("an unhashable key")
            count = flat.get(event.anchor, -1)
        elif cls is doc_start:
            if anchors:
                anchors, flat = {}, {}
            line = 0
            continue
        elif cls is stream_end:
            return out, budget
        else:  # StreamStart, DocumentEnd
            continue
        # v is complete: put it where it goes.
        if kind == _MAP:
            if key is _NOKEY:
                key = v
            elif key is _MERGE:
                if cls is scalar_event or count < 0:
                    raise _Fallback("a merge of something else than a mapping")
                if merges is None:
                    merges = []
                merges.append([(v, count)])
                key = _NOKEY
            else:
                cur[key] = v
                pairs += 1
                key = _NOKEY
        elif kind == _SEQ:
            cur.append(v)
        elif kind == _MERGE_SEQ:
            if cls is scalar_event or count < 0:
                raise _Fallback("a merge of something else than a mapping")
            cur.append((v, count))
        else:
            out.append((line or event.start_mark.line + 1, v))


# -- plain block documents from their lines -------------------------------------------------
#
# Most manifests are written in one plain block style: `key: value` lines, `- `
# entries, nesting by indentation, unquoted words.  libyaml's events for them
# cost more than reading their lines: `_block_document` builds such a document
# from its lines, with the same scalars as `_from_events` (`_plain`).  Anything
# the lines alone do not tell for certain raises _Fallback and the text goes to
# libyaml: a character that quotes, flows, comments, tags, anchors, starts a
# block scalar, a complex key or a directive, or that libyaml refuses; a
# scalar that starts with an indicator or holds ": "; a line deeper or
# shallower than its place; a second document; a long key; `<<` and `=`.

_BLOCK_UNSAFE = re.compile("[\"'\\[\\]{}#&*!|>%@`?\\\\\t\r\x00-\x08\x0b-\x1f\x7f-\x9f"
                           "\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")
_BLOCK_DEPTH = 32  # deeper: libyaml's path, which bounds the nesting
_KEY_MAX = 1024  # libyaml refuses a longer implicit key
_BLOCK_MARKER = re.compile(r"\n(?:---|\.\.\.)")
_BLOCK_KEYS: dict[str, Any] = {}  # key text -> key: the same few keys recur
_Row = tuple[int, str, int]  # (indent, content, line number from 0)


def _block_document(text: str) -> list[tuple[int, Any]]:
    """`_from_events`'s documents for a text of one plain block mapping (or
    sequence), optionally after a `---` line; _Fallback for anything else."""
    start = 4 if text.startswith("---\n") else 0
    if _BLOCK_UNSAFE.search(text) is not None or _BLOCK_MARKER.search(text, start - 1) \
            or text.startswith(("---", "...")) and not start:
        raise _Fallback("not plain block style")
    trailing = " \n" in text or text[-1:] == " "
    if trailing or len(text) > _SHAPE_MAX_TEXT:
        return [_block_lines(text, start, trailing)]
    shape = _SLOT.sub(": ", text)
    template = _SHAPES.get(shape, _MISS)
    if template is _MISS:
        if shape not in _SHAPES_SEEN:  # a template pays from a shape's second document on
            if len(_SHAPES_SEEN) >= _SHAPES_MAX:
                _SHAPES_SEEN.clear()
            _SHAPES_SEEN.add(shape)
            return [_block_lines(text, start, False)]
        try:
            template = _template(text, start)
        except _Fallback:
            template = None
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[shape] = template
    if template is None:
        raise _Fallback("a shape the lines do not tell for certain")
    line, build = template
    # Every value is made a scalar, also one a later key of the same name
    # overrides: its _Fallback counts as on the line path.
    return [(line, build(list(map(_block_scalar, _SLOT.findall(text)))))]


def _block_lines(text: str, start: int, trailing: bool) -> tuple[int, Any]:
    """The document of a text `_block_document` found safe, read from its lines
    (their trailing blanks stripped first when it has any)."""
    lines = text[start:].split("\n")
    if trailing:
        lines = [line.rstrip(" ") for line in lines]
    rows = [(len(line) - len(content), content, number)
            for number, line in enumerate(lines, 1 if start else 0)
            if (content := line.lstrip(" "))]
    if not rows or rows[0][0]:
        raise _Fallback("an indented or empty document")
    value, end = _block_node(rows, 0, 0, 1)
    if end != len(rows):
        raise _Fallback("a line out of place")
    return rows[0][2] + 1, value


# Documents of one shape.  Most of a large file is objects written alike (the
# Services of one chart, say) that differ only in the values after "key: ": the
# slots.  Once a shape comes a second time, its text with a marker in each slot
# is read from its lines, and the structure compiled into a function that builds
# it again from the slots' scalars; every later document of the shape is built
# from its slots alone, at a third of the cost.  The shape (the text with the
# slots emptied) holds everything else the lines decide by: indentation, keys,
# "- " entries and their scalars, blank lines.  A slot's value cannot hold ": "
# (_block_scalar refuses it), so the first ": " of a line starts its slot, as
# `_block_mapping`'s partition; trailing blanks (which the lines strip first)
# and long texts take the line path.
_SLOT = re.compile(r": +([^\n]*)")
_SLOT_MARK = "\x00"  # never in a text that reaches here (_BLOCK_UNSAFE)
_SHAPES: dict[str, tuple[int, Any] | None] = {}  # shape -> (line, builder); None: _Fallback
_SHAPES_SEEN: set[str] = set()
_SHAPES_MAX = 1024
_SHAPE_MAX_TEXT = 4096


def _template(text: str, start: int) -> tuple[int, Any]:
    """(first line, builder of the document from its slots' scalars) for `text`'s shape."""
    slots = iter(range(len(text)))  # fewer slots than characters
    marked = _SLOT.sub(lambda _m: f": {_SLOT_MARK}{next(slots)}", text)
    line, value = _block_lines(marked, start, False)
    constants: list[Any] = []

    def constant(obj: Any) -> str:
        constants.append(obj)
        return f"c[{len(constants) - 1}]"

    def source(node: Any) -> str:
        # Only indexes and brackets: no text of the document goes into the code.
        if type(node) is dict:
            return "{" + ", ".join(f"{constant(k)}: {source(v)}" for k, v in node.items()) + "}"
        if type(node) is list:
            return "[" + ", ".join(map(source, node)) + "]"
        if type(node) is str and node.startswith(_SLOT_MARK):
            return f"v[{int(node[1:])}]"
        return constant(node)  # a scalar the shape holds: immutable, shared

    code = f"lambda v: {source(value)}"
    return line, eval(code, {"__builtins__": {}, "c": tuple(constants)})  # noqa: S307


def _block_scalar(text: str) -> Any:
    """A plain scalar that cannot mean more than its text says, as `_plain` makes it."""
    if text[0] in "-:," or text[-1] == ":" or ": " in text:
        raise _Fallback(text)
    if text[0] not in _RESOLVED_FIRST:
        return text
    value = _PLAIN.get(text, _MISS)
    if value is _MISS:
        value = _plain(text)
    if value is _MERGE or value is _VALUE:
        raise _Fallback(text)
    return value


def _block_node(rows: list[_Row], i: int, indent: int, depth: int) -> tuple[Any, int]:
    """The collection whose first line is rows[i], at `indent`; and the row after it."""
    if depth > _BLOCK_DEPTH:
        raise _Fallback("deep")
    content = rows[i][1]
    if content[0] == "-" and content[1:2] in ("", " "):
        return _block_sequence(rows, i, indent, depth)
    return _block_mapping(rows, i, indent, depth)


def _block_mapping(rows: list[_Row], i: int, indent: int,
                   depth: int) -> tuple[dict[Any, Any], int]:
    out: dict[Any, Any] = {}
    count = len(rows)
    keys = _BLOCK_KEYS
    while i < count:
        at, content, _ = rows[i]
        if at != indent:
            if at > indent:
                raise _Fallback("a line deeper than its place")
            break
        text, colon, value = content.partition(": ")
        if not colon:
            if content[-1] != ":":
                raise _Fallback("a line that is no key")
            text = content[:-1]
        key = keys.get(text, _MISS)
        if key is _MISS:
            if not text or text[-1] == " " or len(text) > _KEY_MAX:
                raise _Fallback("a key")
            key = _block_scalar(text)
            if len(keys) >= _PLAIN_MAX:
                keys.clear()
            keys[text] = key
        i += 1
        if value:
            out[key] = _block_scalar(value.lstrip(" "))
            continue
        if i < count:
            at, content, _ = rows[i]
            if at > indent or at == indent and content[0] == "-" and content[1:2] in ("", " "):
                out[key], i = _block_node(rows, i, at, depth + 1)
                continue
        out[key] = None
    return out, i


def _block_sequence(rows: list[_Row], i: int, indent: int,
                    depth: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    count = len(rows)
    while i < count:
        at, content, number = rows[i]
        if at != indent or content[0] != "-" or content[1:2] not in ("", " "):
            if at > indent:
                raise _Fallback("a line deeper than its place")
            break
        body = content[1:].lstrip(" ")
        if not body:
            i += 1
            if i < count and rows[i][0] > indent:
                value, i = _block_node(rows, i, rows[i][0], depth + 1)
            else:
                value = None
        elif body[0] == "-" and body[1:2] in ("", " "):
            raise _Fallback("a compact nested sequence")
        elif ": " in body or body[-1] == ":":
            # A mapping that starts on the entry's line, at the column of its first key.
            column = at + len(content) - len(body)
            rows[i] = (column, body, number)
            value, i = _block_mapping(rows, i, column, depth + 1)
        else:
            value = _block_scalar(body)
            i += 1
        out.append(value)
    return out, i

# A line that starts a new document (a marker, possibly with content after it) or
# ends one.  YAML forbids such a line inside any scalar, so cutting before it is
# sound; a directive (%YAML, %TAG) belongs to the document after it, so a text
# with directives is parsed whole.
_SEGMENT_START = re.compile(rb"^(?:---(?=[ \t\r\n]|$)|\.\.\.(?=[ \t\r\n]|$))", re.M)
# Line breaks the cutting does not follow (YAML's besides LF), as UTF-8: CR, NEL,
# LINE SEPARATOR, PARAGRAPH SEPARATOR.
_OTHER_BREAKS = (b"\r", "\x85".encode(), "\u2028".encode(), "\u2029".encode())

# What one document's text yielded: (line within it, "object" | "error" | "ignored",
# the object | the error | the ignored object's ref, the object's ref).
_Entry = tuple[int, str, Any, Any]


def _segments(data: bytes) -> list[bytes]:
    """`data` cut before each document marker line; b"".join(result) == data."""
    cuts = [m.start() for m in _SEGMENT_START.finditer(data)]
    bounds = [0, *[c for c in cuts if c > 0], len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# The two texts are compared a block at a time through views of one of them, so
# no block is copied: startswith / endswith compare at memcmp speed.
_BLOCK = 1 << 20


def _common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix of a and b."""
    n, lo, view = min(len(a), len(b)), 0, memoryview(a)
    while lo < n:
        hi = min(lo + _BLOCK, n)
        if not b.startswith(view[lo:hi], lo):
            break
        lo = hi
    else:
        return n
    while hi - lo > 1:  # a[:lo] == b[:lo], a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if b.startswith(view[lo:mid], lo):
            lo = mid
        else:
            hi = mid
    return lo


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """The length of the longest common suffix of a and b, at most `limit`."""
    la, lb, done, view = len(a), len(b), 0, memoryview(a)
    while done < limit:
        more = min(done + _BLOCK, limit)
        if not b.endswith(view[la - more:la - done], 0, lb - done):
            break
        done = more
    else:
        return limit
    while more - done > 1:  # the last `done` agree, the last `more` do not
        mid = (done + more) // 2
        if b.endswith(view[la - mid:la - done], 0, lb - done):
            done = mid
        else:
            more = mid
    return done


def _decoded(data: bytes, start: int, whole: bytes) -> str:
    """`data` (which starts at byte `start` of `whole`) as text; UnicodeDecodeError
    names the position in `whole`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnicodeDecodeError("utf-8", whole, start + exc.start, start + exc.end,
                                 exc.reason) from None


class ManifestParser:
    """`parse_manifests` of a file's bytes that remembers each document's bytes and
    what they yielded, so that re-reading a file where a few documents changed
    decodes and parses only those: the other objects are the very same objects as
    before (cheap to compare)."""

    def __init__(self) -> None:
        # The last content, and its documents in order: what each yielded and its
        # line breaks, and where each ends in the content (in bytes).
        self._content = b""
        self._segments: list[tuple[list[_Entry], int]] = []
        self._ends: list[int] = []
        # The last state's objects by ref, and each ClusterState field's refs and
        # objects in order, while no ref is defined twice (else None: assembled whole).
        self._objects: dict[_Key, ModelObject] | None = None
        self._kinds: dict[str, tuple[list[_Key], list[ModelObject]]] = {}
        self._noisy = False  # some document yielded an error or an ignored kind
        self._last: ClusterState | None = None  # the state the last parse returned

    def parse(self, content: bytes, origin: str = "<manifests>") -> ParsedFile:
        """As parse_manifests(content.decode()); UnicodeDecodeError (at its byte in
        `content`) for bytes that are not UTF-8, yaml.YAMLError as parse_manifests."""
        old, old_content, ends = self._segments, self._content, self._ends
        # The documents the new content starts and ends with as the last one did
        # are found from the two contents' common prefix and suffix (compared in
        # blocks, at memcmp speed), then checked at the one boundary each; only the
        # middle is cut and decoded.  A Python loop over every document, or
        # decoding the whole file, was most of a change's cost.
        same_head = _common_prefix(old_content, content)
        same_tail = _common_suffix(old_content, content,
                                   min(len(old_content), len(content)) - same_head)
        # The last content passed this check, so only what is new needs it.
        window = content[max(0, same_head - 1):len(content) - same_tail + 1]
        if (any(brk in window for brk in _OTHER_BREAKS) or content.startswith(b"%")
                or b"\n%" in window):
            self._forget()  # line breaks or directives the cutting does not follow
            return parse_manifests(_decoded(content, 0, content), origin)
        head = bisect_right(ends, same_head)
        while head and ends[head - 1] < len(content) and not _SEGMENT_START.match(
                content, ends[head - 1]):
            head -= 1
        pos = ends[head - 1] if head else 0
        shift = len(content) - len(old_content)
        # old[k] starts at ends[k - 1]; the tail kept is the first k from which
        # on all lie in the common suffix, at or after pos, with a document
        # starting where old[k] now does.
        suffix_start = len(old_content) - same_tail
        tail = max(head, bisect_left(ends, suffix_start) + 1 if suffix_start > 0 else 0)
        while tail < len(old):
            start = (ends[tail - 1] if tail else 0) + shift
            if start == pos or (start > pos and _SEGMENT_START.match(content, start)):
                break
            tail += 1
        end = (ends[tail - 1] if tail else 0) + shift if tail < len(old) else len(content)
        # The old documents of the middle by their bytes: one cut again unchanged is
        # taken back as it was (each once), and so neither goes nor comes.
        known: dict[bytes, list[int]] = {}
        for k in range(head, tail):
            known.setdefault(old_content[(ends[k - 1] if k else 0):ends[k]], []).append(k)
        budget = [MERGE_BUDGET_BASE + MERGE_BUDGET_PER_CHAR * len(content)]
        middle: list[tuple[list[_Entry], int]] = []
        fresh: list[tuple[list[_Entry], int]] = []
        taken_back: set[int] = set()
        lengths: list[int] = []
        at = pos
        for segment in _segments(content[pos:end]):
            again = known.get(segment)
            if again:
                k = again.pop()
                taken_back.add(k)
                hit = old[k]
            else:
                text = _decoded(segment, at, content)
                try:
                    hit = _entries(yaml_documents(text, budget)), segment.count(b"\n")
                except yaml.YAMLError:
                    # Whatever the cut did, the whole text decides (and its error
                    # names the right line).
                    self._forget()
                    return parse_manifests(_decoded(content, 0, content), origin)
                fresh.append(hit)
            middle.append(hit)
            lengths.append(len(segment))
            at += len(segment)
        # In place: a list rebuilt whole touches every document's entries, which at
        # many thousand documents costs more than the rest of a change.
        had = bool(old)
        removed = [old[k] for k in range(head, tail) if k not in taken_back]
        old[head:tail] = middle
        self._content = content
        # The head's ends stay, the middle's follow from pos, the tail's move by shift.
        ends[head:] = [*islice(accumulate(lengths, initial=pos), 1, None),
                       *(map(shift.__add__, ends[tail:]) if shift else ends[tail:])]
        if self._objects is not None and had:
            result = self._update(removed, fresh, origin)
            if result is not None:
                return result
        return self._assemble(origin)

    def _forget(self) -> None:
        self._segments, self._content, self._ends = [], b"", []

    def _parts(self) -> list[tuple[int, list[_Entry]]]:
        parts: list[tuple[int, list[_Entry]]] = []
        line = 0
        for entries, lines in self._segments:
            parts.append((line, entries))
            line += lines
        return parts

    def _assemble(self, origin: str) -> ParsedFile:
        parts = self._parts()
        result = _assemble(parts, origin)
        self._noisy = bool(result.errors or result.ignored)
        self._objects, self._kinds, self._last = None, {}, result.state
        if any(" defined again " in p for p in result.problems):
            return result
        objects = {_key(ref): obj for _, entries in parts
                   for _, what, obj, ref in entries if what == "object"}
        key_of = {id(obj): key for key, obj in objects.items()}
        for f in fields(ClusterState):
            value = getattr(result.state, f.name)
            if f.name in STATE_FIELDS.values() and value:
                self._kinds[f.name] = ([key_of[id(o)] for o in value], list(value))
        if len(objects) == sum(len(keys) for keys, _ in self._kinds.values()):
            self._objects = objects
        return result

    def _update(self, removed: list[tuple[list[_Entry], int]],
                added: list[tuple[list[_Entry], int]], origin: str) -> ParsedFile | None:
        """The new state from the last one by the documents that went and came; None
        when that cannot be done exactly (a ref defined twice, a kind not known)."""
        objects = self._objects
        assert objects is not None
        gone = [(_key(ref), obj) for entries, _ in removed
                for _, what, obj, ref in entries if what == "object"]
        new = [(_key(ref), obj) for entries, _ in added
               for _, what, obj, ref in entries if what == "object"]
        left = {key for key, _ in gone}
        seen: set[_Key] = set()
        for key, obj in new:
            if key in seen or (key in objects and key not in left) or state_field(obj) is None:
                return None
            seen.add(key)
        touched: set[str] = set()
        for key, obj in gone:
            del objects[key]
            name = STATE_FIELDS[type(obj)]
            keys, objs = self._kinds[name]
            i = bisect_left(keys, key)
            del keys[i], objs[i]
            touched.add(name)
        for key, obj in new:
            objects[key] = obj
            name = STATE_FIELDS[type(obj)]
            keys, objs = self._kinds.setdefault(name, ([], []))
            i = bisect_left(keys, key)
            keys.insert(i, key)
            objs.insert(i, obj)
            touched.add(name)
        last = self._last
        assert last is not None
        # A kind no document of the change touched keeps its tuple: consumers see
        # it unchanged by identity, without comparing.
        kinds: dict[str, Any] = {name: tuple(objs) if name in touched else getattr(last, name)
                                 for name, (_, objs) in self._kinds.items()}
        if "services" in touched:
            kinds["service_changes"] = ServiceChanges(
                last.services, kinds.get("services", ()),
                tuple(obj for _, obj in new if isinstance(obj, Service)),
                tuple(obj for _, obj in gone if isinstance(obj, Service)))
        result = ParsedFile(ClusterState(**kinds))
        self._last = result.state
        self._noisy = self._noisy or any(what != "object" for entries, _ in added
                                         for _, what, _, _ in entries)
        if self._noisy:
            for offset, entries in self._parts():
                for relative, what, value, _ in entries:
                    if what == "error":
                        result.errors.append(f"{origin}:{offset + relative}: {value}")
                    elif what == "ignored":
                        result.ignored.append(f"{origin}:{offset + relative}: {value}")
        result.problems = [f"{origin}: {exc}" for exc in result.state.problems()]
        return result


def _entries(documents: list[tuple[int, Any]]) -> list[_Entry]:
    out: list[_Entry] = []
    for line, doc in documents:
        for item in expand_document(doc):
            try:
                obj = parse_object(item)
            except ModelError as exc:
                out.append((line, "error", exc, None))
                continue
            if obj is None:
                out.append((line, "ignored", object_ref(item), None))
            else:
                out.append((line, "object", obj, ref_of(obj)))
    return out


# An object's ref as a plain tuple (kind, namespace, name): what ClusterState sorts by,
# hashed and compared in C.
_Key = tuple[str, str, str]


def _key(ref: ObjectRef) -> _Key:
    return (ref.kind, ref.namespace, ref.name)


def _state_of(objects: dict[ObjectRef, ModelObject]) -> ClusterState:
    """ClusterState.from_objects without recomputing every object's ref, and sorting
    by plain tuples (what it sorts by, compared in C)."""
    buckets: dict[str, list[tuple[tuple[str, str, str], ModelObject]]] = {}
    for ref, obj in objects.items():
        name = state_field(obj)
        if name is None:  # a kind this shortcut does not know
            return ClusterState.from_objects(objects.values())
        buckets.setdefault(name, []).append(((ref.kind, ref.namespace, ref.name), obj))
    kinds: dict[str, Any] = {name: tuple(o for _, o in sorted(items, key=_first))
                             for name, items in buckets.items()}
    return ClusterState(**kinds)


def _first(item: tuple[tuple[str, str, str], ModelObject]) -> tuple[str, str, str]:
    return item[0]


def _assemble(parts: list[tuple[int, list[_Entry]]], origin: str) -> ParsedFile:
    objects: dict[ObjectRef, ModelObject] = {}
    where: dict[ObjectRef, int] = {}
    duplicates: list[str] = []
    result = ParsedFile(ClusterState())
    for offset, entries in parts:
        for relative, what, value, ref in entries:
            if what == "object":
                if ref in objects:
                    line = offset + relative
                    duplicates.append(f"{origin}:{line}: {ref}: defined again (first at line "
                                      f"{where[ref]}); the later definition is used")
                objects[ref] = value
                where[ref] = offset + relative
            elif what == "error":
                result.errors.append(f"{origin}:{offset + relative}: {value}")
            else:
                result.ignored.append(f"{origin}:{offset + relative}: {value}")
    result.state = _state_of(objects)
    result.problems = duplicates + [f"{origin}: {exc}" for exc in result.state.problems()]
    return result


def parse_manifests(text: str, origin: str = "<manifests>") -> ParsedFile:
    """Every usable object in a multi-document YAML text.

    Raises yaml.YAMLError when the text is not YAML at all; bad objects are
    reported in `errors` and left out.
    """
    return _assemble([(0, _entries(yaml_documents(text)))], origin)


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


_ASCII_SPACE = re.compile(rb"[ \t\n\r\x0b\x0c]*")


def _blank(content: bytes) -> bool:
    """Whether `content` is nothing but whitespace (str.isspace's, which YAML reads as
    no document): ASCII whitespace is looked at in the bytes, the rest decoded only
    from the first other byte on when that byte starts a non-ASCII character."""
    end = _ASCII_SPACE.match(content).end()  # type: ignore[union-attr]
    if end == len(content):
        return True
    if content[end] < 0x80:
        return False
    return content[end:].decode("utf-8", "replace").isspace()


_COMPARE_BLOCK = 1 << 18


def _reads_as(f: FileIO, content: bytes) -> bool:
    """Whether what is left to read of `f` is exactly `content`."""
    block = memoryview(bytearray(min(_COMPARE_BLOCK, len(content) + 1)))
    at = 0
    while n := f.readinto(block):
        if not content.startswith(block[:n], at):
            return False
        at += n
    return at == len(content)


class FileSource(Source):
    """Follows a manifests file; see the module docstring for the rules."""

    def __init__(self, path: str, poll_interval: float = 0.05,
                 backstop_interval: float = 1.0) -> None:
        super().__init__()
        self.path = path
        self.poll_interval = poll_interval
        self.backstop_interval = backstop_interval
        self._wake_r, self._wake_w = -1, -1
        self._signature: tuple[int, int, int, int] | None = None
        self._racy = False
        self._racy_until = 0  # time.time_ns() from which the file read is no longer racy
        self._written = True  # an inotify event came since the last read
        # The bytes last read (the parser holds the same object: one copy of the
        # file), and bytes that were not UTF-8 (not reported twice).
        self._content: bytes | None = None
        self._undecodable: bytes | None = None
        self._missing_reported = False
        self._had_content = False  # a file with content was read: emptying it is no edit
        self._empty_reported = False
        self._poll_lock = threading.Lock()
        self._parser = ManifestParser()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self.poll()
        self._stop.clear()
        self._wake_r, self._wake_w = os.pipe()  # close() wakes the thread through it
        self._thread = threading.Thread(target=self._run, name=f"FileSource({self.path})",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._wake_r >= 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r, self._wake_w = -1, -1

    def _watch(self) -> inotify.Inotify | None:
        """An inotify instance on the file's directory, or None (then: polling)."""
        self._written = True  # whatever happened before the watch was not seen
        try:
            watcher = inotify.Inotify()
        except OSError as exc:
            log.info("%s: no inotify (%s); polling every %g s", self.path, exc,
                     self.poll_interval)
            return None
        try:
            watcher.add_watch(os.path.dirname(os.path.abspath(self.path)) or "/",
                              inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO
                              | inotify.IN_MOVED_FROM | inotify.IN_CREATE
                              | inotify.IN_DELETE | inotify.IN_ATTRIB
                              | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF)
        except OSError as exc:
            log.info("%s: cannot watch its directory (%s); polling every %g s", self.path,
                     exc, self.poll_interval)
            watcher.close()
            return None
        return watcher

    def _watched_directly(self) -> bool:
        """Whether a write to the file shows up as an event of the watch on the path's
        directory: not when the path is a symlink to a file elsewhere."""
        directory, name = os.path.split(os.path.abspath(self.path))
        return os.path.realpath(self.path) == os.path.join(os.path.realpath(directory), name)

    def _run(self) -> None:
        name = os.path.basename(self.path)
        watcher = self._watch()
        try:
            while not self._stop.is_set():
                if watcher is None:
                    timeout = self.poll_interval
                elif self._racy:
                    # A racy mtime needs one more look whatever inotify says: once
                    # it is old enough that a later write must change it.
                    timeout = max(0.0, (self._racy_until - time.time_ns()) / 1e9) + 0.001
                else:
                    timeout = self.backstop_interval
                ready = select.select([self._wake_r] + ([watcher.fd] if watcher else []),
                                      [], [], timeout)[0]
                if self._stop.is_set():
                    break
                if watcher is not None and watcher.fd in ready:
                    events = watcher.read()
                    # What another file of the directory writes (a log) is no write
                    # to this one; anything else may be.
                    if any(e.mask != inotify.IN_MODIFY or e.name == name for e in events):
                        self._written = True
                    if any(e.mask & (inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF
                                     | inotify.IN_IGNORED) for e in events):
                        watcher.close()  # the directory went: look for it again later
                        watcher = self._watch()
                    elif all(e.mask == inotify.IN_MODIFY for e in events):
                        continue  # a write under way: read once it is closed or renamed
                elif (watcher is not None and self._racy and not self._written
                      and self._watched_directly()):
                    # Nothing was written in the directory since the racy read, so
                    # what was read is what the file holds: no second read.
                    self._racy = False
                    continue
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                    log.exception("%s: unexpected error while reloading", self.path)
        finally:
            if watcher is not None:
                watcher.close()

    def poll(self) -> bool:
        """Look at the file once; True if a new state was published."""
        with self._poll_lock:
            content = self._read_if_changed()
            if content is None or content == self._content or content == self._undecodable:
                return False
            try:
                changed = self._load(content)
            except UnicodeDecodeError as exc:
                self._undecodable = content
                log.error("%s: not UTF-8 (byte %d); keeping the last good state",
                          self.path, exc.start)
                return False
            self._undecodable = None
            self._content = content
            return changed

    def _read_if_changed(self) -> bytes | None:
        """The file's bytes if it may have changed since the last look, else None."""
        try:
            # Taken before the read: a write after it stamps a later mtime, and
            # shows up as an inotify event.
            self._written = False
            read_at = time.time_ns()
            st = os.stat(self.path)
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if signature == self._signature and not self._racy:
                return None
            with open(self.path, "rb", buffering=0) as f:
                # A racy file looked at again is most often unchanged: compared a
                # block at a time, not read into a new copy of the file.
                if (signature == self._signature and self._content is not None
                        and _reads_as(f, self._content)):
                    content = None
                else:
                    f.seek(0)
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
        self._racy_until = st.st_mtime_ns + racy_window_ns(st.st_mtime_ns)
        self._racy = read_at < self._racy_until
        return content

    def _load(self, content: bytes) -> bool:
        """UnicodeDecodeError for content that is not UTF-8."""
        if _blank(content):
            return self._load_empty()
        try:
            parsed = self._parser.parse(content, self.path)
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
