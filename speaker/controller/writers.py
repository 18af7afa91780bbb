"""Where the controller's decisions go: back into the manifests file, or to the API.

Lab mode (`--manifests FILE`): the speakers follow the same file, so the
controller writes `status.loadBalancer.ingress` INTO it.  Rules:
- only Service documents whose status really changes are re-serialised; every
  other document is kept byte for byte (comments and all).  A rewritten Service
  document keeps its keys in order but loses its own comments;
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
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from foundation.files import write_atomically
from foundation.kube.model.meta import DEFAULT_NAMESPACE
from foundation.kube.sources.file import yaml_documents
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
    status = doc.get("status")
    status = status if isinstance(status, dict) else {}
    lb = status.get("loadBalancer")
    lb = lb if isinstance(lb, dict) else {}
    old = lb.get("ingress")
    new = [{"ip": ip} for ip in ips]
    if (old or []) == new:
        return changed
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
    bounds = [0, *[c for c in _cuts(text) if c > 0], len(text)]
    # Only a document that names one of the Services can change: with a few
    # changes, only the documents holding one of the names as a whole word are
    # looked at (found with str.find; the others are neither copied nor parsed).
    names = {name for _, name in wanted}
    if len(names) <= 64 and "\\" not in text:
        found: set[int] = set()
        for name in names:
            for at in _occurrences(text, name):
                found.add(bisect_right(bounds, at) - 1)
        candidates: Iterable[int] = sorted(found)
    else:
        candidates = range(len(bounds) - 1)
    out = []
    done = 0
    for k in candidates:
        a, b = bounds[k], bounds[k + 1]
        segment = text[a:b]
        if not segment or "Service" not in segment and "\\" not in segment:
            continue
        rewritten = _rewrite(segment, wanted)
        if rewritten is not None:
            out += [text[done:a], rewritten]
            done = b
    out.append(text[done:])
    return "".join(out)


def _rewrite(segment: str, wanted: Wanted) -> str | None:
    """One document with its Services' statuses set, or None if nothing changes."""
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
        for change in changes:
            shown = ", ".join(map(str, change.ingress)) or "none"
            log.info("Service %s: ingress %s", change.key, shown)
        return True

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        log.warning("Service %s/%s: AllocationFailed: %s", namespace, name, message)


class KubeWriter:
    """API mode: patch the status subresource, then MetalLB's pool annotation on the
    Service itself; failures also become Events."""

    annotates = True

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def write(self, changes: Sequence[StatusChange]) -> bool:
        from kubernetes.client.exceptions import ApiException

        ok = True
        for change in changes:
            try:
                self.client.patch_service_status(change.namespace, change.name, change.ingress)
                self.client.patch_service_annotations(change.namespace, change.name,
                                                      {POOL_ANNOTATION: change.pool})
            except ApiException as exc:
                if exc.status == 404:  # deleted meanwhile; the watch will say so
                    continue
                log.error("Service %s: status patch failed: HTTP %s %s", change.key,
                          exc.status, exc.reason)
                ok = False
                continue
            except Exception as exc:  # noqa: BLE001 - the API may be unreachable; retry later
                log.error("Service %s: status patch failed: %s", change.key, exc)
                ok = False
                continue
            shown = ", ".join(map(str, change.ingress)) or "none"
            log.info("Service %s: ingress %s", change.key, shown)
        return ok

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        log.warning("Service %s/%s: AllocationFailed: %s", namespace, name, message)
        try:
            self.client.create_event(namespace, name, "AllocationFailed", message, COMPONENT)
        except Exception as exc:  # noqa: BLE001 - an event is best effort
            log.info("Service %s/%s: could not record the event: %s", namespace, name, exc)
