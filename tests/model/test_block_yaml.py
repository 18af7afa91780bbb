"""`_block_document` reads plain block-style documents from their lines; PyYAML's
composer and constructor (`_composed_documents`) are the reference, object for
object, line for line, error for error.  Generated block-style texts, and the
same texts with characters put in or taken out anywhere, must come out the same
whichever path reads them; most of the unedited ones must be read by lines.  A
document whose shape came before (the same text but for the values after
"key: ") is built from a template of that shape: generated texts and their
siblings with other values, read again and again, come out the same too."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.sources import file as source_file
from foundation.kube.sources.file import (
    _SLOT,
    _block_document,
    _composed_documents,
    _Fallback,
    _segments,
    yaml_documents,
)
from tests.model.test_yaml_builder import assert_same, shape

# Words a manifest holds, and words that mean more than they say: numbers,
# booleans, nulls, timestamps, merge and value keys, indicators, colons.
WORDS = ["name", "kind", "Service", "metadata", "spec", "app", "web", "v1", "10.0.0.1",
         "fd00::1", "a b", "a:b", "http://x/y", "80", "8080", "-1", "+1", "0x1F", "0o17",
         "012", "1_000", "1.5", "1e3", ".inf", "-.inf", ".nan", "yes", "No", "on", "off",
         "true", "False", "null", "~", "Null", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
         "=", "<<", ":x", "x:", "a,b", ",a", "-a", "- a", "a -", "x: y", "café", "a  b",
         "---x", "...", "1:20", "190:20:30", "0b101", "_", "-", ":"]
EDITS = [" ", "  ", "\n", "-", "- ", ":", ": ", "a", "#", "'", "\t", "---\n", "x: ", "\n  "]


class Generator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def word(self) -> str:
        return self.rng.choice(WORDS) if self.rng.random() < 0.3 \
            else self.rng.choice(["name", "port", "ip", "x", "labels", "k8s.io/app"])

    def mapping(self, indent: int, depth: int) -> list[str]:
        lines = []
        for _ in range(self.rng.randint(1, 4)):
            lines += self.pair(indent, depth)
        return lines

    def pair(self, indent: int, depth: int) -> list[str]:
        pad, key = " " * indent, self.word()
        roll = self.rng.random()
        if depth > 3 or roll < 0.5:
            return [f"{pad}{key}:{self.rng.choice([' ', '  '])}{self.word()}"
                    f"{self.rng.choice(['', '', ' '])}"]
        if roll < 0.6:
            return [f"{pad}{key}:"]  # null
        step = self.rng.choice([1, 2, 2, 4])
        if roll < 0.8:
            return [f"{pad}{key}:", *self.mapping(indent + step, depth + 1)]
        # A sequence, indented or at the key's own column.
        return [f"{pad}{key}:", *self.sequence(indent + self.rng.choice([0, step]), depth + 1)]

    def sequence(self, indent: int, depth: int) -> list[str]:
        lines, pad = [], " " * indent
        for _ in range(self.rng.randint(1, 3)):
            roll = self.rng.random()
            if depth > 3 or roll < 0.4:
                lines.append(f"{pad}- {self.word()}")
            elif roll < 0.8:
                gap = self.rng.choice([" ", " ", "  "])
                first, *rest = self.mapping(indent + 1 + len(gap), depth + 1)
                lines += [f"{pad}-{gap}{first.lstrip(' ')}", *rest]
            elif roll < 0.9:
                lines += [f"{pad}-", *self.mapping(indent + 2, depth + 1)]
            else:
                lines.append(f"{pad}-")
        return lines

    def text(self) -> str:
        lines = self.mapping(0, 0) if self.rng.random() < 0.9 else self.sequence(0, 0)
        for _ in range(self.rng.randint(0, 2)):
            lines.insert(self.rng.randint(0, len(lines)), self.rng.choice(["", "  "]))
        head = self.rng.choice(["", "", "---\n", "---\n", "\n"])
        return head + "\n".join(lines) + self.rng.choice(["\n", "", "\n\n"])


def generated(seed: int) -> str:
    return Generator(random.Random(seed)).text()


def read_by_lines(text: str) -> Any:
    try:
        documents = _block_document(text)
    except _Fallback:
        return None
    ids: dict[int, int] = {}
    return [(line, shape(doc, ids)) for line, doc in documents]


def test_most_generated_texts_are_read_by_lines_as_pyyaml_reads_them() -> None:
    texts = [generated(seed) for seed in range(500)]
    read = 0
    for text in texts:
        mine = read_by_lines(text)
        if mine is not None:
            read += 1
            ids: dict[int, int] = {}
            theirs = [(line, shape(doc, ids)) for line, doc in _composed_documents(text)]
            assert mine == theirs, repr(text)
    assert read > 200  # the generator often writes what the lines tell for certain


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_generated_block_yaml_is_read_as_pyyaml_reads_it(seed: int) -> None:
    assert_same(generated(seed))


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.data())
def test_edited_block_yaml_is_read_as_pyyaml_reads_it(seed: int, data: st.DataObject) -> None:
    """Characters put in or taken out anywhere: other structures, and errors."""
    text = generated(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + data.draw(st.sampled_from(EDITS)) + text[at:]
        else:
            text = text[:at] + text[at + data.draw(st.integers(1, 3)):]
    assert_same(text)


def untrailed(seed: int) -> str:
    """A generated text without trailing blanks (which keep a text on the line path)."""
    return "\n".join(line.rstrip(" ") for line in generated(seed).split("\n"))


def sibling(text: str, rng: random.Random) -> str:
    """`text` with other values after its "key: "s: the same shape."""
    return _SLOT.sub(lambda _m: ": " + rng.choice(WORDS), text)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_documents_of_a_known_shape_are_read_as_pyyaml_reads_them(seed: int) -> None:
    rng = random.Random(seed)
    text = untrailed(seed)
    for _ in range(2):  # the second time, the shape's template is made
        assert_same(text)
    for _ in range(3):
        other = sibling(text, rng)
        assert _SLOT.sub(": ", other) == _SLOT.sub(": ", text)
        assert_same(other)
        assert_same(other)


def test_most_generated_shapes_get_a_template() -> None:
    made = 0
    for seed in range(300):
        text = untrailed(seed)
        rng = random.Random(seed)
        for value in (text, text, sibling(text, rng)):
            assert_same(value)
        made += source_file._SHAPES.get(_SLOT.sub(": ", text)) is not None
    assert made > 150  # as most are read by lines


def test_a_value_that_a_later_key_overrides_still_counts() -> None:
    """`a: 1` then `a: 2` keeps the second; a first value the lines refuse sends
    the text to PyYAML on the template as on the line path."""
    for text in ("a: 1\na: 2\n", "a: 1\na: 2\n", "a: -x\na: 2\n", "a: x: y\na: 2\n"):
        assert_same(text)


@pytest.mark.parametrize("text", [
    "a: 1\n  b: 2\n",            # a deeper line after a value: a multi-line scalar
    "a:\n- 1\nb: 2\n",           # a sequence at its key's column
    "- a: 1\n  b:\n  - 2\n- 3\n",
    "-\n  a: 1\n-\n",
    "a: b: c\n",                 # an error
    "a:\n  - 1\n   - 2\n",       # an error
    "? a\n: b\n",
    "a: 1\n---\nb: 2\n",
    "---\n",
    "--- a: 1\n",
    "a: x:\n",
    "<<: 1\n",
    "=: 1\n",
    "a:\n  =\n",
    "a: 2001-12-14\nb: 0o17\nc: 1_0\nd: ~\ne: yes\n",
    "k" * 1025 + ": 1\n",
    "a:   b   \nc: d\n",
])
def test_edge_cases_are_read_as_pyyaml_reads_them(text: str) -> None:
    assert_same(text)


def test_a_manifest_is_read_by_lines() -> None:
    text = ("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n"
            "spec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n    protocol: TCP\n")
    for segment in map(bytes.decode, _segments(text.encode())):
        assert read_by_lines(segment) is not None
        assert_same(segment)
    assert yaml_documents(text)[0][0] == 2
