"""Where the controller's decisions go: back into the manifests file, or to the API.

Lab mode (`--manifests FILE`): the speakers follow the same file, so the
controller writes `status.loadBalancer.ingress` INTO it.  Rules:
- only Service documents whose status really changes are rewritten; every
  other document is kept byte for byte (comments and all).  A Service document
  of the plain block style is edited as text: only its status block and the
  pool annotation's line change (see `_edit_text`).  Any other one is decoded
  and dumped again: it keeps its keys in order but loses its own comments;
- all the changes of one reconcile go into one write (a first assignment of N
  Services is one pass over the file, not N);
- the file is replaced atomically (temporary file in the same directory,
  fsync, rename), keeping its permission bits, so a reader never sees half a
  file; nothing is written when nothing changes;
- a Service inside a `kind: List` document is updated in place as well.
An edit made by hand in the instant between the controller's read and its
rename is lost (the controller re-reads right before writing to keep that
window small); the next reconcile writes the statuses again if needed.

API mode: a merge patch of each Service's status subresource, and one Warning
Event (reason AllocationFailed) per new allocation failure.  Both modes log one
line per failure.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from foundation.files import write_atomically
from foundation.kube.model.meta import DEFAULT_NAMESPACE
from foundation.kube.sources.file import _ManifestLoader, yaml_documents
from speaker.controller.reconcile import POOL_ANNOTATION, StatusChange

if TYPE_CHECKING:
    from foundation.kube.sources.kube import KubeClient

log = logging.getLogger(__name__)

COMPONENT = "skein-controller"


class StatusWriter(Protocol):
    # Whether `write` also sets MetalLB's pool annotation (StatusChange.pool).
    annotates: bool

    def write(self, changes: Sequence[StatusChange]) -> bool:
        """Apply the changes; False if some could not be (they are retried later)."""

    def report_failure(self, namespace: str, name: str, message: str) -> None: ...


# libyaml's emitter is many times faster (a first assignment rewrites every Service).
_FastSafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# A document separator at column 0 (possibly with content after it) or an end marker.
_SEPARATOR = re.compile(r"^(?:---(?=\s|$)|\.\.\.\s*$)", re.M)


def _cuts(text: str) -> list[int]:
    """Where the separator lines start (_SEPARATOR's matches), found by str.find."""
    out = []
    for marker in ("---", "..."):
        starts = [0] if text.startswith(marker) else []
        at = text.find("\n" + marker)
        while at >= 0:
            starts.append(at + 1)
            at = text.find("\n" + marker, at + 1)
        out += [at for at in starts if _SEPARATOR.match(text, at)]
    return sorted(out)


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _occurrences(text: str, name: str) -> list[int]:
    """Where `name` stands in `text` as a whole name (not inside a longer one)."""
    out = []
    at = text.find(name)
    while at >= 0:
        end = at + len(name)
        if ((at == 0 or text[at - 1] not in _NAME_CHARS)
                and (end == len(text) or text[end] not in _NAME_CHARS)):
            out.append(at)
        at = text.find(name, at + 1)
    return out


Wanted = dict[tuple[str, str], tuple[list[str], str | None]]


def _set_ingress(doc: Any, wanted: Wanted, item_kind: str | None = None) -> bool:
    """Update the Service(s) of one decoded document; True if anything changed."""
    if not isinstance(doc, dict):
        return False
    kind = doc.get("kind", item_kind)
    if isinstance(kind, str) and kind.endswith("List"):
        items = doc.get("items")
        changed = False
        for item in items if isinstance(items, list) else []:
            changed |= _set_ingress(item, wanted, kind[: -len("List")])
        return changed
    meta = doc.get("metadata")
    if kind != "Service" or not isinstance(meta, dict):
        return False
    key = (str(meta.get("namespace") or DEFAULT_NAMESPACE), str(meta.get("name")))
    if key not in wanted:
        return False
    ips, pool = wanted[key]
    changed = _set_pool_annotation(meta, pool)
    return _set_status(doc, ips) or changed


def _set_status(doc: dict[str, Any], ips: list[str]) -> bool:
    """Set status.loadBalancer.ingress of a decoded document; True if it changed."""
    status = doc.get("status")
    status = status if isinstance(status, dict) else {}
    lb = status.get("loadBalancer")
    lb = lb if isinstance(lb, dict) else {}
    old = lb.get("ingress")
    new = [{"ip": ip} for ip in ips]
    if (old or []) == new:
        return False
    if new:
        lb["ingress"] = new
    else:
        lb.pop("ingress", None)
    status["loadBalancer"] = lb
    doc["status"] = status
    return True


def _set_pool_annotation(meta: dict[str, Any], pool: str | None) -> bool:
    annotations = meta.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    if annotations.get(POOL_ANNOTATION) == pool:
        return False
    if pool is None:
        annotations.pop(POOL_ANNOTATION, None)
    else:
        annotations[POOL_ANNOTATION] = pool
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return True


def apply_statuses(text: str, changes: Sequence[StatusChange]) -> str:
    """`text` with the ingress of the changed Services set; other documents untouched."""
    wanted: Wanted = {(c.namespace, c.name): ([str(ip) for ip in c.ingress], c.pool)
                      for c in changes}
    # Only a document that names one of the Services can change: with a few
    # changes, only the documents holding one of the names as a whole word are
    # looked at (found with str.find, and their bounds by searching from there:
    # the others are neither cut, copied nor parsed).
    names = {name for _, name in wanted}
    if len(names) <= 64 and "\\" not in text:
        candidates: Iterable[tuple[int, int]] = sorted(
            {_document_around(text, at) for name in names for at in _occurrences(text, name)})
    else:
        bounds = [0, *[c for c in _cuts(text) if c > 0], len(text)]
        candidates = zip(bounds, bounds[1:], strict=False)
    out = []
    done = 0
    for a, b in candidates:
        segment = text[a:b]
        if not segment or "Service" not in segment and "\\" not in segment:
            continue
        rewritten = _rewrite(segment, wanted)
        if rewritten is not None:
            out += [text[done:a], rewritten]
            done = b
    out.append(text[done:])
    return "".join(out)


# -- editing a document's text in place -------------------------------------------
#
# Decoding and re-dumping each changed Service costs far more than the rest of an
# assignment (a first one writes every Service), and drops the document's
# comments.  A document of the plain block style that manifests are written in
# is edited as text instead: its top-level keys and metadata's children found
# by their indentation, the pool annotation's line and the status block
# replaced.  Anything this cannot read for certain (quotes, flow collections,
# anchors, tags, tabs, escapes, a name that is not a plain string...) is
# re-serialised as before, so the decoded result is the same either way.

_COMPLEX: Any = object()  # `_edit_text` cannot tell: re-serialise
# Characters after which the line structure no longer tells the nesting for certain,
# and keep chomping, which makes a block scalar's trailing blank lines its value's.
_UNSAFE = re.compile("[\"'\\[\\]{}\t\\\\&*!%@`\r\x85\u2028\u2029\ufeff]")
_KEEP = re.compile(r"[|>][0-9]?\+")
# No indicator first, no ": " or " #" inside, no ":" last (IPv6 addresses pass).
_PLAIN = re.compile(r"[A-Za-z0-9:][A-Za-z0-9_./:-]*(?<!:)\Z")
_COMMENT = re.compile(r"(?:\A| +)#.*\Z")
# What `_status_text` writes.
_STATUS = re.compile(r"status:\n  loadBalancer:(?: \{\}\n|\n    ingress:\n(?:    - ip: \S+\n)+)\Z")


def _unsafe(body: str) -> bool:
    """Whether `body` has something that `_edit_text` does not follow (an empty flow
    collection, "{}" or "[]", is just a value)."""
    if "{}" in body or "[]" in body:
        body = body.replace("{}", "").replace("[]", "")
    return bool(_UNSAFE.search(body) or ("+" in body and _KEEP.search(body)))


@lru_cache(maxsize=4096)
def _plain(value: str) -> bool:
    """Whether `value`, written without quotes, reads back as this very string."""
    if not _PLAIN.match(value):
        return False
    resolvers = _ManifestLoader.yaml_implicit_resolvers
    return not any(regexp.match(value) for _tag, regexp in
                   [*resolvers.get(value[0], ()), *resolvers.get(None, ())])


def _scalar(value: str) -> str:
    return value if _plain(value) else "'" + value.replace("'", "''") + "'"


def _status_text(ips: list[str]) -> str:
    if not ips:
        return "status:\n  loadBalancer: {}\n"
    return "status:\n  loadBalancer:\n    ingress:\n" + "".join(
        f"    - ip: {_scalar(ip)}\n" for ip in ips)


# A key the text edits read: plain, and nothing YAML would read otherwise.
_KEY_TEXT = r"[A-Za-z0-9_][A-Za-z0-9_./-]*"


# These match from the line break before a line (a literal to search for is
# much faster than "^" in MULTILINE mode, which is tried at every position).
@lru_cache(maxsize=64)
def _lines_at(indent: int) -> re.Pattern[str]:
    """Lines indented by exactly `indent` that are neither blank nor comments: a key
    (1) with its value (2), a sequence entry, or anything else (3)."""
    return re.compile(rf"\n {{{indent}}}(?:({_KEY_TEXT}):(?: +([^\n]*))?(?=\n)"
                      rf"|- [^\n]*|-(?=\n)|([^ \n#]))")


@lru_cache(maxsize=64)
def _lines_above(indent: int) -> re.Pattern[str]:
    """Lines indented by 1 to indent - 1 that are neither blank nor comments."""
    return re.compile(rf"\n {{1,{indent - 1}}}[^ \n#]")


_CONTENT = re.compile(r"\n( *)[^ \n#]")


class _Block:
    """One key of a block mapping, by offsets into the document's text (which starts
    with a line break; every line ends with one): its line [start, eol), its inline
    value (comment removed) and its content, which ends at `end`."""

    __slots__ = ("_end", "eol", "indent", "start", "stop", "text", "value")

    def __init__(self, text: str, start: int, eol: int, indent: int, value: str) -> None:
        self.text, self.start, self.eol, self.indent, self.value = text, start, eol, indent, value
        self.stop = len(text)  # where the next key (or the mapping) starts
        self._end = -1

    @property
    def end(self) -> int:
        """Past the last line before `stop` that is neither blank nor a comment at
        the key's own depth or less (a deeper "#" line may be a block scalar's)."""
        if self._end < 0:
            text, eol, stop = self.text, self.eol, self.stop
            self._end = eol
            while stop > eol:
                start = max(text.rfind("\n", eol, stop - 1), eol - 1) + 1
                line = text[start:stop - 1]
                content = line.lstrip(" ")
                if content and (content[0] != "#" or len(line) - len(content) > self.indent):
                    self._end = stop
                    break
                stop = start
        return self._end

    @property
    def single(self) -> str | None:
        """The value if it is a one-line plain string, else None."""
        return self.value if _plain(self.value) and self.end == self.eol else None


def _mapping(text: str, start: int, stop: int, indent: int) -> dict[str, _Block] | None:
    """The keys of the block mapping whose keys stand at `indent` in text[start:stop]
    (None if that is not certainly what it is).  A line at that depth may also be an
    entry of the key before's block sequence (compact style).  `text` starts with a
    line break, lines end with one."""
    if indent > 1 and _lines_above(indent).search(text, start - 1, stop):
        return None
    out: dict[str, _Block] = {}
    last: _Block | None = None
    for m in _lines_at(indent).finditer(text, start - 1, stop):
        key = m[1]
        if key is None:
            if m[3] is None and last is not None and not last.value:
                continue  # an entry of `last`'s block sequence
            return None
        if key in out:
            return None
        begin = m.start() + 1
        if last is not None:
            last.stop = begin
        value = m[2] or ""
        if "#" in value:
            value = _COMMENT.sub("", value)
        last = out[key] = _Block(text, begin, m.end() + 1, indent, value.rstrip(" "))
    if last is not None:
        last.stop = stop
    return out


def _children(text: str, block: _Block) -> tuple[dict[str, _Block], int] | None:
    """The keys of the block mapping that is `block`'s value ({} when it has none) and
    their indentation, else None."""
    if block.value:
        return None
    m = _CONTENT.search(text, block.eol - 1, block.end)
    if m is None:
        return {}, -1
    indent = len(m[1])
    if indent == 0:
        return None
    keys = _mapping(text, m.start() + 1, block.end, indent)
    return None if keys is None else (keys, indent)


# -- the commonest Service document, by a few regular expressions -------------------
#
# What a first assignment meets in every document: a Service in the plain block
# style with no comments, blank lines or trailing spaces, its metadata's keys two
# spaces in and without annotations, and no status.  `_quick_edit` recognises
# exactly that and edits it as `_edit_text`'s general way would; anything else
# is left to the general way (_SLOW).

_SLOW: Any = object()
# A top-level key with a one-line value, or with no value and indented or "-" lines.
_ENTRY = rf"{_KEY_TEXT}:(?: [^ \n][^\n]*\n|\n(?:[ -][^\n]*\n)+)"
_QUICK_SHAPE = re.compile(rf"(?:{_ENTRY})*?metadata:\n(?P<meta>  [^ \n][^\n]*\n(?:  [^\n]*\n)*)"
                          rf"(?:{_ENTRY})*\Z")
# Searched for in "\n" + body: a literal line break is found much faster than "^".
_TOP_KEY = re.compile(rf"\n({_KEY_TEXT}):")
_KIND_SERVICE = re.compile(r"\nkind: Service\n(?![ -])")
_KEY_VALUE = re.compile(rf"({_KEY_TEXT}):(?: +([^\n]*))?\Z")


def _quick_edit(header: str, body: str, wanted: Wanted) -> str | None:
    """`_edit_text` of the commonest Service document (see above), or _SLOW."""
    if "#" in body or " \n" in body or "\n\n" in body or body[-1:] != "\n":
        return _SLOW
    shape = _QUICK_SHAPE.match(body)
    if shape is None:
        return _SLOW
    lined = "\n" + body
    keys = _TOP_KEY.findall(lined)
    if len(set(keys)) != len(keys) or "status" in keys or _KIND_SERVICE.search(lined) is None:
        return _SLOW
    children: dict[str, str] = {}
    deeper: set[str] = set()  # keys with lines below them: not one-line values
    key = ""
    for line in shape["meta"][:-1].split("\n"):
        if line[2] == " ":
            deeper.add(key)
            continue
        pair = _KEY_VALUE.match(line, 2)
        if pair is None or pair[1] in children:
            return _SLOW
        key = pair[1]
        children[key] = (pair[2] or "").rstrip(" ")
    if "name" not in children or "annotations" in children or any(
            k in deeper or not _plain(children[k]) for k in ("name", "namespace")
            if k in children):
        return _SLOW  # the name and namespace must be one-line plain strings
    found = wanted.get((children.get("namespace", DEFAULT_NAMESPACE), children["name"]))
    if found is None:
        return None
    ips, pool = found
    if not ips and pool is None:
        return None
    end = shape.end("meta")
    out = [header, body[:end]]
    if pool is not None:
        out.append(f"  annotations:\n    {POOL_ANNOTATION}: {_scalar(pool)}\n")
    out.append(body[end:])
    if ips:
        out.append(_status_text(ips))
    return "".join(out)


def _edit_text(segment: str, wanted: Wanted) -> str | None:
    """`_rewrite` by editing the text, or _COMPLEX if the document is not one it reads
    for certain (then nothing is assumed of it)."""
    header, body = "", segment
    if segment.startswith("---"):
        header, newline, body = segment.partition("\n")
        if _COMMENT.sub("", header[3:]).strip() or not newline:
            return _COMPLEX
        header += "\n"
    elif segment.startswith("..."):
        return _COMPLEX
    if _unsafe(body):
        return _COMPLEX
    quick = _quick_edit(header, body, wanted)
    if quick is not _SLOW:
        return quick
    # A line break before the first line (searches match from one), and after the
    # last (the last document of a file may lack one).
    body = "\n" + body + ("" if body.endswith("\n") else "\n")
    top = _mapping(body, 1, len(body), 0)
    if top is None:
        return _COMPLEX
    kind = top.get("kind")
    if kind is None:
        return None
    if kind.value != "Service":
        return None if kind.single is not None and not kind.value.endswith("List") \
            else _COMPLEX
    if kind.end != kind.eol:
        return _COMPLEX
    meta = top.get("metadata")
    found = None if meta is None else _children(body, meta)
    if meta is None or found is None or not found[0]:
        return _COMPLEX
    children, indent = found
    name = children["name"].single if "name" in children else None
    namespace = children["namespace"].single if "namespace" in children \
        else DEFAULT_NAMESPACE
    if name is None or namespace is None:
        return _COMPLEX
    if (namespace, name) not in wanted:
        return None
    ips, pool = wanted[namespace, name]
    edits: list[tuple[int, int, str]] = []  # body[a:b] = text
    # The pool annotation.
    pad = " " * indent
    annotations = children.get("annotations")
    if annotations is None:
        if pool is not None:
            edits.append((meta.end, meta.end, f"{pad}annotations:\n"
                                              f"{pad}  {POOL_ANNOTATION}: {_scalar(pool)}\n"))
    else:
        below = _children(body, annotations)
        if below is None:
            return _COMPLEX
        entries, deeper = below
        line = f"{' ' * deeper if entries else pad + '  '}{POOL_ANNOTATION}: "
        held = entries.get(POOL_ANNOTATION)
        if held is None:
            if pool is not None:
                edits.append((annotations.end, annotations.end, f"{line}{_scalar(pool)}\n"))
        else:
            value = held.single
            if value is None:
                return _COMPLEX
            if pool is None:
                edits.append((annotations.start, annotations.end, "") if len(entries) == 1
                             else (held.start, held.end, ""))
            elif value != pool:
                edits.append((held.start, held.end, f"{line}{_scalar(pool)}\n"))
    # The status.
    status = top.get("status")
    if status is None:
        if ips:
            end = next(reversed(top.values())).end  # the last key's (keys keep their order)
            edits.append((end, end, _status_text(ips)))
    else:
        text = body[status.start:status.end]
        if _STATUS.match(text):
            if text != _status_text(ips):
                edits.append((status.start, status.end, _status_text(ips)))
        else:
            try:
                docs = yaml_documents(text)
            except yaml.YAMLError:
                return _COMPLEX
            if len(docs) != 1 or not isinstance(docs[0][1], dict):
                return _COMPLEX
            doc = docs[0][1]
            if _set_status(doc, ips):
                edits.append((status.start, status.end, yaml.dump(
                    doc, Dumper=_FastSafeDumper, sort_keys=False, default_flow_style=False)))
    if not edits:
        return None
    out, done = [header], 1
    edits.sort()
    for a, b, new in edits:
        out += [body[done:a], new]
        done = b
    out.append(body[done:])
    return "".join(out)


def _document_around(text: str, at: int) -> tuple[int, int]:
    """The bounds of the document holding position `at`: the bounds `apply_statuses`
    cuts at (0, the separators of `_cuts` after 0, the end) on either side of it.
    Each marker is searched for only as far as the nearest separator found so far,
    so that a marker the file does not use costs no search through all of it."""
    start, end = 0, len(text)
    for marker in ("\n---", "\n..."):
        # The last separator line starting at or before `at`.
        stop = at + len(marker) - 1
        while (q := text.rfind(marker, start, stop)) >= 0:
            if _SEPARATOR.match(text, q + 1):
                start = q + 1
                break
            stop = q + len(marker) - 1
        # The first one starting after it.
        q = text.find(marker, at, end)
        while q >= 0:
            if _SEPARATOR.match(text, q + 1):
                end = q + 1
                break
            q = text.find(marker, q + 1, end)
    return start, end


def _rewrite(segment: str, wanted: Wanted) -> str | None:
    """One document with its Services' statuses set, or None if nothing changes."""
    edited = _edit_text(segment, wanted)
    if edited is not _COMPLEX:
        return edited
    return _reserialise(segment, wanted)


def _reserialise(segment: str, wanted: Wanted) -> str | None:
    """`_rewrite` by decoding the document and dumping it whole (its comments go)."""
    header, body = "", segment
    if segment.startswith("---"):
        header, _, body = segment.partition("\n")
        header += "\n"
    try:
        docs = yaml_documents(body if header.strip() == "---" else segment)
    except yaml.YAMLError:
        return None
    if len(docs) != 1 or not _set_ingress(docs[0][1], wanted):
        return None
    dumped = yaml.dump(docs[0][1], Dumper=_FastSafeDumper, sort_keys=False,
                       default_flow_style=False)
    return ("---\n" if header else "") + dumped


class ManifestsWriter:
    """Lab mode: statuses go into the manifests file the speakers follow."""

    annotates = True

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, changes: Sequence[StatusChange]) -> bool:
        if not changes:
            return True
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            new = apply_statuses(text, changes)
            if new != text:
                write_atomically(self.path, new)
        except OSError as exc:
            log.error("%s: cannot write statuses: %s", self.path, exc)
            return False
        _log_written(changes)
        return True

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        log.warning("Service %s/%s: AllocationFailed: %s", namespace, name, message)


