"""Kubernetes label selectors (matchLabels + matchExpressions) as pure data.

MetalLB picks nodes, pools and services with them; the semantics follow
apimachinery's LabelSelector: all terms must hold, an empty selector matches
everything, `NotIn` and `DoesNotExist` hold for objects that lack the label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from foundation.kube.model.fields import Cursor

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        inside = present and labels[self.key] in self.values
        return inside if self.operator == "In" else not inside


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions)


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """True when `labels` satisfy every term of `selector`."""
    return selector.matches(labels)


def matches_any(selectors: tuple[LabelSelector, ...], labels: Mapping[str, str]) -> bool:
    """MetalLB's reading of a selector list: empty means all, otherwise any one."""
    return not selectors or any(s.matches(labels) for s in selectors)


def parse_requirement(cur: Cursor) -> Requirement:
    key = cur.at("key").string()
    operator = cur.at("operator").choice(OPERATORS)
    values_cur = cur.at("values")
    values = values_cur.strings()
    if operator in ("In", "NotIn") and not values:
        values_cur.fail(f"operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        values_cur.fail(f"operator {operator} takes no values")
    return Requirement(key, operator, values)


def parse_label_selector(cur: Cursor) -> LabelSelector:
    """A selector at `cur`; an absent one is the empty selector (matches everything)."""
    return LabelSelector(cur.at("matchLabels").string_map(),
                         tuple(cur.at("matchExpressions").parse(parse_requirement)))
