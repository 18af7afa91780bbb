"""Pass 2 of the picture: the parts put together, the tunnels and the legend's line
samples drawn in (see speaker/status/diagram.py for why there are parts).

Input: each part as dot laid it out (Graphviz JSON: every node's position and size,
every edge's spline and label position, the frame's box).  Output: one DOT graph
with every position given, for `neato -n2`, which draws positions as they are.
Pure: coordinates in, text out (the caller runs dot).

How the parts are put together (Graphviz coordinates: y grows upwards): each node's
column is laid out first; the bottom part gets, for each column, a stand-in exactly
as big as the column's uplink (so the edges from an uplink leave its real border)
and gaps between the stand-ins as wide as the columns reach beyond their uplinks
plus the room the tunnels need; then each column is moved so that its uplink sits
on its stand-in.

Where a tunnel goes:

- between adjacent nodes: a straight line between the two VXLAN devices' facing
  sides, its label in the gap between the two node boxes, above the line;
- between nodes further apart: out of the device's side into the gap between this
  node's box and the next, down that gap into the band under the nodes, along the
  band on a level of its own, up the gap before the far node and into its device.
  Its label sits on its level, moved along it until it touches no box, edge or
  label.

Exits on a device's side are stacked from just below its centre downwards, nearest
peer first, and the lanes in a gap are ordered so that two tunnels leaving (or
reaching) one node never cross each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from speaker.status.diagram import (
    EDGE_DEFAULTS,
    FONT,
    GRAPH_DEFAULTS,
    LINES,
    NODE_DEFAULTS,
    TUNNEL_FONT,
    TUNNEL_PITCH,
    Drawing,
    Part,
    Tunnel,
    attr_list,
    quote,
)
from speaker.status.fonts import text_width

Point = tuple[float, float]
CORNER = 6.0  # radius of a tunnel's rounded corners
ARROW = 10.0  # Graphviz's arrowhead length at penwidth 1
MIN_GAP = 20.0  # between two node boxes
LANE = 9.0  # between two tunnels going down (or up) one gap
NODESEP = float(GRAPH_DEFAULTS["nodesep"]) * 72
RunDot = Callable[[str], dict[str, Any]]  # DOT text -> Graphviz JSON of its layout


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def cx(self) -> float:
        return (self.x1 + self.x2) / 2

    @property
    def cy(self) -> float:
        return (self.y1 + self.y2) / 2

    def grown(self, d: float) -> Box:
        return Box(self.x1 - d, self.y1 - d, self.x2 + d, self.y2 + d)

    def hits(self, other: Box) -> bool:
        return not (other.x2 < self.x1 or other.x1 > self.x2 or other.y2 < self.y1
                    or other.y1 > self.y2)

    def holds(self, p: Point) -> bool:
        return self.x1 <= p[0] <= self.x2 and self.y1 <= p[1] <= self.y2


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _spline_points(pos: str) -> list[Point]:
    """The points of an edge's `pos` (arrow endpoints `e,`/`s,` left out)."""
    pts = []
    for part in pos.split():
        if part.startswith(("e,", "s,")):
            continue
        x, y = _floats(part)[:2]
        pts.append((x, y))
    return pts


def bezier_samples(points: Sequence[Point], steps: int = 12) -> list[Point]:
    """Points along a Graphviz B-spline (cubic segments sharing their ends)."""
    out: list[Point] = []
    for i in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[i:i + 4]
        for s in range(steps + 1):
            t = s / steps
            a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3
            out.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
                        a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return out or list(points)


def text_boxes(ops: Iterable[dict[str, Any]]) -> list[tuple[Box, str]]:
    """The box of every text drawn by xdot operations (Graphviz JSON `_ldraw_`), as wide
    as a viewer draws it (fonts.py), not as Graphviz measured it."""
    size, bold = 14.0, False
    out = []
    for op in ops:
        if op.get("op") == "F":
            size = float(op.get("size", size))
        elif op.get("op") == "t":
            bold = bool(int(op.get("fontchar", 0)) & 1)
        elif op.get("op") == "T":
            x, y = op["pt"]
            width = max(float(op.get("width", 0)), text_width(op["text"], size, bold))
            left = {"l": x, "r": x - width}.get(op.get("align", "c"), x - width / 2)
            out.append((Box(left, y - size * 0.25, left + width, y + size * 0.8), op["text"]))
    return out


