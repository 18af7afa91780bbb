"""Statuses set by editing a Service document's text (`writers._edit_text`): the
document decodes exactly as the decode-and-dump way (`_reserialise`) would make
it, keeps its comments and formatting outside the lines it changes, and anything
the text edit cannot read for certain is left to the decode-and-dump way."""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation.kube.sources.file import parse_manifests, yaml_documents
from speaker.controller import writers
from speaker.controller.reconcile import POOL_ANNOTATION, StatusChange
from speaker.controller.writers import (
    _COMPLEX,
    _cuts,
    _document_around,
    _edit_text,
    _reserialise,
    apply_statuses,
)

Wanted = dict[tuple[str, str], tuple[list[str], str | None]]


def decoded(text: str) -> list[Any]:
    return [doc for _, doc in yaml_documents(text)]


def same_as_reserialised(segment: str, wanted: Wanted) -> str | None:
    """The text edit of `segment`, checked against the decode-and-dump result."""
    edited = _edit_text(segment, wanted)
    assert edited is not _COMPLEX, segment
    slow = _reserialise(segment, wanted)
    if slow is None:
        assert edited is None, (segment, edited)
        return None
    assert edited is not None, segment
    assert decoded(edited) == decoded(slow), (segment, edited, slow)
    # Keys keep their order too (new ones come last, as a dump puts them).
    assert list(decoded(edited)[0]) == list(decoded(slow)[0])
    assert list(decoded(edited)[0]["metadata"]) == list(decoded(slow)[0]["metadata"])
    return edited


# -- documents of the plain block style, built from optional parts ---------------------

ANNOTATIONS = st.sampled_from([
    None,                                        # no annotations key
    [],                                          # "annotations:" with nothing (null)
    ["a.io/x: one"],
    [f"{POOL_ANNOTATION}: lab"],
    [f"{POOL_ANNOTATION}: old", "a.io/x: one"],
    ["a.io/x: one", f"{POOL_ANNOTATION}: lab  # set by the controller"],
    ["note: |", "  a literal", "  # still part of the literal", "a.io/y: two"],
    ["note: >", "  folded", "", "  text"],
])
STATUS = st.sampled_from([
    None,
    "status:\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.1\n",
    "status:\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.1\n    - ip: fd00::1\n",
    "status:\n  loadBalancer:\n    ingress:\n      - ip: 10.0.0.2\n",
    "status:\n  conditions:\n  - type: Ready\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.1\n",
    "status:\n",
    "status:\n  # nothing yet\n  loadBalancer:\n",
])


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, str, str]:
    """(document text, namespace, name)."""
    indent = " " * draw(st.sampled_from([2, 4]))
    name = draw(st.sampled_from(["web", "svc-1", "a.b"]))
    namespace = draw(st.sampled_from([None, "default", "infra"]))
    meta = [f"{indent}name: {name}"]
    if namespace is not None:
        meta.append(f"{indent}namespace: {namespace}")
    if draw(st.booleans()):
        meta.insert(draw(st.integers(0, len(meta))), f"{indent}labels:\n{indent}{indent}app: x")
    annotations = draw(ANNOTATIONS)
    if annotations is not None:
        lines = [f"{indent}{indent}{line}" if line else "" for line in annotations]
        meta.insert(draw(st.integers(0, len(meta))), "\n".join([f"{indent}annotations:", *lines]))
    parts = [
        "apiVersion: v1",
        "kind: Service  # a comment after a value",
        "metadata:\n" + "\n".join(meta),
        f"spec:\n{indent}type: LoadBalancer\n{indent}ports:\n{indent}- port: 80\n"
        f"{indent}  protocol: TCP",
    ]
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), "# a comment line between keys")
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))),
                     "ports:\n- port: 80\n  name: http")  # a compact sequence at column 0
    status = draw(STATUS)
    if status is not None:
        parts.insert(draw(st.integers(0, len(parts))), status.rstrip("\n"))
    header = draw(st.sampled_from(["", "---\n", "--- # a commented separator\n"]))
    end = draw(st.sampled_from(["\n", "\n# trailing comment\n", "\n\n", ""]))
    return header + "\n".join(parts) + end, namespace or "default", name


wanted_ips = st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"]),
                      max_size=2, unique=True)


@settings(max_examples=400, deadline=None)
@given(documents(), wanted_ips, st.sampled_from([None, "lab", "other"]), st.booleans())
def test_text_edit_decodes_as_the_reserialised_document(
        doc: tuple[str, str, str], ips: list[str], pool: str | None, ours: bool) -> None:
    text, namespace, name = doc
    key = (namespace, name) if ours else (namespace, "someone-else")
    edited = same_as_reserialised(text, {key: (ips, pool)})
    if not ours:
        assert edited is None
    if edited is not None:
        # Applying the same statuses again changes nothing.
        assert _edit_text(edited, {key: (ips, pool)}) is None


