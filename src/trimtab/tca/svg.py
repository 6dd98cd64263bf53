"""Small inline SVG charts for the HTML report: no library, no network, no floats.

Prices and times are mapped to pixels with Decimal arithmetic (times through whole
microseconds). Every text is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from html import escape

from trimtab.domain.quotes import Quote

PIXEL = Decimal("0.1")

COLORS = {
    "bid": "#2563eb",
    "ask": "#dc2626",
    "mid": "#6b7280",
    "band": "#e5e7eb",
    "limit": "#7c3aed",
    "resting limit": "#059669",
    "marketable limit": "#d97706",
    "market": "#dc2626",
    "limit fill": "#0891b2",
    "cost": "#dc2626",
    "saving": "#059669",
    "axis": "#9ca3af",
    "grid": "#f3f4f6",
    "text": "#374151",
}


D = Decimal
_MICRO = timedelta(microseconds=1)


def px(value: Decimal | int) -> str:
    """A pixel coordinate as short text."""
    return str(Decimal(value).quantize(PIXEL, rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class PriceScale:
    """Maps prices (Decimal) to y pixels, high prices at the top."""

    low: Decimal
    high: Decimal
    top: Decimal
    bottom: Decimal

    def y(self, price: Decimal) -> Decimal:
        span = self.high - self.low
        if span <= 0:
            return (self.top + self.bottom) / 2
        return self.bottom - (price - self.low) / span * (self.bottom - self.top)

    def ticks(self, count: int = 5) -> list[Decimal]:
        span = self.high - self.low
        if span <= 0:
            return [self.low]
        step = _nice_step(span / count)
        first = (self.low / step).to_integral_value(rounding="ROUND_CEILING") * step
        out: list[Decimal] = []
        value = first
        while value <= self.high and len(out) < 20:
            out.append(value)
            value += step
        return out


def _nice_step(raw: Decimal) -> Decimal:
    """1, 2 or 5 times a power of ten, at least raw."""
    if raw <= 0:
        return Decimal(1)
    exponent = raw.adjusted()
    base = Decimal(1).scaleb(exponent)
    for factor in (1, 2, 5, 10):
        step = base * factor
        if step >= raw:
            return step
    return base * 10


@dataclass(frozen=True, slots=True)
class TimeScale:
    """Maps times to x pixels."""

    start: datetime
    end: datetime
    left: Decimal
    right: Decimal

    @property
    def micros(self) -> int:
        return max((self.end - self.start) // _MICRO, 1)

    def x(self, time: datetime) -> Decimal:
        offset = min(max((time - self.start) // _MICRO, 0), self.micros)
        return self.left + Decimal(offset) / Decimal(self.micros) * (self.right - self.left)

    def ticks(self, count: int = 6) -> list[datetime]:
        steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
        raw = self.micros / 1_000_000 / count
        step = next((s for s in steps if s >= raw), steps[-1])
        first = self.start.replace(microsecond=0)
        offset = (first.second + first.minute * 60) % step
        tick = first - timedelta(seconds=offset)
        if tick < self.start:
            tick += timedelta(seconds=step)
        out: list[datetime] = []
        while tick <= self.end and len(out) < 30:
            out.append(tick)
            tick += timedelta(seconds=step)
        return out


@dataclass(frozen=True, slots=True)
class Segment:
    """A limit price held from start to end (one attempt), labelled for the tooltip."""

    start: datetime
    end: datetime
    price: Decimal
    label: str


@dataclass(frozen=True, slots=True)
class Marker:
    """A fill: time, price, kind (colour and shape), size and a tooltip."""

    time: datetime
    price: Decimal
    kind: str
    qty: Decimal
    label: str


Point = tuple[Decimal, Decimal]
"""(x pixel, price)"""


def _step_path(points: Sequence[Point], scale: PriceScale, end_x: Decimal) -> str:
    """A step line: each price holds until the next point, the last until end_x."""
    if not points:
        return ""
    parts = [f"M{px(points[0][0])},{px(scale.y(points[0][1]))}"]
    for x_next, price_next in points[1:]:
        parts.append(f"H{px(x_next)}V{px(scale.y(price_next))}")
    if end_x > points[-1][0]:
        parts.append(f"H{px(end_x)}")
    return "".join(parts)


def price_chart(
    title: str,
    quotes: Sequence[Quote],
    segments: Sequence[Segment],
    markers: Sequence[Marker],
    start: datetime,
    end: datetime,
    *,
    events: Sequence[tuple[datetime, str]] = (),
    sampled_after: datetime | None = None,
    width: int = 1100,
    height: int = 300,
) -> str:
    """Bid, ask and mid as steps over [start, end], our limit prices as steps, fills as markers.

    sampled_after: from then on the quotes are samples (the market at the markout times),
    drawn as dots on faint dashed lines rather than as a continuous record.
    """
    left, right, top, bottom = D(70), D(width - 20), 28, height - 34
    shown = [q for q in quotes if q.bid > 0 and q.ask > 0]
    prices = [q.bid for q in shown] + [q.ask for q in shown]
    prices += [s.price for s in segments] + [m.price for m in markers]
    if not prices:
        return _empty_chart(title, width, height, "no quotes or fills recorded for this symbol")
    low, high = min(prices), max(prices)
    pad = max((high - low) * Decimal("0.08"), high * Decimal("0.00005"), Decimal("0.005"))
    prices_scale = PriceScale(low - pad, high + pad, Decimal(top), Decimal(bottom))
    times = TimeScale(start, end, left, right)
    out = [_open(width, height, title)]
    out.append(f'<text x="{px(left)}" y="16" class="chart-title">{escape(title)}</text>')
    for tick in prices_scale.ticks():
        y = px(prices_scale.y(tick))
        out.append(f'<line x1="{px(left)}" x2="{px(right)}" y1="{y}" y2="{y}" stroke="{COLORS["grid"]}"/>')
        out.append(f'<text x="{px(left - 6)}" y="{y}" class="axis-label" text-anchor="end" '
                   f'dominant-baseline="middle">{escape(_price_text(tick))}</text>')
    for tick_time in times.ticks():
        x = px(times.x(tick_time))
        out.append(f'<line x1="{x}" x2="{x}" y1="{top}" y2="{bottom}" stroke="{COLORS["grid"]}"/>')
        out.append(f'<text x="{x}" y="{bottom + 16}" class="axis-label" text-anchor="middle">'
                   f'{tick_time.strftime("%H:%M:%S")}</text>')
    out.append(f'<line x1="{px(left)}" x2="{px(right)}" y1="{bottom}" y2="{bottom}" '
               f'stroke="{COLORS["axis"]}"/>')
    recorded = [q for q in shown if sampled_after is None or q.timestamp <= sampled_after]
    samples = [q for q in shown if sampled_after is not None and q.timestamp > sampled_after]
    if recorded:
        cut = times.x(sampled_after) if sampled_after is not None and samples else times.x(end)
        out.append(_quote_lines(recorded, times, prices_scale, cut))
        if samples:
            out.append(_quote_samples([recorded[-1], *samples], times, prices_scale, cut, times.x(end)))
            out.append(f'<text x="{px(times.x(end) - 4)}" y="{top + 12}" class="event-label" '
                       'text-anchor="end">after the order: the market at 1, 10 and 60 s after each fill'
                       "</text>")
    elif samples:
        out.append(_quote_samples(samples, times, prices_scale, times.x(samples[0].timestamp), times.x(end)))
    if len(events) >= 2:
        # Shade the time the order was worked: the chart goes on for the markouts.
        x1, x2 = times.x(events[0][0]), times.x(events[-1][0])
        out.append(f'<rect x="{px(x1)}" y="{top}" width="{px(max(x2 - x1, D(1)))}" height="{bottom - top}" '
                   f'fill="{COLORS["limit"]}" opacity="0.06"><title>order worked</title></rect>')
    last_label = D(-1000)
    for when, label in events:
        x_value = times.x(when)
        x = px(x_value)
        out.append(f'<line x1="{x}" x2="{x}" y1="{top}" y2="{bottom}" stroke="{COLORS["axis"]}" '
                   f'stroke-dasharray="2 3"><title>{escape(label)}</title></line>')
        if x_value - last_label >= 30:
            out.append(f'<text x="{x}" y="{top - 2}" class="event-label" text-anchor="middle">'
                       f"{escape(label)}</text>")
            last_label = x_value
    for segment in segments:
        x1, x2 = times.x(segment.start), times.x(segment.end)
        y = px(prices_scale.y(segment.price))
        out.append(f'<line x1="{px(x1)}" x2="{px(max(x2, x1 + D("1.5")))}" y1="{y}" y2="{y}" '
                   f'stroke="{COLORS["limit"]}" stroke-width="3" stroke-linecap="round">'
                   f'<title>{escape(segment.label)}</title></line>')
    largest = max((m.qty for m in markers), default=Decimal(1))
    for marker in markers:
        out.append(_marker(marker, times.x(marker.time), prices_scale.y(marker.price), largest))
    out.append(_legend(right, height))
    out.append("</svg>")
    return "".join(out)


def _quote_lines(quotes: Sequence[Quote], times: TimeScale, scale: PriceScale, end_x: Decimal) -> str:
    """The recorded quotes: a shaded spread, bid and ask as steps, the mid dashed."""
    bids = [(times.x(q.timestamp), q.bid) for q in quotes]
    asks = [(times.x(q.timestamp), q.ask) for q in quotes]
    mids = [(times.x(q.timestamp), q.mid) for q in quotes]
    out = [f'<path d="{_band_path(bids, asks, scale, end_x)}" fill="{COLORS["band"]}" opacity="0.7" '
           'stroke="none"/>']
    for name, points in (("ask", asks), ("bid", bids)):
        out.append(f'<path d="{_step_path(points, scale, end_x)}" fill="none" '
                   f'stroke="{COLORS[name]}" stroke-width="1.4"><title>{name}</title></path>')
    out.append(f'<path d="{_step_path(mids, scale, end_x)}" fill="none" stroke="{COLORS["mid"]}" '
               f'stroke-width="1" stroke-dasharray="4 3"><title>mid</title></path>')
    return "".join(out)


def _quote_samples(
    quotes: Sequence[Quote], times: TimeScale, scale: PriceScale, start_x: Decimal, end_x: Decimal
) -> str:
    """Sampled quotes: faint dashed steps between them, a dot at each sample of bid and ask."""
    out = []
    for name in ("ask", "bid"):
        points = [(max(times.x(q.timestamp), start_x), q.ask if name == "ask" else q.bid) for q in quotes]
        out.append(f'<path d="{_step_path(points, scale, end_x)}" fill="none" stroke="{COLORS[name]}" '
                   'stroke-width="1" stroke-dasharray="2 4" opacity="0.55"/>')
        for quote, (x, price) in zip(quotes[1:], points[1:], strict=True):
            out.append(f'<circle cx="{px(x)}" cy="{px(scale.y(price))}" r="2.5" fill="{COLORS[name]}">'
                       f'<title>{name} {escape(_price_text(price))} at '
                       f'{quote.timestamp.strftime("%H:%M:%S.%f")[:-3]}</title></circle>')
    return "".join(out)


def _band_path(bids: Sequence[Point], asks: Sequence[Point], scale: PriceScale, end_x: Decimal) -> str:
    """The area between the ask steps (forward) and the bid steps (back)."""
    parts = [_step_path(asks, scale, end_x), f"V{px(scale.y(bids[-1][1]))}"]
    for index in range(len(bids) - 1, 0, -1):
        parts.append(f"H{px(bids[index][0])}V{px(scale.y(bids[index - 1][1]))}")
    parts.append(f"H{px(bids[0][0])}Z")
    return "".join(parts)


def _marker(marker: Marker, x: Decimal, y: Decimal, largest: Decimal) -> str:
    color = COLORS.get(marker.kind, COLORS["limit fill"])
    ratio = marker.qty / largest if largest > 0 else D(1)
    radius = D("3.5") + D("4.5") * min(ratio, D(1))
    title = f"<title>{escape(marker.label)}</title>"
    cx, cy = px(x), px(y)
    if marker.kind == "market":
        r = radius + 1
        points = f"{cx},{px(y - r)} {px(x - r)},{px(y + r)} {px(x + r)},{px(y + r)}"
        return f'<polygon points="{points}" fill="{color}" stroke="white" stroke-width="1">{title}</polygon>'
    if marker.kind == "marketable limit":
        r = radius + 1
        points = f"{cx},{px(y - r)} {px(x + r)},{cy} {cx},{px(y + r)} {px(x - r)},{cy}"
        return f'<polygon points="{points}" fill="{color}" stroke="white" stroke-width="1">{title}</polygon>'
    return (f'<circle cx="{cx}" cy="{cy}" r="{px(radius)}" fill="{color}" stroke="white" '
            f'stroke-width="1">{title}</circle>')


def _legend(right: Decimal, height: int) -> str:
    items = [("bid", "line"), ("ask", "line"), ("mid", "dash"), ("limit", "thick"),
             ("resting limit", "dot"), ("marketable limit", "dot"), ("market", "dot")]
    labels = {"limit": "our limit", "resting limit": "passive fill", "marketable limit": "marketable fill",
              "market": "market fill"}
    x = right - 640
    y = height - 8
    out = ['<g class="legend">']
    for name, style in items:
        color = COLORS[name]
        if style == "dot":
            out.append(f'<circle cx="{px(x + 5)}" cy="{y - 4}" r="4" fill="{color}"/>')
        else:
            dash = ' stroke-dasharray="4 3"' if style == "dash" else ""
            width = "3" if style == "thick" else "1.5"
            out.append(f'<line x1="{px(x)}" x2="{px(x + 14)}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                       f'stroke-width="{width}"{dash}/>')
        label = labels.get(name, name)
        out.append(f'<text x="{px(x + 18)}" y="{y}" class="legend-label">{escape(label)}</text>')
        x += 22 + D("6.2") * len(label)
    out.append("</g>")
    return "".join(out)


def _open(width: int, height: int, title: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
            f'preserveAspectRatio="xMidYMid meet">')


def _empty_chart(title: str, width: int, height: int, message: str) -> str:
    return (_open(width, height, title)
            + f'<text x="70" y="16" class="chart-title">{escape(title)}</text>'
            + f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" class="axis-label">'
            + f"{escape(message)}</text></svg>")


def _price_text(price: Decimal) -> str:
    return f"{price:.2f}" if price >= 1 else f"{price:.4f}"


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, Decimal | None, str]],
    *,
    unit: str = "bp",
    width: int = 520,
    row: int = 24,
    positive_is_good: bool = False,
) -> str:
    """Horizontal bars from zero: (label, value, tooltip); positive is a cost (red) unless
    positive_is_good."""
    known = [value for _, value, _ in bars if value is not None]
    height = 40 + row * max(len(bars), 1)
    if not known:
        return _empty_chart(title, width, max(height, 80), "no data")
    extent = max(max(abs(v) for v in known), D("0.01"))
    label_w, value_w = 96, 76
    left, right = D(label_w), D(width - value_w)
    if min(known) < 0 < max(known):
        zero, span = (left + right) / 2, (right - left) / 2
    elif min(known) >= 0:
        zero, span = left, right - left
    else:
        zero, span = right, right - left
    out = [_open(width, height, title), f'<text x="4" y="16" class="chart-title">{escape(title)}</text>']
    out.append(f'<line x1="{px(zero)}" x2="{px(zero)}" y1="26" y2="{height - 8}" stroke="{COLORS["axis"]}"/>')
    for index, (label, value, tip) in enumerate(bars):
        y = 30 + index * row
        middle = D(y) + D(row) / 2
        out.append(f'<text x="{label_w - 8}" y="{px(middle)}" class="axis-label" text-anchor="end" '
                   f'dominant-baseline="middle">{escape(label)}</text>')
        if value is None:
            out.append(f'<text x="{px(zero + 6)}" y="{px(middle)}" class="axis-label" '
                       f'dominant-baseline="middle">n/a</text>')
            continue
        length = abs(value) / extent * span
        x = zero if value >= 0 else zero - length
        color = COLORS["cost"] if (value > 0) != positive_is_good else COLORS["saving"]
        out.append(f'<rect x="{px(x)}" y="{y + 4}" width="{px(max(length, D(1)))}" height="{row - 8}" '
                   f'fill="{color}" rx="2"><title>{escape(tip)}</title></rect>')
        out.append(f'<text x="{px(right + 6)}" y="{px(middle)}" class="value-label" '
                   f'dominant-baseline="middle">{escape(f"{value:+.2f} {unit}")}</text>')
    out.append("</svg>")
    return "".join(out)


def waterfall_chart(
    title: str, steps: Sequence[tuple[str, Decimal | None]], total_label: str, *, width: int = 520,
    height: int = 260,
) -> str:
    """Cost components stacking up to their total (bps); positive is a cost (red)."""
    values = [(label, value if value is not None else Decimal(0), value is None) for label, value in steps]
    total = sum((v for _, v, _ in values), Decimal(0))
    running = Decimal(0)
    levels = [Decimal(0)]
    for _, value, _ in values:
        running += value
        levels.append(running)
    low = min(min(levels), Decimal(0))
    high = max(max(levels), Decimal(0))
    pad = max((high - low) * Decimal("0.15"), Decimal("0.5"))
    top, bottom = 34, height - 36
    scale = PriceScale(low - pad, high + pad, Decimal(top), Decimal(bottom))
    left, right = D(56), D(width - 16)
    columns = len(values) + 1
    slot = (right - left) / columns
    out = [_open(width, height, title), f'<text x="4" y="16" class="chart-title">{escape(title)}</text>']
    for tick in scale.ticks(4):
        y = px(scale.y(tick))
        out.append(f'<line x1="{px(left)}" x2="{px(right)}" y1="{y}" y2="{y}" stroke="{COLORS["grid"]}"/>')
        out.append(f'<text x="{px(left - 6)}" y="{y}" class="axis-label" text-anchor="end" '
                   f'dominant-baseline="middle">{escape(f"{tick:g}")}</text>')
    zero_y = px(scale.y(Decimal(0)))
    out.append(f'<line x1="{px(left)}" x2="{px(right)}" y1="{zero_y}" y2="{zero_y}" '
               f'stroke="{COLORS["axis"]}"/>')
    running = Decimal(0)
    for index, (label, value, unknown) in enumerate([*values, (total_label, total, False)]):
        is_total = index == len(values)
        start = Decimal(0) if is_total else running
        end = value if is_total else running + value
        y1, y2 = scale.y(max(start, end)), scale.y(min(start, end))
        x = left + slot * index + slot * D("0.18")
        bar_w = slot * D("0.64")
        color = "#4b5563" if is_total else (COLORS["cost"] if value > 0 else COLORS["saving"])
        text = "n/a" if unknown else f"{value:+.2f} bp"
        bar_h = px(max(y2 - y1, D(1)))
        out.append(f'<rect x="{px(x)}" y="{px(y1)}" width="{px(bar_w)}" height="{bar_h}" '
                   f'fill="{color}" rx="2"><title>{escape(label)}: {escape(text)}</title></rect>')
        out.append(f'<text x="{px(x + bar_w / 2)}" y="{px(y1 - 5)}" class="value-label" '
                   f'text-anchor="middle">{escape(text)}</text>')
        out.append(f'<text x="{px(x + bar_w / 2)}" y="{bottom + 16}" class="axis-label" '
                   f'text-anchor="middle">{escape(label)}</text>')
        if not is_total:
            running = end
    out.append("</svg>")
    return "".join(out)