@dataclass
class Laid:
    """One part as dot laid it out, moved by (dx, dy)."""

    part: Part
    layout: dict[str, Any]
    dx: float = 0.0
    dy: float = 0.0

    def at(self, x: float, y: float) -> Point:
        return (x + self.dx, y + self.dy)

    @property
    def bb(self) -> Box:
        x1, y1, x2, y2 = _floats(self.layout["bb"])
        return Box(x1 + self.dx, y1 + self.dy, x2 + self.dx, y2 + self.dy)

    def names(self) -> dict[int, str]:
        return {o["_gvid"]: o["name"] for o in self.layout.get("objects", []) if "pos" in o}

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {o["name"]: o for o in self.layout.get("objects", []) if "pos" in o}

    def box(self, name: str) -> Box:
        obj = self.nodes()[name]
        x, y = self.at(*_floats(obj["pos"])[:2])
        w, h = float(obj["width"]) * 72, float(obj["height"]) * 72
        return Box(x - w / 2, y - h / 2, x + w / 2, y + h / 2)

    def frame(self) -> dict[str, Any] | None:
        return next((o for o in self.layout.get("objects", [])
                     if o.get("name", "").startswith("cluster_")), None)

    def frame_box(self) -> Box | None:
        """The frame as dot drew it, grown to hold every label of the edges inside it
        (dot 2.43 lets one stick out now and then)."""
        frame = self.frame()
        if frame is None or "bb" not in frame:
            return None
        x1, y1, x2, y2 = _floats(frame["bb"])
        inside = set(self.part.members)
        for tail, head, _, e in self.edges():
            if tail in inside and head in inside:
                for label, _ in text_boxes(e.get("_ldraw_", [])):
                    x1, y1 = min(x1, label.x1 - 6), min(y1, label.y1 - 6)
                    x2, y2 = max(x2, label.x2 + 6), max(y2, label.y2 + 6)
        low, high = self.at(x1, y1), self.at(x2, y2)
        return Box(low[0], low[1], high[0], high[1])

    @property
    def extent(self) -> Box:
        """Everything of this part: its bounding box and its frame."""
        box, frame = self.bb, self.frame_box()
        if frame is None:
            return box
        return Box(min(box.x1, frame.x1), min(box.y1, frame.y1), max(box.x2, frame.x2),
                   max(box.y2, frame.y2))

    def moved_pos(self, pos: str) -> str:
        out = []
        for part in pos.split():
            head = ""
            if part.startswith(("e,", "s,")):
                head, part = part[:2], part[2:]
            x, y = self.at(*_floats(part)[:2])
            out.append(f"{head}{x:.2f},{y:.2f}")
        return " ".join(out)

    def edges(self) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
        """(tail, head, the part's attributes, the laid-out edge) for every edge."""
        names = self.names()
        seen: dict[tuple[str, str], int] = {}
        laid: dict[tuple[str, str, int], dict[str, Any]] = {}
        for e in self.layout.get("edges", []):
            key = (names[e["tail"]], names[e["head"]])
            k = seen.get(key, 0)
            seen[key] = k + 1
            laid[(*key, k)] = e
        seen.clear()
        out = []
        for tail, head, attrs in self.part.edges:
            k = seen.get((tail, head), 0)
            seen[(tail, head)] = k + 1
            e = laid.get((tail, head, k))
            if e is not None:
                out.append((tail, head, attrs, e))
        return out


