"""Byte-level mutations of valid seeds, the one mutator the fuzz tests share."""

from __future__ import annotations

from hypothesis import strategies as st


def mutate(draw: st.DrawFn, seed: bytes, most: int) -> bytearray:
    """`seed` with 1 to `most` bytes flipped, set, cut or inserted."""
    raw = bytearray(seed)
    for _ in range(draw(st.integers(1, most))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and raw:
            raw[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[pos:pos + draw(st.integers(1, 8))]
        else:
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return raw
