"""What changed between two sequences whose unchanged entries are the same objects."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, count
from operator import is_not
from typing import TypeVar

T = TypeVar("T")


def identity_delta(before: Sequence[T], after: Sequence[T]) -> tuple[list[T], list[T]]:
    """(added, removed): the entries of `after` that are not in `before` and the other way
    round, told apart by identity (plans and sources keep an unchanged entry as the same
    object; an equal entry made anew is one removed and one added).  The identical head
    and tail are skipped, then the rest compared through dicts and set operations: all
    of it runs in C, so a list of many thousand entries costs well under a millisecond,
    not a Python loop over every entry.  Both lists are alive here: no id is reused."""
    if before is after:
        return [], []
    shortest = min(len(before), len(after))
    head = next(compress(count(), map(is_not, before, after)), shortest)
    tail = next(compress(count(), map(is_not, reversed(before), reversed(after))), shortest)
    tail = min(tail, shortest - head)
    old_part = before[head:len(before) - tail]
    new_part = after[head:len(after) - tail]
    if not old_part or not new_part:
        return list(new_part), list(old_part)
    old = dict(zip(map(id, old_part), old_part, strict=True))
    new = dict(zip(map(id, new_part), new_part, strict=True))
    return ([new[i] for i in new.keys() - old.keys()],
            [old[i] for i in old.keys() - new.keys()])