class Geometry:
    """Final positions: node and frame boxes, the texts drawn in each node, and the
    obstacles a label placed in pass 2 must not touch."""

    def __init__(self) -> None:
        self.nodes: dict[str, Box] = {}
        self.clusters: dict[str, Box] = {}
        self.texts: dict[str, list[tuple[Box, str]]] = {}
        self.obstacles: list[Box] = []
        self.points: list[Point] = []

    def add(self, laid: Laid, skip: Iterable[str] = ()) -> None:
        skipped = set(skip)
        frame, box = laid.frame(), laid.frame_box()
        if frame is not None and box is not None:
            self.clusters[frame["name"]] = box
        for name, obj in laid.nodes().items():
            if name in skipped:
                continue
            box = laid.box(name)
            self.nodes[name] = box
            self.texts[name] = [(Box(b.x1 + laid.dx, b.y1 + laid.dy, b.x2 + laid.dx,
                                     b.y2 + laid.dy), t)
                                for b, t in text_boxes(obj.get("_ldraw_", []))]
            if "invis" not in laid.part.nodes.get(name, {}).get("style", ""):
                self.obstacles.append(box)
        for _, _, attrs, e in laid.edges():
            if attrs.get("style") == "invis" or "pos" not in e:
                continue
            self.points += [laid.at(*p) for p in bezier_samples(_spline_points(e["pos"]))]
            self.obstacles += [Box(b.x1 + laid.dx, b.y1 + laid.dy, b.x2 + laid.dx,
                                   b.y2 + laid.dy) for b, _ in text_boxes(e.get("_ldraw_", []))]

    def free(self, box: Box) -> bool:
        return (not any(box.hits(o) for o in self.obstacles)
                and not any(box.holds(p) for p in self.points))


# -- splines ------------------------------------------------------------------------------

def _straight(p: Point, q: Point) -> list[Point]:
    return [(p[0] + (q[0] - p[0]) / 3, p[1] + (q[1] - p[1]) / 3),
            (p[0] + 2 * (q[0] - p[0]) / 3, p[1] + 2 * (q[1] - p[1]) / 3), q]


def _unit(p: Point, q: Point) -> Point:
    d = math.hypot(q[0] - p[0], q[1] - p[1]) or 1.0
    return ((q[0] - p[0]) / d, (q[1] - p[1]) / d)


def polyline_spline(corners: Sequence[Point], radius: float = CORNER) -> list[Point]:
    """A B-spline through `corners`, straight between them, each inner corner rounded."""
    pts = [corners[0]]
    for i in range(1, len(corners)):
        here, there = pts[-1], corners[i]
        if i < len(corners) - 1:
            nxt = corners[i + 1]
            r = min(radius, math.dist(corners[i - 1], there) / 2, math.dist(there, nxt) / 2)
            u, v = _unit(corners[i - 1], there), _unit(there, nxt)
            enter = (there[0] - u[0] * r, there[1] - u[1] * r)
            leave = (there[0] + v[0] * r, there[1] + v[1] * r)
            pts += _straight(here, enter)
            k = 0.552
            pts += [(enter[0] + u[0] * r * k, enter[1] + u[1] * r * k),
                    (leave[0] - v[0] * r * k, leave[1] - v[1] * r * k), leave]
        else:
            pts += _straight(here, there)
    return pts


def _pos(points: Sequence[Point], arrow_at: Point | None = None) -> str:
    head = f"e,{arrow_at[0]:.2f},{arrow_at[1]:.2f} " if arrow_at else ""
    return head + " ".join(f"{x:.2f},{y:.2f}" for x, y in points)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())


# -- tunnels ------------------------------------------------------------------------------

@dataclass
class _Route:
    tunnel: Tunnel
    corners: list[Point]
    label: str
    label_at: Point


def _exits(tunnels: Sequence[Tunnel], box: Box, index: int, right: bool) -> dict[int, float]:
    """Tunnel number -> the y where it leaves `box`'s right (left) side: nearest peer
    highest, from just below the centre down to above the rounded corner."""
    mine = sorted((t.ib - t.ia, n) for n, t in enumerate(tunnels)
                  if (t.ia if right else t.ib) == index)
    room = box.cy - box.y1 - 14
    step = min(7.0, room / max(1, len(mine) - 1)) if len(mine) > 1 else 0.0
    return {n: box.cy - 8 - k * step for k, (_, n) in enumerate(mine)}


