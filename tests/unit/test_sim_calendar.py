"""The simulated exchange's NYSE calendar: holidays, observed days, early closes, weekends,
the market clock, and where a simulated session starts."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from trimtab.adapters.sim.state import continue_session, session_close, session_start, trading_start
from trimtab.adapters.sim.trading_calendar import (
    NEW_YORK,
    early_closes,
    holidays,
    is_open,
    is_trading_day,
    market_clock,
    next_trading_day,
    session_at_or_after,
    trading_hours,
)


def ny(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=NEW_YORK)


# NYSE holidays and early closes (nyse.com, "Holidays and Trading Hours"; the exchange
# publishes a few years ahead, later years follow its Rule 7.2).
NYSE_HOLIDAYS = {
    2024: ["2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-06-19",
           "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25"],
    2025: ["2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26",
           "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25"],
    2026: ["2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19",
           "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25"],
    2027: ["2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26", "2027-05-31", "2027-06-18",
           "2027-07-05", "2027-09-06", "2027-11-25", "2027-12-24"],
    2028: ["2028-01-17", "2028-02-21", "2028-04-14", "2028-05-29", "2028-06-19", "2028-07-04",
           "2028-09-04", "2028-11-23", "2028-12-25"],
}
NYSE_EARLY_CLOSES = {
    2024: ["2024-07-03", "2024-11-29", "2024-12-24"],
    2025: ["2025-07-03", "2025-11-28", "2025-12-24"],
    2026: ["2026-11-27", "2026-12-24"],
    2027: ["2027-11-26"],
    2028: ["2028-07-03", "2028-11-24"],
}


@pytest.mark.parametrize("year", sorted(NYSE_HOLIDAYS))
def test_holidays_match_the_published_calendar(year: int) -> None:
    assert [d.isoformat() for d in holidays(year)] == NYSE_HOLIDAYS[year]


@pytest.mark.parametrize("year", sorted(NYSE_EARLY_CLOSES))
def test_early_closes_match_the_published_calendar(year: int) -> None:
    assert [d.isoformat() for d in sorted(early_closes(year))] == NYSE_EARLY_CLOSES[year]


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (date(2026, 7, 3), "Independence Day"),  # July 4 is a Saturday: the Friday before
        (date(2027, 7, 5), "Independence Day"),  # a Sunday: the Monday after
        (date(2027, 6, 18), "Juneteenth National Independence Day"),  # a Saturday
        (date(2027, 12, 24), "Christmas Day"),  # a Saturday
        (date(2022, 12, 26), "Christmas Day"),  # a Sunday
        (date(2023, 1, 2), "New Year's Day (observed)"),  # a Sunday
    ],
)
def test_observed_days(day: date, name: str) -> None:
    assert holidays(day.year)[day] == name
    assert not is_trading_day(day)


def test_new_year_on_a_saturday_is_not_observed_on_the_friday_before() -> None:
    assert is_trading_day(date(2027, 12, 31))
    assert date(2028, 1, 1) not in holidays(2028)
    assert is_trading_day(date(2021, 12, 31))


def test_juneteenth_only_from_2022() -> None:
    assert date(2021, 6, 18) not in holidays(2021)
    assert date(2022, 6, 20) in holidays(2022)  # June 19, 2022 was a Sunday


def test_weekends_are_closed_and_weekdays_open() -> None:
    assert not is_trading_day(date(2026, 1, 3))  # Saturday
    assert not is_trading_day(date(2026, 1, 4))  # Sunday
    assert is_trading_day(date(2026, 1, 5))
    assert next_trading_day(date(2026, 1, 2)) == date(2026, 1, 5)
    assert next_trading_day(date(2026, 11, 25)) == date(2026, 11, 27)  # over Thanksgiving


def test_the_returned_tables_are_copies() -> None:
    holidays(2026).clear()
    early_closes(2026).clear()
    assert not is_trading_day(date(2026, 1, 1))
    assert trading_hours(date(2026, 11, 27)) == (ny(2026, 11, 27, 9, 30), ny(2026, 11, 27, 13, 0))


def test_trading_hours_and_early_closes() -> None:
    assert trading_hours(date(2026, 3, 2)) == (ny(2026, 3, 2, 9, 30), ny(2026, 3, 2, 16, 0))
    assert trading_hours(date(2024, 7, 3)) == (ny(2024, 7, 3, 9, 30), ny(2024, 7, 3, 13, 0))
    assert trading_hours(date(2025, 12, 24)) == (ny(2025, 12, 24, 9, 30), ny(2025, 12, 24, 13, 0))
    assert trading_hours(date(2026, 12, 25)) is None
    assert trading_hours(date(2026, 3, 7)) is None
    assert not is_open(ny(2024, 11, 29, 13, 0))
    assert is_open(ny(2024, 11, 29, 12, 59, 59))


def test_market_clock_while_open() -> None:
    clock = market_clock(ny(2026, 3, 6, 11, 0))  # a Friday
    assert clock.is_open
    assert clock.next_close == ny(2026, 3, 6, 16, 0)
    assert clock.next_open == ny(2026, 3, 9, 9, 30)
    assert clock.timestamp == ny(2026, 3, 6, 11, 0)


@pytest.mark.parametrize(
    ("at", "next_open", "next_close"),
    [
        (ny(2026, 3, 6, 16, 0), ny(2026, 3, 9, 9, 30), ny(2026, 3, 9, 16, 0)),  # Friday's close
        (ny(2026, 3, 7, 12, 0), ny(2026, 3, 9, 9, 30), ny(2026, 3, 9, 16, 0)),  # Saturday
        (ny(2026, 3, 9, 9, 29), ny(2026, 3, 9, 9, 30), ny(2026, 3, 9, 16, 0)),  # before the open
        (ny(2026, 4, 2, 17, 0), ny(2026, 4, 6, 9, 30), ny(2026, 4, 6, 16, 0)),  # Good Friday next
        (ny(2026, 11, 25, 16, 30), ny(2026, 11, 27, 9, 30), ny(2026, 11, 27, 13, 0)),  # Thanksgiving
        (ny(2026, 11, 27, 13, 0), ny(2026, 11, 30, 9, 30), ny(2026, 11, 30, 16, 0)),  # early close
    ],
)
def test_market_clock_while_closed(at: datetime, next_open: datetime, next_close: datetime) -> None:
    clock = market_clock(at)
    assert not clock.is_open
    assert (clock.next_open, clock.next_close) == (next_open, next_close)


def test_session_lookup_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone"):
        session_at_or_after(datetime(2026, 3, 9, 10, 0))  # noqa: DTZ001


def test_session_start_moves_to_the_next_trading_day() -> None:
    assert session_start(date(2026, 3, 2)) == ny(2026, 3, 2, 10, 0)
    assert session_start(date(2026, 3, 7)) == ny(2026, 3, 9, 10, 0)  # Saturday
    assert session_start(date(2026, 1, 1)) == ny(2026, 1, 2, 10, 0)  # New Year's Day
    assert session_start(date(2026, 11, 26)) == ny(2026, 11, 27, 10, 0)  # Thanksgiving
    assert session_close(session_start(date(2026, 11, 26))) == ny(2026, 11, 27, 13, 0)


@pytest.mark.parametrize(
    ("at", "start"),
    [
        (ny(2026, 3, 9, 11, 15), ny(2026, 3, 9, 11, 15)),  # in regular hours: unchanged
        (ny(2026, 3, 9, 9, 30), ny(2026, 3, 9, 9, 30)),
        (ny(2026, 3, 9, 7, 0), ny(2026, 3, 9, 10, 0)),  # before the open: 10:00 that day
        (ny(2026, 3, 9, 16, 0), ny(2026, 3, 10, 10, 0)),  # after hours: the next trading day
        (ny(2026, 3, 6, 20, 0), ny(2026, 3, 9, 10, 0)),  # Friday evening
        (ny(2026, 11, 27, 14, 0), ny(2026, 11, 30, 10, 0)),  # after an early close
    ],
)
def test_trading_start(at: datetime, start: datetime) -> None:
    assert trading_start(at) == start


@pytest.mark.parametrize(
    ("saved", "requested", "start"),
    [
        (ny(2026, 3, 9, 11, 0), ny(2026, 3, 9, 10, 0), ny(2026, 3, 9, 11, 0)),
        (ny(2026, 3, 9, 15, 45), ny(2026, 3, 9, 10, 0), ny(2026, 3, 10, 10, 0)),
        (ny(2026, 3, 6, 15, 31), ny(2026, 3, 6, 10, 0), ny(2026, 3, 9, 10, 0)),  # Friday
        (ny(2026, 11, 27, 12, 45), ny(2026, 11, 27, 10, 0), ny(2026, 11, 30, 10, 0)),  # early close
        (ny(2026, 11, 27, 12, 15), ny(2026, 11, 27, 10, 0), ny(2026, 11, 27, 12, 15)),
        (ny(2026, 3, 9, 11, 0), ny(2026, 3, 14, 10, 0), ny(2026, 3, 16, 10, 0)),  # asked a Saturday
        (ny(2026, 3, 9, 8, 0), ny(2026, 3, 9, 8, 0), ny(2026, 3, 9, 10, 0)),
    ],
)
def test_continue_session(saved: datetime, requested: datetime, start: datetime) -> None:
    assert continue_session(saved, requested) == start


def test_every_day_from_2024_to_2028_has_a_coherent_session() -> None:
    day = date(2024, 1, 1)
    trading = 0
    while day.year < 2029:
        hours = trading_hours(day)
        if hours is not None:
            trading += 1
            assert hours[0].time() == time(9, 30)
            assert hours[1].time() in (time(13, 0), time(16, 0))
            assert session_at_or_after(hours[0]) == hours
        day = date.fromordinal(day.toordinal() + 1)
    assert 1250 <= trading <= 1265  # about 252 trading days a year
