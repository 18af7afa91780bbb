"""Whatever a user writes, parsing ends in a model object or a ModelError.

Known-good objects (the MetalLB examples and the core kinds of the other tests)
get one field replaced by a value of the wrong shape; a TypeError or
AttributeError escaping the parser would take a daemon's whole reload down
instead of skipping one object with a message.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.model import ModelError, parse_object
from foundation.kube.sources import yaml_documents
from tests.model.test_kube import NODE, SERVICE, SLICE

DATA = Path(__file__).parent / "data" / "metallb.yaml"
GOOD = [doc for _, doc in yaml_documents(DATA.read_text())] + [NODE, SERVICE, SLICE]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                    st.text(max_size=12), st.sampled_from(["", "-", "1-", "a/b", "::", "0"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += paths(child, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_objects_parse_or_raise_model_error(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(GOOD)))
    path = data.draw(st.sampled_from(paths(doc)[1:]))
    replacement = data.draw(values)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    try:
        parse_object(doc)
    except ModelError as exc:
        assert str(exc) and "\n" not in str(exc)