def route_tunnels(geo: Geometry, drawing: Drawing) -> list[_Route]:
    tunnels = drawing.tunnels
    if not tunnels:
        return []
    devices: dict[int, Box] = {}
    gaps: dict[int, Box] = {}
    for t in tunnels:
        devices[t.ia], devices[t.ib] = geo.nodes[t.a], geo.nodes[t.b]
    names = {t.ia: t.a for t in tunnels} | {t.ib: t.b for t in tunnels}
    frames = {i: geo.clusters.get("cluster_" + name.rsplit("/", 1)[0], devices[i])
              for i, name in names.items()}
    for i in frames:
        if i + 1 in frames:
            gaps[i] = Box(frames[i].x2, 0, frames[i + 1].x1, 0)
    right = {i: _exits(tunnels, devices[i], i, True) for i in devices}
    left = {i: _exits(tunnels, devices[i], i, False) for i in devices}
    far = sorted((t.ib - t.ia, t.ia, n) for n, t in enumerate(tunnels) if t.ib - t.ia > 1)
    lanes: dict[tuple[int, int], float] = {}  # (tunnel number, gap) -> x
    for g, gap in gaps.items():
        out = sorted(((t.ib - t.ia, n) for n, t in enumerate(tunnels)
                      if t.ia == g and t.ib - t.ia > 1), reverse=True)
        into = sorted((t.ib - t.ia, n) for n, t in enumerate(tunnels)
                      if t.ib == g + 1 and t.ib - t.ia > 1)
        order = [n for _, n in out] + [n for _, n in into]
        for k, n in enumerate(order):
            lanes[(n, g)] = gap.x1 + (k + 1) * (gap.x2 - gap.x1) / (len(order) + 1)
    top = min(f.y1 for f in (*frames.values(), *geo.clusters.values())) - 4
    level = {n: top - 12 - k * TUNNEL_PITCH for k, (_, _, n) in enumerate(far)}
    routes = []
    for n, t in enumerate(tunnels):
        a, b = devices[t.ia], devices[t.ib]
        ya, yb = right[t.ia][n], left[t.ib][n]
        if n not in level:
            corners = [(a.x2, ya), (b.x1, yb)]
            if abs(ya - yb) > 0.5:
                mid = (a.x2 + b.x1) / 2
                corners = [(a.x2, ya), (mid, ya), (mid, yb), (b.x1, yb)]
            label = t.room_label
            lines = label.count("\n") + 1
            gap = gaps.get(t.ia, Box(a.x2, ya, b.x1, ya))
            at = ((gap.x1 + gap.x2) / 2, min(ya, yb) + 3 + lines * TUNNEL_FONT * 0.6)
            routes.append(_Route(t, corners, label, at))
            continue
        xa, xb, y = lanes[(n, t.ia)], lanes[(n, t.ib - 1)], level[n]
        corners = [(a.x2, ya), (xa, ya), (xa, y), (xb, y), (xb, yb), (b.x1, yb)]
        routes.append(_Route(t, corners, t.label, _label_on(geo, t.label, xa, xb, y)))
    return routes


def _label_on(geo: Geometry, label: str, x1: float, x2: float, y: float) -> Point:
    """The centre for `label` above the level line from x1 to x2: the free place
    nearest the middle (the middle when nothing is free)."""
    w, h = text_width(label, TUNNEL_FONT), TUNNEL_FONT * 1.2
    cy = y + 2 + h / 2
    lo, hi = x1 + w / 2 + 6, x2 - w / 2 - 6
    mid = (x1 + x2) / 2
    if lo > hi:
        return (mid, cy)
    candidates = sorted((lo + k * 4 for k in range(int((hi - lo) / 4) + 1)),
                        key=lambda x: abs(x - mid))
    for x in candidates:
        if geo.free(Box(x - w / 2, cy - h / 2, x + w / 2, cy + h / 2).grown(2)):
            return (x, cy)
    return (mid, cy)


def _tunnel_edge(route: _Route) -> str:
    t = route.tunnel
    line = LINES[t.key]
    corners = list(route.corners)
    tail, head = t.a, t.b
    if t.broken and not t.forward:
        corners.reverse()
        tail, head = head, tail
    arrow_at = None
    if line.arrow:
        arrow_at = corners[-1]
        u = _unit(corners[-2], corners[-1])
        reach = ARROW * max(1.0, line.width) ** 0.5
        corners[-1] = (arrow_at[0] - u[0] * reach, arrow_at[1] - u[1] * reach)
    attrs = {**line.attrs(), "dir": "forward" if line.arrow else "none",
             "label": route.label, "lp": f"{route.label_at[0]:.2f},{route.label_at[1]:.2f}",
             "fontsize": f"{TUNNEL_FONT:g}", "class": "tunnel broken" if t.broken else "tunnel",
             "pos": _pos(polyline_spline(corners), arrow_at)}
    return f"{_q(tail)} -> {_q(head)} [{_attrs(attrs)}];"


