"""A lineage graph drawn as SVG on the server: layered by distance from the root node.

Hand-written on purpose: no graph-layout library is vendored, the page's strict
Content-Security-Policy rules out loading one from a CDN, and the graphs a version page
shows are small (a bounded walk up and down from one version). Sources and ancestors go
left of the root, descendants right; each layer is one column, ordered to keep edges
short. Every label and link is escaped here, because the result is marked safe for the
template. The SVG has no scripts and no ``style`` attributes (the CSP forbids inline
styles): its look comes from classes in ``app.css``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from markupsafe import Markup, escape

from modelworks.data.schemas import LineageNodeOut, LineageOut

NODE_W = 210
NODE_H = 40
COL_GAP = 96  # horizontal room for the edges (and their relation labels) between layers
ROW_GAP = 22
PAD = 16
MAX_LABEL = 24  # characters drawn in a node; the full label is in its <title>

Key = tuple[str, str]
Href = Callable[[LineageNodeOut], str | None]


@dataclass(frozen=True)
class PlacedNode:
    node: LineageNodeOut
    layer: int
    x: int
    y: int
    root: bool


def _key(node: LineageNodeOut) -> Key:
    return (node.type, node.id)


def layers(graph: LineageOut) -> dict[Key, int]:
    """Each node's column: minus the longest path up to the root, or the longest path down.

    Longest (not shortest) paths so that every edge points right even when a node is both
    a parent and a grandparent of another (an append's previous version and its source).
    Relaxation stops after one pass per node, so a cycle in bad data cannot loop forever.
    """
    nodes = {_key(n) for n in graph.nodes} | {_key(graph.root)}
    edges = [(_key(e.parent), _key(e.child)) for e in graph.edges]
    root = _key(graph.root)
    up: dict[Key, int] = {root: 0}
    down: dict[Key, int] = {root: 0}
    for _ in range(len(nodes)):
        changed = False
        for parent, child in edges:
            if child in up and up.get(parent, -1) < up[child] + 1:
                up[parent] = up[child] + 1
                changed = True
            if parent in down and down.get(child, -1) < down[parent] + 1:
                down[child] = down[parent] + 1
                changed = True
        if not changed:
            break
    placed: dict[Key, int] = {root: 0}
    for key in nodes - {root}:
        if key in up:
            placed[key] = -up[key]
        elif key in down:
            placed[key] = down[key]
    # Nodes neither above nor below the root (not from LineageService.walk, but possible in
    # a hand-made graph) go next to a placed neighbour, or leftmost.
    for _ in range(len(nodes)):
        missing = nodes - placed.keys()
        if not missing:
            break
        for parent, child in edges:
            if parent in placed and child in missing:
                placed[child] = placed[parent] + 1
            elif child in placed and parent in missing:
                placed[parent] = placed[child] - 1
    if nodes - placed.keys():
        leftmost = min(placed.values()) - 1
        for key in nodes - placed.keys():
            placed[key] = leftmost
    return placed


def layout(graph: LineageOut) -> list[PlacedNode]:
    """Positions of the nodes: one column per layer, rows ordered by their neighbours' rows."""
    by_key = {_key(n): n for n in graph.nodes}
    by_key.setdefault(_key(graph.root), graph.root)
    layer_of = layers(graph)
    columns: dict[int, list[Key]] = defaultdict(list)
    for key, layer in layer_of.items():
        columns[layer].append(key)
    neighbours: dict[Key, list[Key]] = defaultdict(list)
    for e in graph.edges:
        neighbours[_key(e.child)].append(_key(e.parent))
        neighbours[_key(e.parent)].append(_key(e.child))
    row: dict[Key, float] = {}
    first = min(columns)
    for layer in sorted(columns):
        keys = columns[layer]

        def rank(key: Key) -> tuple[float, str, str]:
            # Barycentre of the already placed neighbours (the column to the left), so
            # edges cross less; then the label for a stable order.
            seen = [row[k] for k in neighbours[key] if k in row]
            centre = sum(seen) / len(seen) if seen else 0.0
            return (centre, by_key[key].label, by_key[key].id)

        keys.sort(key=rank)
        for i, key in enumerate(keys):
            row[key] = i
    tallest = max(len(keys) for keys in columns.values())
    out: list[PlacedNode] = []
    for layer in sorted(columns):
        keys = columns[layer]
        # Centre short columns against the tallest one.
        offset = (tallest - len(keys)) * (NODE_H + ROW_GAP) / 2
        for i, key in enumerate(keys):
            out.append(
                PlacedNode(
                    node=by_key[key],
                    layer=layer,
                    x=PAD + (layer - first) * (NODE_W + COL_GAP),
                    y=round(PAD + offset + i * (NODE_H + ROW_GAP)),
                    root=key == _key(graph.root),
                )
            )
    return out


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _css_token(value: str) -> str:
    """A node type as a class-name suffix (types are ours, but never trust text in markup)."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value)[:40] or "other"


def render_svg(graph: LineageOut, href: Href) -> Markup:
    """The graph as an ``<svg>`` element; ``href(node)`` is a node's page, or None."""
    placed = layout(graph)
    where = {_key(p.node): p for p in placed}
    width = max(p.x for p in placed) + NODE_W + PAD
    height = max(p.y for p in placed) + NODE_H + PAD
    parts: list[str] = [
        f'<svg class="lineage-graph" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Lineage of {escape(graph.root.label)}">',
        "<defs>"
        '<marker id="lineage-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="lineage-arrowhead"/></marker>'
        "</defs>",
    ]
    for e in graph.edges:
        a, b = where.get(_key(e.parent)), where.get(_key(e.child))
        if a is None or b is None:
            continue
        x1, y1 = a.x + NODE_W, a.y + NODE_H / 2
        x2, y2 = b.x, b.y + NODE_H / 2
        bend = max(40.0, abs(x2 - x1) / 2)
        path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
        parts.append(
            f'<g class="lineage-edge" data-relation="{escape(e.relation)}">'
            f'<path d="{path}" marker-end="url(#lineage-arrow)"/>'
            f"<title>{escape(e.parent.label)} → {escape(e.child.label)} ({escape(e.relation)})"
            "</title>"
            f'<text x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 5}" text-anchor="middle">'
            f"{escape(e.relation.replace('_', ' '))}</text></g>"
        )
    for p in placed:
        classes = f"lineage-node lineage-{_css_token(p.node.type)}" + (
            " lineage-root" if p.root else ""
        )
        box = (
            f'<rect x="{p.x}" y="{p.y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{p.x + 10}" y="{p.y + 16}" class="lineage-type">'
            f"{escape(p.node.type.replace('_', ' '))}</text>"
            f'<text x="{p.x + 10}" y="{p.y + 32}" class="lineage-label">'
            f"{escape(_short(p.node.label))}</text>"
            f"<title>{escape(p.node.label)}</title>"
        )
        link = href(p.node)
        if link and not p.root:
            box = f'<a href="{escape(link)}">{box}</a>'
        parts.append(
            f'<g class="{classes}" data-node-type="{escape(p.node.type)}" '
            f'data-label="{escape(p.node.label)}">{box}</g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  # every interpolated value is escaped above
