"""metadata: the name, namespace, labels and annotations every object carries.

A parser starts with `open_object`, which validates metadata first so that every
later error can name the object (`Service default/web: ...`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.kube.model.errors import ModelError, ObjectRef
from foundation.kube.model.fields import (
    Cursor,
    Irregular,
    quick_mapping,
    quick_string_map,
    shared,
    show,
)

# Objects in a manifests file without a namespace land where `kubectl apply`
# would put them with no context set.
DEFAULT_NAMESPACE = "default"

# RFC 1123 subdomain: what the API server accepts for most object names.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_name = _NAME.fullmatch


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def open_object(doc: Any, kind: str, namespaced: bool) -> tuple[Cursor, ObjectMeta]:
    """A cursor on the whole object (errors name it) and its parsed metadata."""
    if not isinstance(doc, dict):
        raise ModelError(ObjectRef(kind, "", "?"), "", f"expected a mapping, got {show(doc)}")
    meta = Cursor(ObjectRef(kind, "", "?"), doc).at("metadata")
    name_cur = meta.at("name")
    name = name_cur.string()
    namespace = ""
    if namespaced:
        namespace = meta.at("namespace").string(DEFAULT_NAMESPACE)
    ref = ObjectRef(kind, namespace, name)
    if len(name) > 253 or not _NAME.fullmatch(name):
        raise ModelError(ref, "metadata.name",
                         f"expected a lowercase DNS name, got {show(name)}")
    obj = Cursor(ref, doc)
    labels = obj.at("metadata").at("labels").string_map()
    annotations = obj.at("metadata").at("annotations").string_map()
    return obj, ObjectMeta(name, namespace, labels, annotations)


def quick_meta(doc: Any, namespaced: bool) -> ObjectMeta:
    """open_object's metadata on the quick path (see fields.Irregular)."""
    if type(doc) is not dict:
        raise Irregular
    meta = quick_mapping(doc.get("metadata"))
    name = meta.get("name")
    if type(name) is not str or len(name) > 253 or not _name(name):
        raise Irregular
    namespace = ""
    if namespaced:
        written = meta.get("namespace")
        if written is None or written == "":
            namespace = DEFAULT_NAMESPACE
        elif type(written) is str:
            namespace = shared(written)
        else:
            raise Irregular
    return ObjectMeta(name, namespace, quick_string_map(meta.get("labels")),
                      quick_string_map(meta.get("annotations")))


@dataclass(frozen=True, slots=True)
class Namespace:
    """Only for its labels: MetalLB pools can select services by namespace labels."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


def parse_namespace(doc: Any) -> Namespace:
    try:
        return _quick_namespace(doc)
    except Irregular:
        _, meta = open_object(doc, "Namespace", namespaced=False)
        return Namespace(meta.name, meta.labels)


def _quick_namespace(doc: Any) -> Namespace:
    meta = quick_meta(doc, namespaced=False)
    return Namespace(meta.name, meta.labels)
