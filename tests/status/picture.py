"""What a rendered picture must hold, checked on what Graphviz drew (for the tests of
`skeinctl diagram`, the demo's picture and the kube lab's).

- `layout_problems`: the final graph laid out by Graphviz as JSON, with Graphviz's own
  text measurements: every text inside its box (a node's text in the node, a frame's
  title in the frame), no edge label on a box, on another label or across a frame's
  border, no two boxes or frames on top of each other.
- `svg_problems`: the SVG a user opens: exactly one tunnel edge per pair of nodes with
  VXLAN devices, labelled with both underlay endpoints; every colour and line style
  the picture uses in the legend, and every legend entry used.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from speaker.status.layout import Box, _floats, text_boxes
from speaker.status.model import ClusterStatus

SVG = "{http://www.w3.org/2000/svg}"
SLACK = 1.0  # points


def layout_json(final_dot: str) -> dict[str, Any]:
    proc = subprocess.run(["neato", "-n2", "-Tjson"], input=final_dot.encode(),
                          capture_output=True, check=True)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _node_box(obj: dict[str, Any]) -> Box:
    x, y = _floats(obj["pos"])[:2]
    w, h = float(obj["width"]) * 72, float(obj["height"]) * 72
    return Box(x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def _inside(inner: Box, outer: Box) -> bool:
    return (inner.x1 >= outer.x1 - SLACK and inner.x2 <= outer.x2 + SLACK
            and inner.y1 >= outer.y1 - SLACK and inner.y2 <= outer.y2 + SLACK)


def _overlap(a: Box, b: Box) -> bool:
    return (min(a.x2, b.x2) - max(a.x1, b.x1) > SLACK
            and min(a.y2, b.y2) - max(a.y1, b.y1) > SLACK)


def _crosses_border(label: Box, frame: Box) -> bool:
    return _overlap(label, frame) and not _inside(label, frame)


def layout_problems(final_dot: str) -> list[str]:
    data = layout_json(final_dot)
    problems = []
    nodes: dict[str, Box] = {}
    frames: dict[str, Box] = {}
    texts: list[tuple[str, Box, str]] = []
    for obj in data.get("objects", []):
        name = obj.get("name", "")
        if "pos" not in obj:
            if name.startswith("cluster_") and "bb" in obj:
                frame = Box(*_floats(obj["bb"]))
                frames[name] = frame
                for box, text in text_boxes(obj.get("_ldraw_", [])):
                    if not _inside(box, frame):
                        problems.append(f"frame {name}: its title {text!r} leaves it")
            continue
        if "invis" in obj.get("style", ""):
            continue
        box = _node_box(obj)
        if obj.get("shape") not in ("point",):
            nodes[name] = box
        for text_box, text in text_boxes(obj.get("_ldraw_", [])):
            texts.append((name, text_box, text))
            if not _inside(text_box, box):
                problems.append(f"{name}: text {text!r} runs out of its box")
    for (a, box_a), (b, box_b) in itertools.combinations(nodes.items(), 2):
        if _overlap(box_a, box_b):
            problems.append(f"boxes {a} and {b} overlap")
    for (a, box_a), (b, box_b) in itertools.combinations(frames.items(), 2):
        if _overlap(box_a, box_b):
            problems.append(f"frames {a} and {b} overlap")
    names = {o["_gvid"]: o.get("name", "") for o in data.get("objects", [])}
    labels: list[tuple[str, Box, str]] = []
    for edge in data.get("edges", []):
        title = f"{names.get(edge['tail'])} -> {names.get(edge['head'])}"
        for box, text in text_boxes(edge.get("_ldraw_", [])):
            labels.append((title, box, text))
    for title, box, text in labels:
        for name, node_box in nodes.items():
            if _overlap(box, node_box):
                problems.append(f"label {text!r} of {title} lies on {name}")
        for name, frame in frames.items():
            if _crosses_border(box, frame):
                problems.append(f"label {text!r} of {title} crosses the border of {name}")
    for (t1, b1, x1), (t2, b2, x2) in itertools.combinations(labels, 2):
        if _overlap(b1, b2) and t1 != t2:
            problems.append(f"labels {x1!r} ({t1}) and {x2!r} ({t2}) overlap")
    return problems


# -- the SVG -------------------------------------------------------------------------------

def _title(g: ET.Element) -> str:
    t = g.find(f"{SVG}title")
    return (t.text or "") if t is not None else ""


def _groups(root: ET.Element, kind: str) -> Iterable[ET.Element]:
    for g in root.iter(f"{SVG}g"):
        if kind in (g.get("class") or "").split():
            yield g


def _line_style(path: ET.Element) -> tuple[str, str, str]:
    return (path.get("stroke", ""), path.get("stroke-width", "1"),
            path.get("stroke-dasharray", ""))


def _fills(g: ET.Element) -> set[str]:
    out = set()
    for el in itertools.chain(g.iter(f"{SVG}path"), g.iter(f"{SVG}polygon")):
        fill = el.get("fill", "")
        if fill.startswith("#"):
            out.add(fill.lower())
    return out


def svg_problems(svg: bytes, cluster: ClusterStatus) -> list[str]:
    root = ET.fromstring(svg)
    problems = []
    # Tunnels: one per pair, labelled with both ends' underlay addresses.
    vx = {n.name: n for n in cluster.nodes if n.vxlan is not None}
    found: dict[frozenset[str], list[str]] = {}
    for g in _groups(root, "tunnel"):
        tail, _, head = _title(g).partition("->")
        pair = frozenset((tail.split("/")[0], head.split("/")[0]))
        text = " ".join((t.text or "") for t in g.iter(f"{SVG}text"))
        found.setdefault(pair, []).append(text)
    for a, b in itertools.combinations(sorted(vx), 2):
        linked = any(p.node in (a, b) for n in (a, b) for p in vx[n].peers)
        texts = found.get(frozenset((a, b)), [])
        if linked and len(texts) != 1:
            problems.append(f"nodes {a} and {b}: {len(texts)} tunnel edges, not 1")
            continue
        if not linked:
            continue
        healthy = (any(p.node == b for p in vx[a].peers)
                   and any(p.node == a for p in vx[b].peers))
        ips = [vx[n].vxlan.local for n in (a, b)]  # type: ignore[union-attr]
        if healthy and not all(ip and ip in texts[0] for ip in ips):
            problems.append(f"tunnel {a}-{b}: label {texts[0]!r} lacks {ips}")
    for pair in found:
        if not pair <= set(vx):
            problems.append(f"a tunnel edge between {sorted(pair)}, not two VXLAN nodes")
    # The legend against what is drawn.
    legend_lines, used_lines = set(), set()
    for g in _groups(root, "edge"):
        paths = list(g.iter(f"{SVG}path"))
        if not paths:
            continue
        style = _line_style(paths[0])
        if "legend" in (g.get("class") or "").split():
            legend_lines.add(style)
        else:
            used_lines.add(style)
    legend_fills, used_fills = set(), set()
    for g in _groups(root, "node"):
        name = _title(g)
        if name == "legend":
            legend_fills = _fills(g)
        elif name not in ("title",) and not name.startswith("legend/"):
            shapes = list(itertools.chain(g.iter(f"{SVG}path"), g.iter(f"{SVG}polygon")))
            if shapes and shapes[0].get("fill", "").startswith("#"):
                used_fills.add(shapes[0].get("fill", "").lower())
            elif shapes and shapes[0].get("fill") == "none" and re.search(
                    "dash", shapes[0].get("stroke-dasharray", "") + "dash"):
                used_fills.add("#ffffff")  # a dashed box without fill: the remote node
    for g in _groups(root, "cluster"):
        shapes = list(itertools.chain(g.iter(f"{SVG}path"), g.iter(f"{SVG}polygon")))
        if shapes and shapes[0].get("fill", "").startswith("#"):
            used_fills.add(shapes[0].get("fill", "").lower())
    for style in sorted(legend_lines - used_lines):
        problems.append(f"legend line {style} is drawn nowhere")
    for style in sorted(used_lines - legend_lines):
        problems.append(f"line {style} is not in the legend")
    for fill in sorted(legend_fills - used_fills):
        problems.append(f"legend fill {fill} is used nowhere")
    for fill in sorted(used_fills - legend_fills):
        problems.append(f"fill {fill} is not in the legend")
    return problems
