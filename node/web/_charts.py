"""Small charts drawn on the server as SVG: a bar chart and a line chart of a
series of (label, value) points.

The markup is built here, so every label and title is escaped here; the
result is `Markup` a template can place as it is. Each chart is one
``<svg class="chart" role="img">`` with a fixed viewBox (CSS scales it), a
``<title>`` and an ``aria-label`` that sum the data up; pages put the data in
a visually hidden table next to it as well. Colours are presentation
attributes: the CSP allows no inline style.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 100, 12, 14, 34  # room for values such as 0.0000075 SOL
MAX_POINTS = 400  # a longer series keeps its newest points: a chart is no table
MAX_LABELS = 8  # x-axis labels drawn; every point keeps its own <title>
MAX_LABEL_CHARS = 40
MAX_BAR = 48.0  # a bar's width at most, so that a few points do not make slabs
BAR = "#1f5f8b"
AXIS = "#8c959f"
GRID = "#d0d7de"

Series = Sequence[tuple[str, float]]
Format = Callable[[float], str]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _points(series: Series) -> list[tuple[str, float]]:
    kept = list(series)[-MAX_POINTS:]
    return [(str(label)[:MAX_LABEL_CHARS], max(float(value), 0.0)) for label, value in kept]


def summary(title: str, series: Series, fmt: Format = _number) -> str:
    """One sentence saying what the chart shows (plain text, not escaped)."""
    points = _points(series)
    if not points:
        return f"{title}: no data yet."
    top_label, top = max(points, key=lambda p: p[1])
    total = sum(value for _, value in points)
    return (
        f"{title}: {len(points)} point{'' if len(points) == 1 else 's'} "
        f"from {points[0][0]} to {points[-1][0]}; "
        f"highest {fmt(top)} at {top_label}; total {fmt(total)}."
    )


def _frame(title: str, series: Series, fmt: Format, body: list[str]) -> Markup:
    label = summary(title, series, fmt)
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg" focusable="false">'
        f"<title>{escape(title)}</title>"
    )
    return Markup("".join([head, *body, "</svg>"]))


def _axes(points: list[tuple[str, float]], fmt: Format, top: float) -> list[str]:
    """Grid lines with their values on the left, and some x labels at the bottom."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out: list[str] = []
    for step in range(5):
        value = top * step / 4
        y = TOP + plot_h - plot_h * step / 4
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
            f'stroke="{GRID if step else AXIS}" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(value))}</text>'
        )
    every = max(1, -(-len(points) // MAX_LABELS))
    slot = plot_w / len(points)
    for i, (label, _) in enumerate(points):
        if i % every and i != len(points) - 1:
            continue
        x = LEFT + slot * (i + 0.5)
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    return out


def _empty() -> list[str]:
    return [
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle">No data yet</text>'
    ]


def _top(points: list[tuple[str, float]]) -> float:
    highest = max((value for _, value in points), default=0.0)
    return highest if highest > 0 else 1.0


def _plot(points: list[tuple[str, float]], fmt: Format) -> tuple[float, float, float, list[str]]:
    """The scale's top, the plot's height, the width of one point's slot, and the axes."""
    top = _top(points)
    slot = (WIDTH - LEFT - RIGHT) / len(points)
    return top, HEIGHT - TOP - BOTTOM, slot, _axes(points, fmt, top)


def bar_chart(title: str, series: Series, fmt: Format = _number) -> Markup:
    """Bars of ``series`` (oldest first), each with a tooltip ``label: value``."""
    points = _points(series)
    if not points:
        return _frame(title, points, fmt, _empty())
    top, plot_h, slot, body = _plot(points, fmt)
    width = min(slot * 0.7, MAX_BAR)
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = LEFT + slot * (i + 0.5) - width / 2
        body.append(
            f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}" fill="{BAR}"><title>{escape(label)}: {escape(fmt(value))}'
            "</title></rect>"
        )
    return _frame(title, points, fmt, body)


def line_chart(title: str, series: Series, fmt: Format = _number) -> Markup:
    """A line through ``series`` (oldest first), a dot with a tooltip at each point."""
    points = _points(series)
    if not points:
        return _frame(title, points, fmt, _empty())
    top, plot_h, slot, body = _plot(points, fmt)
    xy = [
        (LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * value / top)
        for i, (_, value) in enumerate(points)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    body.append(f'<polyline points="{path}" fill="none" stroke="{BAR}" stroke-width="2"/>')
    for (label, value), (x, y) in zip(points, xy, strict=True):
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{BAR}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></circle>"
        )
    return _frame(title, points, fmt, body)


def daily(
    points: Iterable[tuple[float, float]], max_days: int = 60, today: datetime.date | None = None
) -> list[tuple[str, float]]:
    """``(unix time, value)`` pairs summed per UTC day: every day from the first one
    with a value (at most ``max_days`` back) to today, oldest first; [] if none."""
    totals: dict[datetime.date, float] = {}
    for ts, value in points:
        day = datetime.datetime.fromtimestamp(ts, datetime.UTC).date()
        totals[day] = totals.get(day, 0.0) + value
    if not totals:
        return []
    last = max(today or datetime.datetime.now(datetime.UTC).date(), max(totals))
    first = max(min(totals), last - datetime.timedelta(days=max_days - 1))
    days = (last - first).days + 1
    return [
        (day.isoformat(), totals.get(day, 0.0))
        for day in (first + datetime.timedelta(days=i) for i in range(days))
    ]