# -- the legend's line samples ------------------------------------------------------------

def legend_samples(geo: Geometry, drawing: Drawing) -> list[str]:
    """A short edge of each line style before its text in the legend (pass 1 left an
    empty cell there)."""
    texts = {text: box for box, text in geo.texts.get(drawing.legend, [])}
    out = []
    for key in drawing.legend_lines:
        line = LINES[key]
        box = texts.get(line.text)
        if box is None:
            continue
        y = (box.y1 + box.y2) / 2
        x2 = box.x1 - 9
        x1 = x2 - 34
        a, b = f"legend/line/{key}/a", f"legend/line/{key}/b"
        for name, x in ((a, x1), (b, x2)):
            out.append(f'{_q(name)} [shape=point, width=0.01, height=0.01, style=invis, '
                       f'pos="{x:.2f},{y:.2f}", label=""];')
        corners = [(x1, y), (x2, y)]
        arrow_at = None
        if line.arrow:
            arrow_at = (x2, y)
            corners[-1] = (x2 - ARROW, y)
        attrs = {**line.attrs(), "dir": "forward" if line.arrow else "none",
                 "class": "legend", "pos": _pos(polyline_spline(corners), arrow_at)}
        out.append(f"{_q(a)} -> {_q(b)} [{_attrs(attrs)}];")
    return out


def gap_width(drawing: Drawing, i: int, label_width: Callable[[Tunnel], float]) -> float:
    """The room between node boxes i and i+1: the adjacent tunnel's label, and a lane
    for each tunnel going down or up there."""
    room = MIN_GAP
    for t in drawing.tunnels:
        if (t.ia, t.ib) == (i, i + 1):
            room = max(room, label_width(t) + 16)
    lanes = sum(1 for t in drawing.tunnels if t.ib - t.ia > 1 and i in (t.ia, t.ib - 1))
    return max(room, (lanes + 1) * LANE + 8)


def _room_width(t: Tunnel) -> float:
    return max(text_width(line, TUNNEL_FONT) for line in t.room_label.split("\n"))


def compose(drawing: Drawing, run_dot: RunDot) -> str:
    """The whole picture as one DOT graph with every position (for `neato -n2`)."""
    columns = [Laid(p, run_dot(p.source(GRAPH_DEFAULTS))) for p in drawing.columns]
    bottom = drawing.bottom
    anchors = [c.box(a) for c, a in zip(columns, drawing.anchors, strict=True)]
    below = 0.0
    for i, (laid, anchor) in enumerate(zip(columns, anchors, strict=True)):
        bottom.nodes[drawing.anchors[i]].update(width=f"{(anchor.x2 - anchor.x1) / 72:.4f}",
                                                height=f"{(anchor.y2 - anchor.y1) / 72:.4f}")
        below = max(below, anchor.y1 - laid.extent.y1)
        if i + 1 < len(columns):
            right = columns[i + 1]
            reach = (laid.extent.x2 - anchor.x2) + (anchors[i + 1].x1 - right.extent.x1)
            width = reach + gap_width(drawing, i, _room_width) - 2 * NODESEP
            # As deep as the frames on either side reach under their uplinks, so that
            # no edge from an uplink cuts under a neighbour's frame.
            depth = 2 * max(anchor.cy - laid.extent.y1, anchors[i + 1].cy - right.extent.y1)
            bottom.nodes[f"gap/{i}"].update(width=f"{max(0.01, width) / 72:.4f}",
                                            height=f"{depth / 72:.4f}")
    if drawing.band is not None:
        height = float(bottom.nodes[drawing.band]["height"]) * 72 + below
        bottom.nodes[drawing.band]["height"] = f"{height / 72:.4f}"
    base = Laid(bottom, run_dot(bottom.source(GRAPH_DEFAULTS)))
    for laid, name, anchor in zip(columns, drawing.anchors, anchors, strict=True):
        target = base.box(name)
        laid.dx, laid.dy = target.cx - anchor.cx, target.cy - anchor.cy
    geo = Geometry()
    stand_ins = set(drawing.anchors)
    for laid in columns:
        geo.add(laid)
    geo.add(base, skip=stand_ins)
    extra = [_tunnel_edge(r) for r in route_tunnels(geo, drawing)]
    extra += legend_samples(geo, drawing)
    return _emit(drawing, columns, base, stand_ins, extra, geo)


