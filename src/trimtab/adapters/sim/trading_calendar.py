"""The NYSE trading calendar of the simulated exchange: regular hours, holidays, early closes.

Regular hours are 09:30 to 16:00 New York time on weekdays that are not exchange
holidays; on early-close days the market closes at 13:00. The holidays follow the NYSE
rules (Rule 7.2), computed for any year:

- New Year's Day (January 1; a Sunday is observed on Monday; a Saturday is not observed:
  the exchange does not close on the Friday before, because that is the last trading day
  of the year), Martin Luther King Jr. Day (third Monday of January), Washington's
  Birthday (third Monday of February), Good Friday (two days before Easter Sunday),
  Memorial Day (last Monday of May), Juneteenth (June 19, from 2022), Independence Day
  (July 4), Labor Day (first Monday of September), Thanksgiving (fourth Thursday of
  November) and Christmas (December 25).
- Except for New Year's Day, a holiday on a Saturday is observed on the Friday before and
  one on a Sunday on the Monday after.
- Early closes at 13:00: July 3 when it is a Monday to Thursday (Independence Day on a
  weekday after it), the day after Thanksgiving, and December 24 when it is a Monday to
  Thursday.
- Unscheduled closures the exchange announced (SPECIAL_CLOSURES) are closed too.

It is a calendar for simulation, not a substitute for the exchange's own notices: the
tests pin every holiday and early close of 2024 through 2028.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from trimtab.domain.account import MarketClock

NEW_YORK = ZoneInfo("America/New_York")
REGULAR_OPEN = time(9, 30)
REGULAR_CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)

SPECIAL_CLOSURES: dict[date, str] = {
    date(2012, 10, 29): "Hurricane Sandy",
    date(2012, 10, 30): "Hurricane Sandy",
    date(2018, 12, 5): "National Day of Mourning for President George H. W. Bush",
    date(2025, 1, 9): "National Day of Mourning for President Jimmy Carter",
}
"""Full-day closures announced by the exchange outside the holiday rules."""

_MONDAY, _THURSDAY, _SATURDAY, _SUNDAY = 0, 3, 5, 6
_SEARCH_DAYS = 15
"""No stretch of closed days is longer than this (a holiday weekend is at most 4 days)."""


def _easter(year: int) -> date:
    """Easter Sunday of year in the Gregorian calendar (the anonymous algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    j = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * j) // 451
    month, day = divmod(h + j - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th weekday (0 = Monday) of a month; n = -1 for the last one."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    following = date(year + month // 12, month % 12 + 1, 1)
    last = following - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """Saturday holidays are observed on Friday, Sunday ones on Monday."""
    if day.weekday() == _SATURDAY:
        return day - timedelta(days=1)
    if day.weekday() == _SUNDAY:
        return day + timedelta(days=1)
    return day


def holidays(year: int) -> dict[date, str]:
    """The exchange's full-day closures of year (weekdays only), with their names."""
    return dict(_holidays(year))


def early_closes(year: int) -> dict[date, str]:
    """The days of year on which the market closes at 13:00, with the reason."""
    return dict(_early_closes(year))


@functools.lru_cache(maxsize=64)
def _holidays(year: int) -> dict[date, str]:
    out: dict[date, str] = {}
    new_year = date(year, 1, 1)
    if new_year.weekday() == _SUNDAY:
        out[new_year + timedelta(days=1)] = "New Year's Day (observed)"
    elif new_year.weekday() != _SATURDAY:
        out[new_year] = "New Year's Day"
    out[_nth_weekday(year, 1, _MONDAY, 3)] = "Martin Luther King Jr. Day"
    out[_nth_weekday(year, 2, _MONDAY, 3)] = "Washington's Birthday"
    out[_easter(year) - timedelta(days=2)] = "Good Friday"
    out[_nth_weekday(year, 5, _MONDAY, -1)] = "Memorial Day"
    if year >= 2022:
        out[_observed(date(year, 6, 19))] = "Juneteenth National Independence Day"
    out[_observed(date(year, 7, 4))] = "Independence Day"
    out[_nth_weekday(year, 9, _MONDAY, 1)] = "Labor Day"
    out[_nth_weekday(year, 11, _THURSDAY, 4)] = "Thanksgiving Day"
    out[_observed(date(year, 12, 25))] = "Christmas Day"
    for day, name in SPECIAL_CLOSURES.items():
        if day.year == year:
            out[day] = name
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=64)
def _early_closes(year: int) -> dict[date, str]:
    out: dict[date, str] = {}
    july_3 = date(year, 7, 3)
    if july_3.weekday() <= _THURSDAY:
        out[july_3] = "the day before Independence Day"
    out[_nth_weekday(year, 11, _THURSDAY, 4) + timedelta(days=1)] = "the day after Thanksgiving"
    christmas_eve = date(year, 12, 24)
    if christmas_eve.weekday() <= _THURSDAY:
        out[christmas_eve] = "Christmas Eve"
    return out


def is_trading_day(day: date) -> bool:
    """Whether the market opens on day (a weekday that is not a holiday)."""
    return day.weekday() < _SATURDAY and day not in _holidays(day.year)


def trading_hours(day: date) -> tuple[datetime, datetime] | None:
    """Regular hours of day as New York times (open, close), or None if the market is closed."""
    if not is_trading_day(day):
        return None
    close = EARLY_CLOSE if day in _early_closes(day.year) else REGULAR_CLOSE
    return (datetime.combine(day, REGULAR_OPEN, tzinfo=NEW_YORK),
            datetime.combine(day, close, tzinfo=NEW_YORK))


def next_trading_day(day: date) -> date:
    """The first trading day after day."""
    for offset in range(1, _SEARCH_DAYS + 1):
        candidate = day + timedelta(days=offset)
        if is_trading_day(candidate):
            return candidate
    raise AssertionError(f"no trading day within {_SEARCH_DAYS} days after {day}")  # pragma: no cover


def session_at_or_after(at: datetime) -> tuple[datetime, datetime]:
    """The regular session open at time at, or else the next one to open: (open, close)."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    local = at.astimezone(NEW_YORK)
    day = local.date()
    hours = trading_hours(day)
    if hours is not None and local < hours[1]:
        return hours
    nxt = trading_hours(next_trading_day(day))
    assert nxt is not None
    return nxt


def is_open(at: datetime) -> bool:
    """Whether the market is in regular hours at time at."""
    opens, closes = session_at_or_after(at)
    return opens <= at < closes


def market_clock(at: datetime) -> MarketClock:
    """The market clock at time at, as a broker reports it.

    While the market is open, next_close is today's close and next_open the next
    session's open; while it is closed, both belong to the next session.
    """
    opens, closes = session_at_or_after(at)
    now_open = opens <= at < closes
    if now_open:
        opens = session_at_or_after(closes)[0]
    return MarketClock(timestamp=at, is_open=now_open, next_open=opens, next_close=closes)
