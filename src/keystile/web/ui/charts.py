"""Request volume as an inline SVG bar chart, drawn on the server (no script, no
library; colours as presentation attributes, which the page's CSP allows).

Pure: rows in, markup out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from markupsafe import Markup, escape

HOUR = 3600
DAY = 86400
RANGES = {"24h": (DAY, HOUR), "7d": (7 * DAY, DAY), "30d": (30 * DAY, DAY),
          "90d": (90 * DAY, DAY)}  # fmt: skip  # range -> (span, bucket)
ALLOWED, DENIED = "#2f5bd3", "#d9534f"


def range_of(name: str | None) -> tuple[str, float, int]:
    """(the range's name, its start, its bucket size); unknown names read as 7d."""
    key = name if name in RANGES else "7d"
    span, bucket = RANGES[key]
    now = time.time()
    start = (now - span) // bucket * bucket + bucket
    return key, float(start), bucket


def buckets(
    rows: Iterable[tuple[int, str, int]], start: float, bucket: int, now: float | None = None
) -> list[tuple[int, int, int]]:
    """(bucket start, allowed, denied) for every bucket from ``start`` to now, from
    (hour, outcome, count) rows."""
    end = time.time() if now is None else now
    first = int(start // bucket * bucket)
    slots = {at: [0, 0] for at in range(first, int(end) + 1, bucket)}
    for hour, outcome, count in rows:
        at = hour // bucket * bucket
        if at in slots:
            slots[at][0 if outcome == "allow" else 1] += count
    return [(at, ok, bad) for at, (ok, bad) in sorted(slots.items())]


def _label(at: int, bucket: int) -> str:
    fmt = "%H:00" if bucket < DAY else "%b %d"
    return time.strftime(fmt, time.gmtime(at))


def volume_svg(series: list[tuple[int, int, int]], bucket: int, title: str) -> Markup:
    """Stacked bars (allowed below, denied above) with a few axis labels."""
    width, height, left, bottom = 640, 180, 40, 22
    plot_w, plot_h = width - left - 8, height - bottom - 10
    peak = max((ok + bad for _, ok, bad in series), default=0) or 1
    step = plot_w / max(len(series), 1)
    total_ok = sum(ok for _, ok, _ in series)
    total_bad = sum(bad for _, _, bad in series)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}: {total_ok} allowed, {total_bad} denied" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{10 + plot_h}" x2="{width - 8}" y2="{10 + plot_h}" '
        'stroke="#d8dde4"/>',
        f'<text x="{left - 6}" y="16" text-anchor="end" font-size="11" fill="#5b6573">'
        f"{peak}</text>",
        f'<text x="{left - 6}" y="{10 + plot_h}" text-anchor="end" font-size="11" '
        'fill="#5b6573">0</text>',
    ]
    every = max(1, len(series) // 6)
    for i, (at, ok, bad) in enumerate(series):
        x = left + i * step + step * 0.15
        w = max(step * 0.7, 1)
        h_ok, h_bad = plot_h * ok / peak, plot_h * bad / peak
        y_ok = 10 + plot_h - h_ok
        tip = f"{_label(at, bucket)}: {ok} allowed, {bad} denied"
        parts.append(f"<g><title>{escape(tip)}</title>")
        if ok:
            parts.append(
                f'<rect x="{x:.1f}" y="{y_ok:.1f}" width="{w:.1f}" '
                f'height="{h_ok:.1f}" fill="{ALLOWED}"/>'
            )
        if bad:
            parts.append(
                f'<rect x="{x:.1f}" y="{y_ok - h_bad:.1f}" width="{w:.1f}" '
                f'height="{h_bad:.1f}" fill="{DENIED}"/>'
            )
        parts.append("</g>")
        if i % every == 0:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
                f'font-size="11" fill="#5b6573">{_label(at, bucket)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()
