"""Server-side SVG charts for the operator console: line chart, bar chart, gauge.

Why hand-written SVG rather than a chart library: the pages run under a strict content security
policy (no script, no inline style) and must work offline, so a JavaScript library is out; the
SVG-rendering Python packages (pygal and the like) emit `<script>` and inline `style` for their
tooltips and would be blocked. What the console needs is small: axes with "nice" ticks, a
title, axis labels, a legend, a `<title>` tooltip per point, and no styling outside SVG
presentation attributes (which the policy allows). Every mark carries `data-value` so a test can
read the plotted number back.

All text is XML-escaped; the charts scale with their container (`viewBox`, `width="100%"`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup

__all__ = ["bar_chart", "fmt_number", "gauge", "line_chart", "nice_ticks"]

# colour-blind-safe palette (Okabe & Ito)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
_FONT = 'font-family="system-ui, sans-serif"'
_AXIS = "#555"
_GRID = "#e3e3e3"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] with about `n` steps of 1, 2, 2.5 or 5 x 10^k."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("nice_ticks: lo and hi must be finite")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw * (1 - 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    end = math.ceil(hi / step - 1e-9) * step
    count = round((end - start) / step)
    return [round(start + i * step, 12) for i in range(count + 1)]


def fmt_number(v: float, digits: int = 3) -> str:
    """A short human-readable number: 1,234 / 12.5 / 0.0123 / 3.3e-05 (never 17 digits)."""
    if v is None or not math.isfinite(v):
        return "–" if v is None or math.isnan(v) else ("∞" if v > 0 else "-∞")
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1e-3:
        s = f"{v:.{digits}g}"
        return s if "e" not in s else f"{v:,.0f}"
    return f"{v:.{digits}g}".replace("e-0", "e-")  # 3.33e-5, 1e-6


def _tx(
    x: float, y: float, text: str, *, anchor: str = "middle", size: int = 11, **attrs: str
) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" {_FONT}'
        f"{extra}>{escape(text)}</text>"
    )


def _open(width: int, height: int, title: str, desc: str, kind: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" class="chart" data-chart={quoteattr(kind)} '
        f'aria-label={quoteattr(title)} preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        _tx(width / 2, 18, title, size=14, font_weight="600"),
    ]


def _empty(parts: list[str], width: int, height: int, note: str) -> Markup:
    parts.append(_tx(width / 2, height / 2, note, size=12, fill=_AXIS))
    parts.append("</svg>")
    return Markup("".join(parts))


def _y_axis(
    parts: list[str], ticks: list[float], left: float, right: float, y_of: object, label: str
) -> None:
    for t in ticks:
        y = y_of(t)  # type: ignore[operator]
        parts.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>'
        )
        parts.append(_tx(left - 6, y + 4, fmt_number(t), anchor="end", size=10, fill=_AXIS))
    if label:
        mid = (y_of(ticks[0]) + y_of(ticks[-1])) / 2  # type: ignore[operator]
        parts.append(
            f'<text x="14" y="{mid:.1f}" text-anchor="middle" font-size="11" {_FONT} '
            f'fill="{_AXIS}" transform="rotate(-90 14 {mid:.1f})">{escape(label)}</text>'
        )


def line_chart(
    series: Mapping[str, Sequence[float]],
    x_labels: Sequence[str],
    *,
    title: str,
    y_label: str = "",
    x_label: str = "",
    width: int = 640,
    height: int = 280,
    empty_note: str = "no data yet",
) -> Markup:
    """Lines over a shared categorical x axis (e.g. one point per day).

    Args:
        series: name -> one value per x label (NaN leaves a gap).
        x_labels: the x axis categories, in order.
        title: the chart's title (also its accessible name).
        y_label: the y axis label.
        x_label: the x axis label.
        width: viewBox width.
        height: viewBox height.
        empty_note: shown when there is nothing to plot.
    """
    for name, values in series.items():
        if len(values) != len(x_labels):
            raise ValueError(
                f"line_chart: series {name!r} has {len(values)} values for {len(x_labels)} labels"
            )
    desc = f"{len(series)} series over {len(x_labels)} points"
    parts = _open(width, height, title, desc, "line")
    finite = [float(v) for vs in series.values() for v in vs if math.isfinite(float(v))]
    if not finite or not x_labels:
        return _empty(parts, width, height, empty_note)
    legend_rows = -(-len(series) // 4)
    left, right = 58.0, width - 12.0
    top, bottom = 34.0 + 12 * legend_rows + 10, height - (44.0 if x_label else 30.0)
    ticks = nice_ticks(min(0.0, min(finite)), max(finite))
    y0, y1 = ticks[0], ticks[-1]

    def y_of(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    n = len(x_labels)

    def x_of(i: int) -> float:
        return left + (right - left) * (i / (n - 1) if n > 1 else 0.5)

    _y_axis(parts, ticks, left, right, y_of, y_label)
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{_AXIS}"/>')
    every = max(1, math.ceil(n / 8))  # at most ~8 x labels so they never overlap
    for i, lab in enumerate(x_labels):
        # the last label always shows; a regular one too close before it does not
        if i == n - 1 or (i % every == 0 and n - 1 - i >= max(every // 2, 1)):
            edge = "end" if i == n - 1 and n > 1 else "start" if i == 0 and n > 1 else "middle"
            parts.append(_tx(x_of(i), bottom + 14, lab, anchor=edge, size=10, fill=_AXIS))
    if x_label:
        parts.append(_tx((left + right) / 2, height - 8, x_label, size=11, fill=_AXIS))
    for s, (name, values) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        segs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if math.isfinite(float(v)):
                segs[-1].append(f"{x_of(i):.1f},{y_of(float(v)):.1f}")
            elif segs[-1]:
                segs.append([])
        parts.append(f'<g class="series" data-series={quoteattr(name)}>')
        for seg in segs:
            if len(seg) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(seg)}"/>'
                )
        for i, v in enumerate(values):
            if math.isfinite(float(v)):
                parts.append(
                    f'<circle cx="{x_of(i):.1f}" cy="{y_of(float(v)):.1f}" r="2.5" fill="{colour}" '
                    f'data-value="{float(v):g}"><title>{escape(name)}, {escape(x_labels[i])}: '
                    f"{escape(fmt_number(float(v)))}</title></circle>"
                )
        parts.append("</g>")
        # legend, left to right under the title
        lx = left + (s % 4) * ((right - left) / 4)
        ly = 34 + (s // 4) * 12
        parts.append(
            f'<rect x="{lx:.1f}" y="{ly - 8:.1f}" width="10" height="10" fill="{colour}"/>'
        )
        parts.append(_tx(lx + 14, ly + 1, name, anchor="start", size=10))
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    x_label: str = "",
    intervals: Sequence[tuple[float, float] | None] | None = None,
    width: int = 640,
    bar_height: int = 22,
    empty_note: str = "no data yet",
    value_format: str = "",
) -> Markup:
    """Horizontal bars (long labels stay readable at phone width), optional interval whiskers.

    Args:
        labels: one per bar.
        values: one per bar (NaN: no bar, "–").
        title: the chart's title.
        x_label: the value axis label.
        intervals: per bar an optional (low, high) drawn as a whisker (e.g. a 95% CI).
        width: viewBox width.
        bar_height: height of one bar's row.
        empty_note: shown when there is nothing to plot.
        value_format: a format spec for the value printed after each bar ("" = fmt_number).
    """
    if len(labels) != len(values):
        raise ValueError(f"bar_chart: {len(labels)} labels for {len(values)} values")
    if intervals is not None and len(intervals) != len(values):
        raise ValueError(f"bar_chart: {len(intervals)} intervals for {len(values)} values")
    top = 40.0
    height = int(top + max(len(labels), 1) * bar_height + (44 if x_label else 30))
    parts = _open(width, height, title, f"{len(labels)} bars", "bar")
    finite = [float(v) for v in values if math.isfinite(float(v))]
    for iv in intervals or []:
        if iv is not None:
            finite += [float(x) for x in iv if math.isfinite(float(x))]
    if not finite:
        return _empty(parts, width, height, empty_note)
    longest = max(len(str(lab)) for lab in labels)
    left = float(min(max(60, 7 * longest + 12), width * 0.45))
    right = width - 60.0
    bottom = top + len(labels) * bar_height
    ticks = nice_ticks(min(0.0, min(finite)), max(finite))
    x0, x1 = ticks[0], ticks[-1]

    def x_of(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (right - left)

    for t in ticks:
        x = x_of(t)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{_GRID}"/>')
        parts.append(_tx(x, bottom + 14, fmt_number(t), size=10, fill=_AXIS))
    if x_label:
        parts.append(_tx((left + right) / 2, height - 8, x_label, size=11, fill=_AXIS))
    zero = x_of(max(x0, 0.0))
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * bar_height
        label = str(lab) if len(str(lab)) <= 40 else str(lab)[:39] + "…"
        parts.append(_tx(left - 6, y + bar_height * 0.65, label, anchor="end", size=11))
        fv = float(v)
        if not math.isfinite(fv):
            parts.append(_tx(left + 8, y + bar_height * 0.65, "–", anchor="start", size=11))
            continue
        xa, xb = sorted((zero, x_of(fv)))
        text = format(fv, value_format) if value_format else fmt_number(fv)
        parts.append(
            f'<rect class="bar" x="{xa:.1f}" y="{y + 3:.1f}" width="{max(xb - xa, 0.5):.1f}" '
            f'height="{bar_height - 6}" fill="{PALETTE[0]}" data-value="{fv:g}">'
            f"<title>{escape(str(lab))}: {escape(text)}</title></rect>"
        )
        end = xb
        iv = intervals[i] if intervals is not None else None
        if iv is not None and all(math.isfinite(float(x)) for x in iv):
            a, b = x_of(float(iv[0])), x_of(float(iv[1]))
            cy = y + bar_height / 2
            parts.append(
                f'<path d="M{a:.1f},{cy:.1f}H{b:.1f}M{a:.1f},{cy - 5:.1f}V{cy + 5:.1f}'
                f'M{b:.1f},{cy - 5:.1f}V{cy + 5:.1f}" stroke="#000" fill="none"/>'
            )
            end = max(end, b)
        parts.append(
            _tx(min(end + 4, width - 56), y + bar_height * 0.65, text, anchor="start", size=10)
        )
    parts.append(
        f'<line x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" y2="{bottom}" stroke="{_AXIS}"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def gauge(
    value: float,
    total: float,
    *,
    title: str,
    unit: str = "",
    width: int = 320,
    note: str = "",
) -> Markup:
    """A half-circle gauge of `value` out of `total` (green, amber past 50%, red past 80%).

    Args:
        value: the amount used.
        total: the whole (e.g. the privacy budget); must be > 0.
        title: the gauge's title.
        unit: the quantity's symbol or name printed with the numbers (e.g. "ε").
        width: viewBox width (the height follows).
        note: a line under the numbers.
    """
    if not (math.isfinite(total) and total > 0):
        raise ValueError(f"gauge: total must be a positive finite number, got {total!r}")
    height = int(width * 0.62) + (14 if note else 0)
    frac = 0.0 if not math.isfinite(value) else min(max(value / total, 0.0), 1.0)
    parts = _open(
        width, height, title, f"{fmt_number(value)} of {fmt_number(total)} {unit}", "gauge"
    )
    cx, cy, r, w = width / 2, width * 0.52, width * 0.36, width * 0.09

    def point(f: float) -> tuple[float, float]:
        a = math.pi * (1 - f)
        return cx + r * math.cos(a), cy - r * math.sin(a)

    x0, y0 = point(0.0)
    x1, y1 = point(1.0)
    parts.append(
        f'<path d="M{x0:.1f},{y0:.1f} A{r:.1f},{r:.1f} 0 0 1 {x1:.1f},{y1:.1f}" '
        f'stroke="{_GRID}" stroke-width="{w:.1f}" fill="none"/>'
    )
    colour = "#009E73" if frac < 0.5 else "#E69F00" if frac < 0.8 else "#D55E00"
    if frac > 0:
        xf, yf = point(frac)
        parts.append(
            f'<path class="gauge-fill" d="M{x0:.1f},{y0:.1f} '
            f'A{r:.1f},{r:.1f} 0 0 1 {xf:.1f},{yf:.1f}" '
            f'stroke="{colour}" stroke-width="{w:.1f}" fill="none" data-value="{value:g}" '
            f'data-total="{total:g}"><title>{escape(fmt_number(value))} of '
            f"{escape(fmt_number(total))} {escape(unit)}</title></path>"
        )
    sym = f"{unit} " if unit else ""
    parts.append(_tx(cx, cy - 8, f"{frac * 100:.0f}%", size=22, font_weight="600"))
    parts.append(_tx(cx, cy + 14, f"{sym}{fmt_number(value)} of {fmt_number(total)}", size=12))
    parts.append(_tx(x0, cy + 16, "0", size=10, fill=_AXIS))
    parts.append(_tx(x1, cy + 16, fmt_number(total), size=10, fill=_AXIS))
    if note:
        parts.append(_tx(cx, cy + 32, note, size=10, fill=_AXIS))
    parts.append("</svg>")
    return Markup("".join(parts))