def _node_line(name: str, attrs: dict[str, str], laid: Laid, indent: str = "\t") -> str:
    obj = laid.nodes()[name]
    x, y = laid.at(*_floats(obj["pos"])[:2])
    full = {**attrs, "pos": f"{x:.2f},{y:.2f}", "width": obj["width"],
            "height": obj["height"]}
    return f"{indent}{quote(name)} [{attr_list(full)}];"


def _edge_lines(laid: Laid) -> list[str]:
    out = []
    for tail, head, attrs, e in laid.edges():
        if attrs.get("style") == "invis" or "pos" not in e:
            continue
        full = {**attrs, "pos": laid.moved_pos(e["pos"])}
        if "lp" in e:
            x, y = laid.at(*_floats(e["lp"])[:2])
            full["lp"] = f"{x:.2f},{y:.2f}"
        out.append(f"\t{quote(tail)} -> {quote(head)} [{attr_list(full)}];")
    return out


def _emit(drawing: Drawing, columns: Sequence[Laid], base: Laid, stand_ins: set[str],
          extra: Sequence[str], geo: Geometry) -> str:
    lines = ["digraph skein {",
             f"\tgraph [{attr_list({'bgcolor': 'white', 'pad': '0.3', 'fontname': FONT})}];",
             f"\tnode [{attr_list(NODE_DEFAULTS)}];", f"\tedge [{attr_list(EDGE_DEFAULTS)}];"]
    everything = [*geo.nodes.values(), *geo.clusters.values()]
    if everything:
        top = max(b.y2 for b in everything)
        mid = (min(b.x1 for b in everything) + max(b.x2 for b in everything)) / 2
        title = {"label": drawing.title, "shape": "plaintext", "fontsize": "18",
                 "pos": f"{mid:.2f},{top + 24:.2f}"}
        lines.append(f"\t{quote('title')} [{attr_list(title)}];")
    for laid in columns:
        part, frame, box = laid.part, laid.frame(), laid.frame_box()
        visible = [n for n in part.nodes if part.nodes[n].get("style") != "invis"]
        if frame is not None and box is not None and part.cluster is not None:
            x1, y1, x2, y2 = _floats(frame["bb"])
            top = laid.at(x2, y2)[1]
            attrs = {**part.cluster, "bb": f"{box.x1:.2f},{box.y1:.2f},{box.x2:.2f},{box.y2:.2f}"}
            for key in ("lwidth", "lheight"):
                if key in frame:
                    attrs[key] = frame[key]
            if "lp" in frame:
                # The title centred again on the frame, as far below its top as before.
                _, y = laid.at(*_floats(frame["lp"])[:2])
                attrs["lp"] = f"{box.cx:.2f},{y + box.y2 - top:.2f}"
            lines.append(f"\tsubgraph {quote('cluster_' + part.name)} {{")
            lines.append(f"\t\tgraph [{attr_list(attrs)}];")
            lines += [_node_line(n, part.nodes[n], laid, "\t\t") for n in part.members
                      if n in visible]
            lines.append("\t}")
            visible = [n for n in visible if n not in part.members]
        lines += [_node_line(n, part.nodes[n], laid) for n in visible]
        lines += _edge_lines(laid)
    lines += [_node_line(n, a, base) for n, a in base.part.nodes.items()
              if n not in stand_ins and a.get("style") != "invis"]
    lines += _edge_lines(base)
    lines += [f"\t{x}" for x in extra]
    lines.append("}")
    return "\n".join(lines) + "\n"
