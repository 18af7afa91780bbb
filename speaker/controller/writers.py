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
from collections.abc import Sequence
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


# A document separator at column 0 (possibly with content after it) or an end marker.
_SEPARATOR = re.compile(r"^(?:---(?=\s|$)|\.\.\.\s*$)", re.M)


def _segments(text: str) -> list[str]:
    """`text` cut before each separator line; "".join(result) == text."""
    cuts = [m.start() for m in _SEPARATOR.finditer(text)]
    bounds = [0, *[c for c in cuts if c > 0], len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


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
    # Only a document that names one of the Services can change: the others are
    # not parsed (a few changes in a file of thousands of Services cost a scan).
    names = {name for _, name in wanted}
    few = len(names) <= 64
    out = []
    for segment in _segments(text):
        if "\\" not in segment and ("Service" not in segment
                                    or few and not any(n in segment for n in names)):
            out.append(segment)
            continue
        header, body = "", segment
        if segment.startswith("---"):
            header, _, body = segment.partition("\n")
            header += "\n"
        try:
            docs = yaml_documents(body if header.strip() == "---" else segment)
        except yaml.YAMLError:
            out.append(segment)
            continue
        if len(docs) != 1 or not _set_ingress(docs[0][1], wanted):
            out.append(segment)
            continue
        dumped = yaml.safe_dump(docs[0][1], sort_keys=False, default_flow_style=False)
        out.append(("---\n" if header else "") + dumped)
    return "".join(out)


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
    """API mode: patch the status subresource; failures also become Events.  The pool
    annotation is not written here yet (a patch of the Service object itself, which
    the RBAC and the tests' API server do not allow so far)."""

    annotates = False

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def write(self, changes: Sequence[StatusChange]) -> bool:
        from kubernetes.client.exceptions import ApiException

        ok = True
        for change in changes:
            try:
                self.client.patch_service_status(change.namespace, change.name, change.ingress)
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