def test_comments_and_layout_outside_the_changed_lines_are_kept() -> None:
    text = ("---\n# owned by team x\napiVersion: v1\nkind: Service\nmetadata:\n"
            "  name: web   # the public one\n  annotations:\n    a.io/x: one\n"
            "spec:\n  type: LoadBalancer\n  ports:\n  - port: 80     # http\n")
    out = apply_statuses(text, [StatusChange(
        "default", "web", (ipaddress.ip_address("10.0.0.5"),), "lab")])
    assert out == (
        "---\n# owned by team x\napiVersion: v1\nkind: Service\nmetadata:\n"
        "  name: web   # the public one\n  annotations:\n    a.io/x: one\n"
        f"    {POOL_ANNOTATION}: lab\n"
        "spec:\n  type: LoadBalancer\n  ports:\n  - port: 80     # http\n"
        "status:\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.5\n")
    # Withdrawn: the annotation line and the ingress go, the rest stays as it was.
    back = apply_statuses(out, [StatusChange("default", "web", ())])
    assert back == text + "status:\n  loadBalancer: {}\n"


def test_a_literal_block_ending_in_a_hash_line_keeps_it() -> None:
    text = ("kind: Service\nmetadata:\n  name: web\n  annotations:\n    note: |\n"
            "      first\n      # second, part of the literal\n")
    out = same_as_reserialised(text, {("default", "web"): (["10.0.0.1"], "lab")})
    assert out is not None
    assert decoded(out)[0]["metadata"]["annotations"]["note"] == (
        "first\n# second, part of the literal\n")


def test_what_the_text_edit_cannot_read_is_reserialised() -> None:
    wanted: Wanted = {("default", "web"): (["10.0.0.1"], "lab"),
                      ("default", "123"): (["10.0.0.2"], "lab")}
    for text in [
        "kind: Service\nmetadata: {name: web}\n",                  # flow style
        "kind: Service\nmetadata:\n  name: 'web'\n",                # quotes
        "kind: Service\nmetadata:\n  name: &n web\n",               # an anchor
        "kind: Service\nmetadata:\n  name:\tweb\n",                 # a tab
        "kind: Service\nmetadata:\n  name: 123\n",                  # not a string
        "kind: Service\nmetadata:\n  name: web\n  name: web\n",     # a key twice
        "kind: Service\nmetadata:\n  name: web\n    more\n",        # a multi-line name
        "kind: Service\nmetadata:\n- name: web\n",                  # not a mapping
        "kind: ServiceList\nitems:\n- metadata:\n    name: web\n",  # a list
        "kind: Service\nmetadata:\n  name: web\n  annotations:\n    x: |+\n      kept\n\n",
        "kind: Service\nmetadata:\n  name: !!str web\n",                # a tag
        "kind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 80},\n{port: 81}]\n",
        "kind: Service\nmetadata:\n  name: web\nstatus:\n  loadBalancer:\n    ingress: x: y\n",
    ]:
        assert _edit_text(text, wanted) is _COMPLEX, text
        # and apply_statuses still gives what decoding and dumping gives.
        try:
            slow = _reserialise(text, wanted)
        except yaml.YAMLError:
            continue
        changes = [StatusChange(ns, name, tuple(map(ipaddress.ip_address, ips)), pool)
                   for (ns, name), (ips, pool) in wanted.items()]
        assert apply_statuses(text, changes) == (slow or text)


def test_other_kinds_and_other_services_are_not_touched() -> None:
    wanted: Wanted = {("default", "web"): (["10.0.0.1"], "lab")}
    assert _edit_text("kind: ConfigMap\nmetadata:\n  name: web\n", wanted) is None
    assert _edit_text("apiVersion: v1\nmetadata:\n  name: web\n", wanted) is None
    assert _edit_text("kind: Service\nmetadata:\n  name: db\n", wanted) is None
    assert _edit_text("kind: Service\nmetadata:\n  name: web\n  namespace: x\n",
                      wanted) is None


def test_every_service_of_a_large_file_in_one_pass() -> None:
    docs = [f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n"
            f"  namespace: default\nspec:\n  type: LoadBalancer  # as written\n"
            for i in range(300)]
    text = "".join(docs)
    changes = [StatusChange("default", f"s{i}", (ipaddress.ip_address(f"10.0.1.{i % 250}"),),
                            "lab") for i in range(300)]
    out = apply_statuses(text, changes)
    assert out.count("# as written") == 300
    state = parse_manifests(out).state
    assert {s.key: str(s.ingress_ips[0]) for s in state.services} == {
        f"default/s{i}": f"10.0.1.{i % 250}" for i in range(300)}
    assert apply_statuses(out, changes) == out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["---", "--- x", "----", "...", "... ", "...x", " ---",
                                 "a: b", "- c", "", "name: web", "web2"]), min_size=1,
                max_size=12),
       st.booleans(), st.data())
