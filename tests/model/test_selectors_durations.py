"""Label selectors (apimachinery semantics) and Go durations (time.ParseDuration)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.kube.model import (
    LabelSelector,
    ModelError,
    Requirement,
    matches,
    matches_any,
    parse_go_duration,
    parse_label_selector,
)
from foundation.kube.model.errors import ObjectRef
from foundation.kube.model.fields import Cursor


def selector(doc: Any) -> LabelSelector:
    return parse_label_selector(Cursor(ObjectRef("L2Advertisement", "ns", "a"), doc,
                                       "spec.nodeSelectors[0]"))


LABELS = {"rack": "r1", "zone": "east", "gpu": ""}


@pytest.mark.parametrize(("doc", "expected"), [
    ({}, True),
    ({"matchLabels": {"rack": "r1"}}, True),
    ({"matchLabels": {"rack": "r2"}}, False),
    ({"matchLabels": {"gpu": ""}}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["east", "west"]}]}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["west"]}]}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["west"]}]}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["east"]}]}, False),
    # NotIn holds for an object without the label, as in Kubernetes.
    ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}, True),
    ({"matchExpressions": [{"key": "missing", "operator": "In", "values": ["x"]}]}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "missing", "operator": "Exists"}]}, False),
    ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, False),
    # All terms must hold.
    ({"matchLabels": {"rack": "r1"},
      "matchExpressions": [{"key": "zone", "operator": "In", "values": ["west"]}]}, False),
])
def test_selector_semantics(doc: dict[str, Any], expected: bool) -> None:
    assert matches(selector(doc), LABELS) is expected


def test_selector_lists_empty_means_all_else_any() -> None:
    a, b = LabelSelector({"rack": "r1"}), LabelSelector({"rack": "r2"})
    assert matches_any((), {})
    assert matches_any((a, b), {"rack": "r2"})
    assert not matches_any((a, b), {"rack": "r3"})


@pytest.mark.parametrize(("doc", "message"), [
    ({"matchExpressions": [{"key": "a", "operator": "In"}]},
     "spec.nodeSelectors[0].matchExpressions[0].values: operator In needs at least one value"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "spec.nodeSelectors[0].matchExpressions[0].values: operator Exists takes no values"),
    ({"matchExpressions": [{"operator": "Exists"}]},
     "spec.nodeSelectors[0].matchExpressions[0].key: required"),
    ({"matchLabels": {"a": 1}},
     "spec.nodeSelectors[0].matchLabels.a: expected a string, got 1"),
    ({"matchExpressions": {"key": "a"}},
     "spec.nodeSelectors[0].matchExpressions: expected a list, got a mapping"),
])
def test_selector_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError) as err:
        selector(doc)
    assert str(err.value) == f"L2Advertisement ns/a: {message}"


label_values = st.sampled_from(["a", "b", "c"])
label_sets = st.dictionaries(st.sampled_from(["k1", "k2", "k3"]), label_values, max_size=3)


@given(label_sets, st.sampled_from(["k1", "k2", "k3"]),
       st.lists(label_values, min_size=1, max_size=3))
def test_in_and_notin_are_complements(labels: dict[str, str], key: str,
                                      values: list[str]) -> None:
    inside = Requirement(key, "In", tuple(values)).matches(labels)
    outside = Requirement(key, "NotIn", tuple(values)).matches(labels)
    assert inside != outside
    assert Requirement(key, "Exists").matches(labels) != Requirement(
        key, "DoesNotExist").matches(labels)


@given(label_sets, label_sets)
def test_match_labels_is_subset_test(wanted: dict[str, str], labels: dict[str, str]) -> None:
    assert LabelSelector(wanted).matches(labels) == (wanted.items() <= labels.items())


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("90s", 90.0), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5),
    ("1.s", 1.0), (".5m", 30.0), ("300ms", 0.3), ("2h45m", 9900.0), ("-1.5h", -5400.0),
    ("+10s", 10.0), ("1µs", 1e-6), ("1μs", 1e-6), ("1us", 1e-6), ("1ns", 1e-9),
    ("1h1h", 7200.0),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize("text", ["", "90", "s", "1d", "1.5", ".s", "1 s", "1m 30s", "--1s",
                                  "1S", "-", "0s1",
                                  "2562048h"])  # beyond Go's int64 nanoseconds
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


@given(st.lists(st.tuples(st.integers(0, 10**5), st.sampled_from(["h", "m", "s", "ms", "us",
                                                                   "ns"])),
                min_size=1, max_size=5))
def test_go_duration_sums_its_terms(terms: list[tuple[int, str]]) -> None:
    unit_ns = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3,
               "ns": 1}
    text = "".join(f"{n}{u}" for n, u in terms)
    assert parse_go_duration(text) == sum(n * unit_ns[u] for n, u in terms) / 1e9
