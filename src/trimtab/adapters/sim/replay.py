"""Replay: recorded quotes and trades that drive chosen symbols of the simulated exchange.

load_replay() reads one trading day of recorded data and returns a ReplaySource; give it
to SimBroker(replay=...) and the symbols it holds follow the recording while every other
symbol stays synthetic. The session is the recorded day (so the calendar and the data
agree) and starts at a chosen time of it, 09:45 by default.

Files (names decide the symbol, the day and the format):

- LEAN tick zips, ``tick_<symbol>_<yyyymmdd>_quote.zip`` with the matching
  ``..._trade.zip``: one headerless CSV each. Quote rows are ``time_ms, bid, bid_size,
  ask, ask_size, exchange, condition, suspicious``; a row updates ONE side, the other
  side's zero price and size mean "unchanged". Trade rows are ``time_ms, price, size,
  exchange, condition, suspicious``. Rows flagged suspicious are dropped. Rows come from
  many venues; as in the calibration notes, the latest bid row and the latest ask row
  form the top of book (so it is sometimes locked or crossed, as the data is).
- LEAN second-bar zips, ``second_<symbol>_<yyyymmdd>_quote.zip`` / ``_trade.zip``: the
  quote bar's closing bid and ask and last sizes hold from the end of the bar; a trade
  bar becomes two prints at its low and high half a second into the bar (half the volume
  each, in the order of the bar's move; one print when low equals high).
- Plain CSV, ``<SYMBOL>_quotes.csv`` with rows ``time,bid,bid_size,ask,ask_size`` and
  ``<SYMBOL>_trades.csv`` with rows ``time,price,size`` (optionally
  ``<SYMBOL>_<yyyymmdd>_quotes.csv``). A header row with those names is optional. time is
  New York time of day, either ``HH:MM:SS`` or ``HH:MM:SS.fff``, or an integer count of
  milliseconds since midnight. Prices are in dollars (at most 4 decimals), sizes in
  shares; each quote row is the whole top of book, a zero price meaning that side is
  empty. A CSV without a date in its name belongs to the day of the other files, or to
  the day passed to load_replay (default DEFAULT_MARKET_DATE).

LEAN prices are integers in 1/10,000 dollar and times milliseconds since midnight New
York time. Sizes are in shares in all formats (LEAN's tick and second files alike).

A folder may hold several symbols and days: the earliest day is replayed unless day is
given. Data is kept as arrays (an IBM day is about 109,000 quote rows and 24,000 trades),
never as one Python object per row.

Trades are classified when loaded against the recorded quote just before them (an update
of the same millisecond is usually the trade's effect on the book): at or above the ask a
buyer took liquidity, at or below the bid a seller did; inside the spread the side is the
one of the nearer quote, and at the midpoint the tick test decides (the Lee-Ready rule).
Several rows of one millisecond make one state: the last one. How replayed trades fill
our orders is in replay_book.py.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import math
import re
import statistics
import zipfile
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path

from trimtab.adapters.sim.path import BookTop, TradeKind
from trimtab.adapters.sim.profile import SymbolProfile
from trimtab.adapters.sim.state import DEFAULT_MARKET_DATE
from trimtab.adapters.sim.trading_calendar import NEW_YORK, trading_hours
from trimtab.domain.money import price_tick, round_price
from trimtab.domain.plan import SYMBOL_PATTERN
from trimtab.logs import get_logger

log = get_logger(__name__)

PRICE_SCALE = 10_000
"""Price units per dollar in replay data (LEAN's 1/10,000 dollar)."""

DEFAULT_START = time(9, 45)
"""Where a replay starts in its recorded day unless told otherwise."""

MS_PER_DAY = 86_400_000
_EPSILON_MS = 1e-6
_VOLATILITY_WINDOW_MS = 60_000

_LEAN_NAME = re.compile(r"^(tick|second)_([a-z0-9][a-z0-9.\-]*)_(\d{8})_(quote|trade)\.zip$", re.IGNORECASE)
_CSV_NAME = re.compile(r"^([a-z0-9][a-z0-9.\-]*?)(?:_(\d{8}))?_(quotes|trades)\.csv$", re.IGNORECASE)
_QUOTE_HEADER = ["time", "bid", "bid_size", "ask", "ask_size"]
_TRADE_HEADER = ["time", "price", "size"]
_FORMAT_PREFERENCE = {"tick": 0, "second": 1, "csv": 2}


@dataclass(frozen=True, slots=True, eq=False)
class ReplayData:
    """One symbol's recorded day as arrays: distinct top-of-book states and trades.

    quote_ms[i] is when state i starts (ms since midnight New York time); bid and ask are
    in ticks of tick_units price units (0: that side is empty), sizes in shares. Trades:
    time, price in price units (1/10,000 dollar; sub-penny prints stay exact), size,
    whether a seller initiated it (trade_seller) and where it printed (trade_kind, a
    TradeKind value).
    """

    symbol: str
    day: date
    source: str
    tick_units: int
    quote_ms: array[int]
    bid: array[int]
    ask: array[int]
    bid_size: array[int]
    ask_size: array[int]
    trade_ms: array[int]
    trade_price: array[int]
    trade_size: array[int]
    trade_seller: array[int]
    trade_kind: array[int]

    @property
    def tick(self) -> Decimal:
        """The symbol's price increment in dollars."""
        return Decimal(self.tick_units) / PRICE_SCALE


class ReplayPath:
    """The exogenous market of one replayed symbol in market time (seconds since start_ms).

    Step k is the k-th top-of-book state from the one holding at the start; it starts at
    step_time(k) (0 for the first). Trades are addressed by their index in the data.
    """

    def __init__(self, data: ReplayData, start_ms: int, profile: SymbolProfile) -> None:
        self.data = data
        self.profile = profile
        self.symbol = data.symbol
        self.tick_units = data.tick_units
        self.start_ms = start_ms
        self._quote_ms = data.quote_ms
        self._q0 = max(0, bisect.bisect_right(data.quote_ms, start_ms) - 1)
        self._nq = len(data.quote_ms)
        self.trade_ms = data.trade_ms
        self.trade_price = data.trade_price
        self.trade_size = data.trade_size
        self.trade_seller = data.trade_seller
        self.n_trades = len(data.trade_ms)

    @property
    def steps(self) -> int:
        """How many quote steps the replay holds from its start."""
        return max(0, self._nq - self._q0)

    def step_at(self, t: float) -> int:
        """The step holding at market time t."""
        i = bisect.bisect_right(self._quote_ms, self.start_ms + t * 1000.0 + _EPSILON_MS) - 1
        return max(0, i - self._q0)

    def step_time(self, step: int) -> float:
        """When step starts in market time; infinity after the last one."""
        i = self._q0 + step
        if i >= self._nq:
            return math.inf
        if step <= 0:
            return 0.0
        return (self._quote_ms[i] - self.start_ms) / 1000.0

    def quote(self, step: int) -> BookTop:
        """The recorded top of book of step, in ticks and shares."""
        if self._nq == 0:
            return BookTop(0, 0, 0, 0)
        i = min(self._q0 + step, self._nq - 1)
        data = self.data
        return BookTop(data.bid[i], data.ask[i], data.bid_size[i], data.ask_size[i])

    def quote_at(self, t: float) -> BookTop:
        """The recorded top of book at market time t."""
        return self.quote(self.step_at(t))

    def first_trade_after(self, t: float) -> int:
        """The index of the first trade later than market time t (n_trades if none)."""
        return bisect.bisect_right(self.trade_ms, self.start_ms + t * 1000.0 + _EPSILON_MS)

    def trade_time(self, index: int) -> float:
        """The market time of trade index."""
        return (self.trade_ms[index] - self.start_ms) / 1000.0


@dataclass(frozen=True, slots=True, eq=False)
class ReplaySource:
    """One recorded trading day of some symbols, replayed from start (New York time)."""

    day: date
    start: time
    data: Mapping[str, ReplayData]
    _profiles: dict[str, SymbolProfile] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hours = trading_hours(self.day)
        if hours is None:
            raise ValueError(f"the recorded day {self.day} is not a trading day")
        begin = datetime.combine(self.day, self.start, tzinfo=NEW_YORK)
        if not hours[0] <= begin < hours[1]:
            raise ValueError(
                f"replay start {self.start.isoformat()} is outside the regular hours of {self.day} "
                f"({hours[0].time().isoformat()}-{hours[1].time().isoformat()} New York time)"
            )
        if not self.data:
            raise ValueError("a replay needs at least one symbol")

    @property
    def symbols(self) -> frozenset[str]:
        """The replayed symbols."""
        return frozenset(self.data)

    @property
    def start_datetime(self) -> datetime:
        """Where the simulated session starts: start on the recorded day, New York time."""
        return datetime.combine(self.day, self.start, tzinfo=NEW_YORK)

    @property
    def start_ms(self) -> int:
        """The start as milliseconds since midnight."""
        return _ms_of(self.start)

    def profile(self, symbol: str) -> SymbolProfile:
        """A SymbolProfile measured on symbol's data from the start to the close.

        The book uses its price (the tick), its median displayed size (the depth of each
        level behind the recorded touch, which our market orders walk) and its replenish
        half-life (10 s, or 3 s for a one-tick spread); the other fields describe the data.
        """
        profile = self._profiles.get(symbol)
        if profile is None:
            profile = self._profiles[symbol] = _measure(self.data[symbol], self.start_ms)
        return profile

    def path(self, symbol: str) -> ReplayPath:
        """A fresh view of symbol's recording whose market time 0 is the start."""
        return ReplayPath(self.data[symbol], self.start_ms, self.profile(symbol))


def replay_market(market: str, start: str | None = None) -> ReplaySource | None:
    """The replay a ``--market`` option asks for: None for ``synthetic``, the loaded data
    for ``replay:PATH``. start is ``HH:MM`` (or ``HH:MM:SS``) of the recorded day (default
    09:45) and only goes with a replay. Raises ValueError with a message for the user."""
    if market == "synthetic":
        if start is not None:
            raise ValueError("--start applies to --market replay:PATH only")
        return None
    prefix = "replay:"
    if not market.startswith(prefix) or not market[len(prefix):]:
        raise ValueError(f"unknown market {market!r}: use synthetic or replay:PATH")
    when = None
    if start is not None:
        try:
            when = time.fromisoformat(start)
        except ValueError:
            raise ValueError(f"--start must be HH:MM, got {start!r}") from None
    return load_replay(Path(market[len(prefix):]).expanduser(), when)


def load_replay(path: str | Path, start: time | None = None, *, day: date | None = None) -> ReplaySource:
    """Read recorded data for a replay (see the module docstring for the files).

    path is one file (its quote or trade partner beside it is read too) or a folder of
    them. start is the time of the recorded day the replay begins at (default 09:45; it
    must be within that day's regular hours). day picks one day when a folder holds
    several (default: the earliest). Raises ValueError naming the file and line of any
    problem.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"replay data not found: {root}")
    if root.is_dir():
        files = [f for f in (_recognize(p) for p in sorted(root.iterdir()) if p.is_file()) if f is not None]
        if not files:
            raise ValueError(
                f"no replay files in {root} (expected tick_<sym>_<yyyymmdd>_quote.zip, "
                "second_<sym>_<yyyymmdd>_quote.zip or <SYM>_quotes.csv and their trade files)"
            )
    else:
        first = _recognize(root)
        if first is None:
            raise ValueError(
                f"{root.name} is not a replay file name (expected tick_<sym>_<yyyymmdd>_quote.zip, "
                "second_<sym>_<yyyymmdd>_quote.zip, <SYM>_quotes.csv or their trade files)"
            )
        files = [first]
        partner = _recognize(root.with_name(first.partner_name))
        if partner is not None and partner.path.is_file():
            files.append(partner)
    chosen_day = _choose_day(files, day)
    by_symbol: dict[str, list[_File]] = {}
    for f in files:
        if f.day is None or f.day == chosen_day:
            by_symbol.setdefault(f.symbol, []).append(f)
    data: dict[str, ReplayData] = {}
    for symbol, group in sorted(by_symbol.items()):
        data[symbol] = _load_symbol(symbol, chosen_day, group)
    source = ReplaySource(day=chosen_day, start=start or DEFAULT_START, data=data)
    log.info(
        "replay loaded day=%s start=%s symbols=%s",
        chosen_day.isoformat(), source.start.isoformat(), ",".join(sorted(data)),
    )
    return source


# -- files ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    symbol: str
    day: date | None
    kind: str  # "quote" or "trade"
    fmt: str  # "tick", "second" or "csv"
    partner_name: str


def _recognize(path: Path) -> _File | None:
    name = path.name
    match = _LEAN_NAME.match(name)
    if match is not None:
        fmt, symbol, day, kind = match.groups()
        other = "trade" if kind.lower() == "quote" else "quote"
        partner = f"{name[: match.start(4)]}{other}{name[match.end(4):]}"
        return _make_file(path, symbol, day, kind.lower(), fmt.lower(), partner)
    match = _CSV_NAME.match(name)
    if match is not None:
        symbol, day, kind = match.groups()
        other = "trades" if kind.lower() == "quotes" else "quotes"
        partner = f"{name[: match.start(3)]}{other}{name[match.end(3):]}"
        return _make_file(path, symbol, day, kind.lower().rstrip("s"), "csv", partner)
    return None


def _make_file(path: Path, symbol: str, day: str | None, kind: str, fmt: str, partner: str) -> _File:
    upper = symbol.upper()
    if not SYMBOL_PATTERN.match(upper):
        raise ValueError(f"{path.name}: {symbol!r} is not a symbol")
    parsed = None
    if day is not None:
        try:
            parsed = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        except ValueError:
            raise ValueError(f"{path.name}: {day} is not a date (yyyymmdd)") from None
    return _File(path, upper, parsed, kind, fmt, partner)


def _choose_day(files: list[_File], day: date | None) -> date:
    days = sorted({f.day for f in files if f.day is not None})
    if day is not None:
        if days and day not in days:
            raise ValueError(f"no replay files of {day} (found {', '.join(d.isoformat() for d in days)})")
        return day
    if not days:
        return DEFAULT_MARKET_DATE
    if len(days) > 1:
        log.info(
            "replay data of several days: replaying %s, ignoring %s",
            days[0].isoformat(), ", ".join(d.isoformat() for d in days[1:]),
        )
    return days[0]


def _load_symbol(symbol: str, day: date, files: list[_File]) -> ReplayData:
    quotes = sorted((f for f in files if f.kind == "quote"), key=lambda f: _FORMAT_PREFERENCE[f.fmt])
    if not quotes:
        names = ", ".join(f.path.name for f in files)
        raise ValueError(f"no quotes for {symbol} on {day} (only {names})")
    quote_file = quotes[0]
    if len(quotes) > 1:
        log.info("replay of %s uses %s, ignoring %s", symbol, quote_file.path.name,
                 ", ".join(f.path.name for f in quotes[1:]))
    trade_file = next((f for f in files if f.kind == "trade" and f.fmt == quote_file.fmt), None)
    quotes_raw = _QuoteBuilder()
    trades_raw = _TradeBuilder()
    reader = {"tick": _tick_quotes, "second": _second_quotes, "csv": _csv_quotes}[quote_file.fmt]
    reader(quote_file.path, quotes_raw)
    sources = [quote_file.path.name]
    if trade_file is None:
        log.warning("replay of %s has no trades: its resting orders will not fill", symbol)
    else:
        trade_reader = {"tick": _tick_trades, "second": _second_trades, "csv": _csv_trades}[trade_file.fmt]
        trade_reader(trade_file.path, trades_raw)
        sources.append(trade_file.path.name)
    return _build(symbol, day, " + ".join(sources), quotes_raw, trades_raw)


# -- readers ----------------------------------------------------------------------------------


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a CSV file or of the one CSV inside a zip."""
    if path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ValueError(f"{path.name} is not a zip file") from None
        with archive:
            members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
            if len(members) != 1:
                raise ValueError(f"{path.name} must hold exactly one CSV file, found {len(members)}")
            with archive.open(members[0]) as raw:
                text = io.TextIOWrapper(raw, encoding="ascii", newline="")
                try:
                    yield from enumerate(csv.reader(text), start=1)
                except UnicodeDecodeError:
                    raise ValueError(f"{path.name}: not ASCII text") from None
        return
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            yield from enumerate(csv.reader(handle), start=1)
    except UnicodeDecodeError:
        raise ValueError(f"{path.name}: not UTF-8 text") from None


class _QuoteBuilder:
    """Distinct top-of-book states in time order, in price units (one state per ms)."""

    def __init__(self) -> None:
        self.ms: array[int] = array("q")
        self.bid: array[int] = array("q")
        self.ask: array[int] = array("q")
        self.bid_size: array[int] = array("q")
        self.ask_size: array[int] = array("q")

    def add(self, ms: int, bid: int, bid_size: int, ask: int, ask_size: int) -> None:
        times = self.ms
        n = len(times)
        if n:
            last = times[n - 1]
            if ms < last:
                raise ValueError(f"time {ms} ms is earlier than the row before ({last} ms)")
            if ms == last:
                # A later row of the same millisecond replaces the state.
                self._set(n - 1, bid, bid_size, ask, ask_size)
                if n >= 2 and self._same(n - 2, bid, bid_size, ask, ask_size):
                    self._pop()
                return
            if self._same(n - 1, bid, bid_size, ask, ask_size):
                return
        times.append(ms)
        self.bid.append(bid)
        self.bid_size.append(bid_size)
        self.ask.append(ask)
        self.ask_size.append(ask_size)

    def _same(self, i: int, bid: int, bid_size: int, ask: int, ask_size: int) -> bool:
        return (self.bid[i] == bid and self.ask[i] == ask and self.bid_size[i] == bid_size
                and self.ask_size[i] == ask_size)

    def _set(self, i: int, bid: int, bid_size: int, ask: int, ask_size: int) -> None:
        self.bid[i] = bid
        self.bid_size[i] = bid_size
        self.ask[i] = ask
        self.ask_size[i] = ask_size

    def _pop(self) -> None:
        for column in (self.ms, self.bid, self.ask, self.bid_size, self.ask_size):
            column.pop()


class _TradeBuilder:
    def __init__(self) -> None:
        self.ms: array[int] = array("q")
        self.price: array[int] = array("q")
        self.size: array[int] = array("q")

    def add(self, ms: int, price: int, size: int) -> None:
        if self.ms and ms < self.ms[-1]:
            raise ValueError(f"time {ms} ms is earlier than the row before ({self.ms[-1]} ms)")
        if price <= 0 or size <= 0:
            return
        self.ms.append(ms)
        self.price.append(price)
        self.size.append(size)


def _fields(path: Path, line: int, row: list[str], count: int) -> list[int]:
    if len(row) < count:
        raise ValueError(f"{path.name} line {line}: expected {count} fields, got {len(row)}")
    try:
        values = [int(v) for v in row[:count]]
    except ValueError:
        raise ValueError(f"{path.name} line {line}: not an integer in {','.join(row[:count])!r}") from None
    if any(v < 0 for v in values):
        raise ValueError(f"{path.name} line {line}: negative value in {','.join(row[:count])!r}")
    if values[0] >= MS_PER_DAY:
        raise ValueError(f"{path.name} line {line}: time {values[0]} ms is past midnight")
    return values


def _tick_quotes(path: Path, out: _QuoteBuilder) -> None:
    bid = ask = bid_size = ask_size = 0
    for line, row in _rows(path):
        if len(row) >= 8 and row[7].strip() == "1":
            continue  # suspicious
        ms, b, bs, a, az = _fields(path, line, row, 5)
        if b:
            bid, bid_size = b, bs
        if a:
            ask, ask_size = a, az
        try:
            out.add(ms, bid, bid_size, ask, ask_size)
        except ValueError as exc:
            raise ValueError(f"{path.name} line {line}: {exc}") from None


def _tick_trades(path: Path, out: _TradeBuilder) -> None:
    for line, row in _rows(path):
        if len(row) >= 6 and row[5].strip() == "1":
            continue  # suspicious
        ms, price, size = _fields(path, line, row, 3)
        try:
            out.add(ms, price, size)
        except ValueError as exc:
            raise ValueError(f"{path.name} line {line}: {exc}") from None


def _second_quotes(path: Path, out: _QuoteBuilder) -> None:
    bid = ask = bid_size = ask_size = 0
    for line, row in _rows(path):
        values = _fields(path, line, row, 11)
        ms = values[0] + 1000  # the bar's close holds from the end of the bar
        if values[4]:
            bid, bid_size = values[4], values[5]
        if values[9]:
            ask, ask_size = values[9], values[10]
        try:
            out.add(min(ms, MS_PER_DAY - 1), bid, bid_size, ask, ask_size)
        except ValueError as exc:
            raise ValueError(f"{path.name} line {line}: {exc}") from None


def _second_trades(path: Path, out: _TradeBuilder) -> None:
    for line, row in _rows(path):
        ms, open_, high, low, close, volume = _fields(path, line, row, 6)
        try:
            if volume <= 0 or low <= 0:
                continue
            if low == high:
                out.add(ms + 500, close or low, volume)
                continue
            first, second = (low, high) if close >= open_ else (high, low)
            out.add(ms + 500, first, volume - volume // 2)
            out.add(ms + 500, second, volume // 2)
        except ValueError as exc:
            raise ValueError(f"{path.name} line {line}: {exc}") from None


def _csv_time(text: str) -> int:
    text = text.strip()
    if ":" not in text:
        value = int(text)
        if not 0 <= value < MS_PER_DAY:
            raise ValueError(f"time {value} ms is not within a day")
        return value
    moment = time.fromisoformat(text)
    return ((moment.hour * 60 + moment.minute) * 60 + moment.second) * 1000 + moment.microsecond // 1000


def _csv_price(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    value = Decimal(text) * PRICE_SCALE
    if not value.is_finite() or value < 0 or value != value.to_integral_value():
        raise ValueError(f"price {text!r} must be a non-negative number of dollars with at most 4 decimals")
    return int(value)


def _csv_size(text: str) -> int:
    value = Decimal(text.strip() or "0")
    if not value.is_finite() or value < 0 or value != value.to_integral_value():
        raise ValueError(f"size {text!r} must be a whole number of shares")
    return int(value)


def _csv_body(path: Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    for line, row in _rows(path):
        if not row or not "".join(row).strip():
            continue
        if line == 1 and row[0].strip() and not row[0].strip()[0].isdigit():
            names = [name.strip().lower() for name in row]
            if names != header:
                expected = ",".join(header)
                raise ValueError(f"{path.name} line 1: expected the header {expected}, got {','.join(row)}")
            continue
        if len(row) != len(header):
            raise ValueError(f"{path.name} line {line}: expected {len(header)} fields ({','.join(header)})")
        yield line, row


def _csv_quotes(path: Path, out: _QuoteBuilder) -> None:
    for line, row in _csv_body(path, _QUOTE_HEADER):
        try:
            out.add(_csv_time(row[0]), _csv_price(row[1]), _csv_size(row[2]), _csv_price(row[3]),
                    _csv_size(row[4]))
        except (ValueError, InvalidOperation) as exc:
            raise ValueError(f"{path.name} line {line}: {_reason(exc)}") from None


def _csv_trades(path: Path, out: _TradeBuilder) -> None:
    for line, row in _csv_body(path, _TRADE_HEADER):
        try:
            out.add(_csv_time(row[0]), _csv_price(row[1]), _csv_size(row[2]))
        except (ValueError, InvalidOperation) as exc:
            raise ValueError(f"{path.name} line {line}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    return "not a number" if isinstance(exc, InvalidOperation) else str(exc)


# -- building ---------------------------------------------------------------------------------


def _build(symbol: str, day: date, source: str, quotes: _QuoteBuilder, trades: _TradeBuilder) -> ReplayData:
    first = next((p for p in itertools.chain(quotes.bid, quotes.ask) if p > 0), 0)
    if first <= 0:
        raise ValueError(f"{source}: no usable quotes for {symbol}")
    tick_units = int(price_tick(Decimal(first) / PRICE_SCALE) * PRICE_SCALE)
    bid = array("q", (p // tick_units for p in quotes.bid))
    ask = array("q", (-(-p // tick_units) for p in quotes.ask))
    seller, kind = _classify(quotes, trades)
    return ReplayData(
        symbol=symbol,
        day=day,
        source=source,
        tick_units=tick_units,
        quote_ms=quotes.ms,
        bid=bid,
        ask=ask,
        bid_size=quotes.bid_size,
        ask_size=quotes.ask_size,
        trade_ms=trades.ms,
        trade_price=trades.price,
        trade_size=trades.size,
        trade_seller=seller,
        trade_kind=kind,
    )


def _classify(quotes: _QuoteBuilder, trades: _TradeBuilder) -> tuple[array[int], array[int]]:
    """Who initiated each trade and where it printed, against the quote just before it (a
    quote update of the same millisecond is usually the trade's own effect on the book)."""
    seller = array("b", bytes(len(trades.ms)))
    kind = array("b", bytes(len(trades.ms)))
    q_ms, q_bid, q_ask = quotes.ms, quotes.bid, quotes.ask
    nq = len(q_ms)
    j = -1
    last_price = 0
    last_seller = 0
    for i, ms in enumerate(trades.ms):
        while j + 1 < nq and q_ms[j + 1] < ms:
            j += 1
        price = trades.price[i]
        bid = q_bid[j] if j >= 0 else 0
        ask = q_ask[j] if j >= 0 else 0
        if price > last_price:
            tick_side = 0
        elif price < last_price:
            tick_side = 1
        else:
            tick_side = last_seller
        if bid > 0 and ask > 0 and bid < ask:
            if price >= ask:
                side, where = 0, TradeKind.AT_ASK
            elif price <= bid:
                side, where = 1, TradeKind.AT_BID
            else:
                twice = 2 * price
                side = 0 if twice > bid + ask else 1 if twice < bid + ask else tick_side
                where = TradeKind.INSIDE
        else:
            side = tick_side
            where = TradeKind.AT_BID if side else TradeKind.AT_ASK
        seller[i] = side
        kind[i] = where
        last_price, last_seller = price, side
    return seller, kind


def _measure(data: ReplayData, start_ms: int) -> SymbolProfile:
    """The profile of a replayed symbol from its data between start_ms and the close."""
    hours = trading_hours(data.day)
    end_ms = _ms_of(hours[1].time()) if hours is not None else MS_PER_DAY
    q0 = max(0, bisect.bisect_right(data.quote_ms, start_ms) - 1)
    q1 = max(q0 + 1, bisect.bisect_left(data.quote_ms, end_ms))
    valid = [i for i in range(q0, min(q1, len(data.quote_ms))) if 0 < data.bid[i] < data.ask[i]]
    if not valid:
        valid = [i for i in range(len(data.quote_ms)) if 0 < data.bid[i] < data.ask[i]]
    if not valid:
        raise ValueError(f"{data.source}: no two-sided quote for {data.symbol}")
    first = valid[0]
    tick = data.tick
    price = round_price(Decimal(data.bid[first] + data.ask[first]) / 2 * tick)
    spread = statistics.median(data.ask[i] - data.bid[i] for i in valid)
    sizes = [s for i in valid for s in (data.bid_size[i], data.ask_size[i]) if s > 0]
    touch = max(1, round(statistics.median(sizes))) if sizes else 100
    t0 = bisect.bisect_right(data.trade_ms, start_ms)
    t1 = bisect.bisect_left(data.trade_ms, end_ms)
    count = max(0, t1 - t0)
    seconds = max(1.0, (end_ms - start_ms) / 1000.0)
    trade_sizes = data.trade_size[t0:t1]
    kinds = data.trade_kind[t0:t1]
    at_ask = sum(1 for k in kinds if k == TradeKind.AT_ASK) / count if count else 0.35
    at_bid = sum(1 for k in kinds if k == TradeKind.AT_BID) / count if count else 0.35
    return SymbolProfile(
        price=price,
        volatility_bps=_volatility_bps(data, valid),
        spread_ticks=max(1.0, float(spread)),
        touch_size=touch,
        lot_size=100 if touch >= 100 else 1,
        trade_rate=count / seconds,
        trade_size_median=max(1.0, float(statistics.median(trade_sizes))) if count else 100.0,
        at_ask=at_ask,
        at_bid=min(at_bid, 1.0 - at_ask),
        replenish_half_life=3.0 if spread <= 1 else 10.0,
    )


def _volatility_bps(data: ReplayData, valid: list[int]) -> float:
    """Standard deviation of one-minute log returns of the mid, in basis points."""
    mids: list[float] = []
    next_ms = data.quote_ms[valid[0]]
    for i in valid:
        if data.quote_ms[i] >= next_ms:
            mids.append(math.log(data.bid[i] + data.ask[i]))
            next_ms = data.quote_ms[i] + _VOLATILITY_WINDOW_MS
    returns = [b - a for a, b in itertools.pairwise(mids)]
    return statistics.pstdev(returns) * 1e4 if len(returns) >= 2 else 0.0


def _ms_of(moment: time) -> int:
    return ((moment.hour * 60 + moment.minute) * 60 + moment.second) * 1000 + moment.microsecond // 1000
