"""The compare report's plots as hand-written SVG: a line chart, a bar chart and a binned
scatter (density) plot.

Every function returns text; the same input always gives the same bytes (fixed colours, numbers
rounded to two decimals in coordinates, no timestamps), so reports can be diffed between runs.
Each data mark carries its value (a ``<title>`` or a label), so tests read a plot's data back.
"""

from __future__ import annotations

import html
import math
from typing import List, Sequence, Tuple

from recsys.compare.text import fmt

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")  # BigQuery ML, recsys, then others
WIDTH, HEIGHT = 640, 380
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 55


def nice_ticks(low: float, high: float, count: int = 5) -> List[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(low / step - 1e-9) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _n(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class _Frame:
    """Plot area with linear axes."""

    def __init__(self, x_range: Tuple[float, float], y_range: Tuple[float, float],
                 width: int = WIDTH, height: int = HEIGHT):
        self.x0, self.x1 = _padded(*x_range)
        self.y0, self.y1 = _padded(*y_range)
        self.width, self.height = width, height
        self.pw, self.ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def x(self, value: float) -> float:
        return LEFT + (value - self.x0) / (self.x1 - self.x0) * self.pw

    def y(self, value: float) -> float:
        return TOP + self.ph - (value - self.y0) / (self.y1 - self.y0) * self.ph

    def axes(self, title: str, xlabel: str, ylabel: str, x_ticks: bool = True) -> List[str]:
        w, h = self.width, self.height
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
               f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
               f'<rect width="{w}" height="{h}" fill="white"/>',
               f'<text x="{_n(w / 2)}" y="22" text-anchor="middle" font-size="15">'
               f'{html.escape(title)}</text>',
               f'<rect x="{LEFT}" y="{TOP}" width="{self.pw}" height="{self.ph}" fill="none" '
               f'stroke="#444"/>']
        if x_ticks:
            for tick in nice_ticks(self.x0, self.x1):
                px = self.x(tick)
                out.append(f'<line x1="{_n(px)}" y1="{TOP + self.ph}" x2="{_n(px)}" '
                           f'y2="{TOP + self.ph + 5}" stroke="#444"/>')
                out.append(f'<text x="{_n(px)}" y="{TOP + self.ph + 18}" text-anchor="middle">'
                           f'{fmt(tick)}</text>')
        for tick in nice_ticks(self.y0, self.y1):
            py = self.y(tick)
            out.append(f'<line x1="{LEFT}" y1="{_n(py)}" x2="{LEFT + self.pw}" y2="{_n(py)}" '
                       f'stroke="#ddd"/>')
            out.append(f'<text x="{LEFT - 6}" y="{_n(py + 4)}" text-anchor="end">{fmt(tick)}</text>')
        out.append(f'<text x="{_n(LEFT + self.pw / 2)}" y="{h - 12}" text-anchor="middle">'
                   f'{html.escape(xlabel)}</text>')
        out.append(f'<text x="16" y="{_n(TOP + self.ph / 2)}" text-anchor="middle" '
                   f'transform="rotate(-90 16 {_n(TOP + self.ph / 2)})">{html.escape(ylabel)}</text>')
        return out


def _padded(low: float, high: float) -> Tuple[float, float]:
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0, 1.0
    if high <= low:
        pad = abs(low) * 0.05 or 0.5
        return low - pad, high + pad
    return low, high


def _legend(labels: Sequence[str]) -> List[str]:
    out = []
    for i, label in enumerate(labels):
        x = LEFT + 10 + i * 170
        out.append(f'<rect x="{x}" y="{TOP + 8}" width="12" height="12" '
                   f'fill="{COLORS[i % len(COLORS)]}"/>')
        out.append(f'<text x="{x + 17}" y="{TOP + 18}">{html.escape(label)}</text>')
    return out


def line_chart(series: Sequence[Tuple[str, Sequence[float], Sequence[float]]], *, title: str,
               xlabel: str, ylabel: str) -> str:
    """Lines with point markers, one per (label, xs, ys); None values are skipped."""
    points = [[(float(x), float(y)) for x, y in zip(xs, ys) if x is not None and y is not None]
              for _, xs, ys in series]
    flat = [p for line in points for p in line]
    xs = [p[0] for p in flat] or [0.0]
    ys = [p[1] for p in flat] or [0.0]
    frame = _Frame((min(xs), max(xs)), (min(ys), max(ys)))
    out = frame.axes(title, xlabel, ylabel)
    for i, line in enumerate(points):
        color = COLORS[i % len(COLORS)]
        if len(line) > 1:
            path = " ".join(f"{_n(frame.x(x))},{_n(frame.y(y))}" for x, y in line)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="2"/>')
        for x, y in line:
            out.append(f'<circle cx="{_n(frame.x(x))}" cy="{_n(frame.y(y))}" r="3" '
                       f'fill="{color}"><title>{fmt(x)}: {fmt(y)}</title></circle>')
    out += _legend([label for label, _, _ in series])
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bar_chart(categories: Sequence[str], values: Sequence[float], *, title: str, xlabel: str,
              ylabel: str) -> str:
    """One bar per category, its value written above it (a histogram of counts)."""
    top = max([float(v) for v in values] + [1.0])
    frame = _Frame((0.0, 1.0), (0.0, top * 1.08))
    out = frame.axes(title, xlabel, ylabel, x_ticks=False)
    n = max(len(categories), 1)
    slot = frame.pw / n
    for i, (cat, value) in enumerate(zip(categories, values)):
        x = LEFT + i * slot + slot * 0.15
        y = frame.y(float(value))
        out.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(slot * 0.7)}" '
                   f'height="{_n(TOP + frame.ph - y)}" fill="{COLORS[0]}"/>')
        out.append(f'<text x="{_n(x + slot * 0.35)}" y="{_n(y - 4)}" text-anchor="middle">'
                   f'{fmt(value)}</text>')
        out.append(f'<text x="{_n(x + slot * 0.35)}" y="{TOP + frame.ph + 18}" '
                   f'text-anchor="middle">{html.escape(str(cat))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def density(counts: Sequence[Sequence[int]], x_range: Tuple[float, float],
            y_range: Tuple[float, float], *, title: str, xlabel: str, ylabel: str) -> str:
    """A binned scatter plot: ``counts[i][j]`` points in x bin i, y bin j, shaded on a log scale,
    with the diagonal y = x for reference."""
    frame = _Frame(x_range, y_range)
    out = frame.axes(title, xlabel, ylabel)
    nx = len(counts)
    ny = len(counts[0]) if nx else 0
    peak = max([c for row in counts for c in row] + [1])
    bw = (frame.x1 - frame.x0) / max(nx, 1)
    bh = (frame.y1 - frame.y0) / max(ny, 1)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            if count <= 0:
                continue
            shade = 0.15 + 0.85 * math.log1p(count) / math.log1p(peak)
            x, y = frame.x(frame.x0 + i * bw), frame.y(frame.y0 + (j + 1) * bh)
            out.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(frame.pw / nx)}" '
                       f'height="{_n(frame.ph / ny)}" fill="{COLORS[0]}" '
                       f'fill-opacity="{shade:.3f}"><title>{count:,}</title></rect>')
    low, high = max(frame.x0, frame.y0), min(frame.x1, frame.y1)
    if low < high:
        out.append(f'<line x1="{_n(frame.x(low))}" y1="{_n(frame.y(low))}" '
                   f'x2="{_n(frame.x(high))}" y2="{_n(frame.y(high))}" stroke="{COLORS[1]}" '
                   f'stroke-dasharray="5,4"/>')
    out.append(f'<text x="{LEFT + frame.pw - 6}" y="{TOP + 16}" text-anchor="end">'
               f'darker = more points (log scale, max {peak:,}); dashed: y = x</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