# More status changes than this at once (a first assignment, a pool change) are
# logged as one line, each at debug level: thousands of lines say no more.
LOG_EACH = 20


def _log_written(changes: Sequence[StatusChange]) -> None:
    each = logging.INFO if len(changes) <= LOG_EACH else logging.DEBUG
    if len(changes) > LOG_EACH:
        log.info("%d Services: ingress written (%d with an address)", len(changes),
                 sum(1 for c in changes if c.ingress))
    if log.isEnabledFor(each):
        for change in changes:
            shown = ", ".join(map(str, change.ingress)) or "none"
            log.log(each, "Service %s: ingress %s", change.key, shown)


class KubeWriter:
    """API mode: patch the status subresource, then MetalLB's pool annotation on the
    Service itself; failures also become Events.

    A batch is written WRITERS Services at a time (each Service's two requests in
    order): one at a time, the API server's latency under load (50-150 ms a
    request in the kube lab) made the 10,000 of a bulk take a quarter of an hour."""

    annotates = True
    WRITERS = 8  # within the client's connection pool (5 per CPU, 10 on 2 cores)

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._pool: ThreadPoolExecutor | None = None

    def write(self, changes: Sequence[StatusChange]) -> bool:
        if len(changes) <= 1:
            return all([self._write_one(c) for c in changes])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.WRITERS, thread_name_prefix="KubeWriter")
        return all(list(self._pool.map(self._write_one, changes)))

    def _write_one(self, change: StatusChange) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.client.patch_service_status(change.namespace, change.name, change.ingress)
            self.client.patch_service_annotations(change.namespace, change.name,
                                                  {POOL_ANNOTATION: change.pool})
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile; the watch will say so
                return True
            log.error("Service %s: status patch failed: HTTP %s %s", change.key,
                      exc.status, exc.reason)
            return False
        except Exception as exc:  # noqa: BLE001 - the API may be unreachable; retry later
            log.error("Service %s: status patch failed: %s", change.key, exc)
            return False
        shown = ", ".join(map(str, change.ingress)) or "none"
        log.info("Service %s: ingress %s", change.key, shown)
        return True

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        log.warning("Service %s/%s: AllocationFailed: %s", namespace, name, message)
        try:
            self.client.create_event(namespace, name, "AllocationFailed", message, COMPONENT)
        except Exception as exc:  # noqa: BLE001 - an event is best effort
            log.info("Service %s/%s: could not record the event: %s", namespace, name, exc)
