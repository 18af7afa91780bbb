"""Writing a picture to a file whose suffix says the format (.dot, .svg, .png).

The one place that runs Graphviz (through the `graphviz` binding), so the renderers
stay pure and the CLI and the labs write files the same way.  dot lays out each part
of the picture (see speaker/status/diagram.py), speaker/status/layout.py puts them
together and adds the tunnels and the legend's line samples, and `neato -n2`
renders the result with every position as given.  The .dot file is that final
graph: `neato -n2 -Tsvg` draws it again.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import graphviz

from foundation.files import write_atomically
from speaker.status.diagram import Drawing
from speaker.status.layout import compose

FORMATS = ("dot", "svg", "png")


def diagram_format(path: str) -> str:
    """The format named by `path`'s suffix; ValueError for anything else."""
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix == "gv":
        suffix = "dot"
    if suffix not in FORMATS:
        raise ValueError(f"{path}: the file name must end in .svg, .png or .dot")
    return suffix


def _dot_json(source: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(graphviz.pipe("dot", "json", source.encode()))
    return data


def laid_out(drawing: Drawing) -> str:
    """The final DOT text: every node and edge with its position."""
    return compose(drawing, _dot_json)


def render(drawing: Drawing, fmt: str) -> bytes:
    """The picture as `fmt` (dot, svg, png)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    text = laid_out(drawing)
    if fmt == "dot":
        header = "/* laid out by skeinctl: render with `neato -n2 -Tsvg` */\n"
        return (header + text).encode()
    return graphviz.Source(text, engine="neato").pipe(format=fmt, neato_no_op=2)


def write_diagram(drawing: Drawing, path: str, fmt: str | None = None) -> str:
    """Write the picture to `path` ("-": standard output) as `fmt`, by default the
    format its suffix names; returns the format."""
    fmt = fmt or diagram_format(path)
    data = render(drawing, fmt)
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomically(path, data)
    return fmt
