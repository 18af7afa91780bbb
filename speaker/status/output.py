"""Writing a diagram to a file whose suffix says the format (.dot, .svg, .png).

The one place that runs Graphviz's `dot` (through the `graphviz` binding), so the
renderers stay pure and the CLI and the lab demo write files the same way.
"""

from __future__ import annotations

import os

import graphviz

from foundation.files import write_atomically

FORMATS = ("dot", "svg", "png")


def diagram_format(path: str) -> str:
    """The format named by `path`'s suffix; ValueError for anything else."""
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix == "gv":
        suffix = "dot"
    if suffix not in FORMATS:
        raise ValueError(f"{path}: the file name must end in .svg, .png or .dot")
    return suffix


def write_diagram(graph: graphviz.Digraph, path: str) -> str:
    """Write `graph` to `path` (DOT source, or rendered by `dot`); returns the format."""
    fmt = diagram_format(path)
    data = graph.source.encode() if fmt == "dot" else graph.pipe(format=fmt)
    write_atomically(path, data)
    return fmt