def test_the_document_around_a_position_is_the_one_cut_at(
        lines: list[str], end: bool, data: st.DataObject) -> None:
    text = "\n".join(lines) + ("\n" if end else "")
    if not text:
        return
    at = data.draw(st.integers(0, len(text) - 1))
    bounds = [0, *[c for c in _cuts(text) if c > 0], len(text)]
    k = bisect_right(bounds, at) - 1
    assert _document_around(text, at) == (bounds[k], bounds[k + 1])


# -- the commonest document, read by `_quick_edit` ----------------------------------------

@st.composite
def plain_documents(draw: st.DrawFn) -> str:
    """Service documents of the shape `_quick_edit` reads, and near misses (each
    drawn now and then): other indentations, keys in other orders, a key twice,
    annotations, a status, deeper lines, blank lines, trailing spaces, a name that
    is no plain string, a character put in anywhere."""
    def rarely(common: Any, *others: Any) -> Any:
        return draw(st.sampled_from([common] * 3 * len(others) + list(others)))

    pad = rarely("  ", "   ", "    ")
    meta = [f"{pad}name: {rarely('web', 'svc-1', '123', 'a b', 'x:')}"]
    if draw(st.booleans()):
        meta.append(f"{pad}namespace: {rarely('default', 'infra', 'yes')}")
    extra = rarely(None, "labels:\n{pad}  app: x", "labels:\n{pad}{pad}app: x",
                   "annotations:\n{pad}  a.io/x: one", "uid: abc", "name: again",
                   "finalizers:\n{pad}- a", "x", "{pad}deeper: line")
    if extra is not None:
        meta.insert(draw(st.integers(0, len(meta))), pad + extra.format(pad=pad))
    kind = rarely("kind: Service", "kind: ConfigMap", "kind:  Service", "kind: Service\n  x: 1",
                  "kind: ServiceList")
    parts = draw(st.permutations([
        "apiVersion: v1", kind, "metadata:\n" + "\n".join(meta),
        "spec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n    protocol: TCP"]))
    more = rarely(None, "status:\n  loadBalancer: {}",
                  "status:\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.9", "kind: Service",
                  "spec: x", "ports:\n- 80", "x:", "- stray", "metadata:\n  name: web")
    if more is not None:
        parts.insert(draw(st.integers(0, len(parts))), more)
    text = "\n".join(parts) + rarely("\n", "", "\n\n", " \n")
    if rarely(False, True):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([" ", "\n", "-", ":", "#", "\n\n"])) + text[at:]
    return draw(st.sampled_from(["", "---\n"])) + text


def general_edit(segment: str, wanted: Wanted, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        patch.setattr(writers, "_quick_edit", lambda *_: writers._SLOW)
        return _edit_text(segment, wanted)


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plain_documents(), wanted_ips, st.sampled_from([None, "lab"]),
       st.sampled_from(["default", "infra", "yes"]), st.sampled_from(["web", "svc-1", "x"]))
def test_the_quick_edit_is_the_general_edit(
        monkeypatch: pytest.MonkeyPatch, segment: str, ips: list[str], pool: str | None,
        namespace: str, name: str) -> None:
    wanted: Wanted = {(namespace, name): (ips, pool)}
    expected = general_edit(segment, wanted, monkeypatch)
    assert _edit_text(segment, wanted) == expected, segment
    if expected is _COMPLEX or expected is None:
        return
    try:
        decoded(segment)
    except yaml.YAMLError:
        return  # not YAML: neither way reads it the same as a decoder
    assert same_as_reserialised(segment, wanted) == expected


def test_the_quick_edit_reads_the_commonest_documents() -> None:
    """It is taken for what a first assignment meets."""
    wanted: Wanted = {("default", "web"): (["10.0.0.1"], "lab")}
    body = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels:\n    app: x\n"
            "spec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n")
    edited = writers._quick_edit("---\n", body, wanted)
    assert edited == ("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
                      "  labels:\n    app: x\n  annotations:\n"
                      f"    {POOL_ANNOTATION}: lab\n"
                      "spec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n"
                      "status:\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.1\n")


def test_the_generator_reaches_the_quick_edit() -> None:
    wanted: Wanted = {("default", "web"): (["10.0.0.1"], "lab")}
    taken: list[bool] = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(plain_documents())
    def count(segment: str) -> None:
        header = "---\n" if segment.startswith("---\n") else ""
        quick = writers._quick_edit(header, segment[len(header):], wanted)
        taken.append(quick is not writers._SLOW)

    count()
    assert sum(taken) > 30
