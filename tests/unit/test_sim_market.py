"""The synthetic market: profiles, determinism of the path, calibration to real figures."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal
from typing import Any

import pytest

from trimtab.adapters.sim.path import QUOTE_STEP, MarketPath, TradeKind
from trimtab.adapters.sim.profile import MEGA_ETFS, SymbolProfile, derive_profile
from trimtab.adapters.sim.randomness import gauss, mix64, stable_key, unit
from trimtab.domain.money import price_tick

HOUR_STEPS = int(3600 / QUOTE_STEP)
MINUTE_STEPS = int(60 / QUOTE_STEP)


def _path(profile: SymbolProfile, key: int = 7) -> MarketPath:
    return MarketPath(key, profile)


# -- randomness -----------------------------------------------------------------------------


def test_stable_key_is_stable_and_distinct() -> None:
    assert stable_key("path", 1, "SPY") == stable_key("path", 1, "SPY")
    assert stable_key("path", 1, "SPY") != stable_key("path", 2, "SPY")
    assert stable_key("path", 1, "SPY") != stable_key("path", 1, "SPYX")


def test_counter_based_normals_look_normal() -> None:
    values = [gauss(mix64(i)) for i in range(20000)]
    assert abs(statistics.fmean(values)) < 0.03
    assert 0.97 < statistics.pstdev(values) < 1.03
    uniforms = [unit(mix64(i)) for i in range(20000)]
    assert all(0.0 < u < 1.0 for u in uniforms)


# -- profiles ---------------------------------------------------------------------------------


def test_derived_profile_is_stable_per_seed_and_symbol() -> None:
    assert derive_profile("IBM", 3) == derive_profile("IBM", 3)
    assert derive_profile("IBM", 3) != derive_profile("IBM", 4)


def test_derived_profiles_stay_in_calibrated_ranges() -> None:
    profiles = [derive_profile(f"X{i:03d}", 11) for i in range(300)]
    etf_like = [p for p in profiles if p.touch_size >= 1000]
    stocks = [p for p in profiles if p.touch_size < 1000]
    assert 0.04 < len(etf_like) / len(profiles) < 0.25
    for profile in stocks:
        assert Decimal(15) <= profile.price <= Decimal(400)
        assert profile.price == profile.price.quantize(price_tick(profile.price))
        assert 1.0 <= profile.spread_ticks <= 3.5
        assert 2.5 <= profile.volatility_bps <= 6.0
        assert 100 <= profile.touch_size <= 400
        assert 0.6 <= profile.trade_rate <= 1.6
        assert profile.trade_size_median == 100
    for profile in etf_like:
        assert profile.spread_ticks == 1.0
        assert profile.spread_dispersion == 0.0


def test_mega_etfs_get_one_tick_spreads_and_deep_touch() -> None:
    for symbol in sorted(MEGA_ETFS):
        profile = derive_profile(symbol, 0)
        assert profile.spread_ticks == 1.0
        assert profile.touch_size >= 2000


@pytest.mark.parametrize(
    ("field", "value"),
    [("volatility_bps", -1.0), ("spread_ticks", 0.5), ("touch_size", 0), ("trade_rate", -1.0),
     ("at_ask", 0.8), ("replenish_half_life", 0.0), ("depth_size", 0)],
)
def test_profile_validation_names_the_field(field: str, value: float) -> None:
    options: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field.split("_")[0]):
        SymbolProfile(price=Decimal("100"), **options)


def test_profile_price_must_be_a_positive_decimal() -> None:
    with pytest.raises(ValueError, match="price"):
        SymbolProfile(price=Decimal("0"))


def test_profile_tick_follows_the_price() -> None:
    assert SymbolProfile(price=Decimal("0.5")).tick == Decimal("0.0001")
    assert SymbolProfile(price=Decimal("12.34")).tick == Decimal("0.01")
    assert SymbolProfile(price=Decimal("100")).level_size == 200
    assert SymbolProfile(price=Decimal("100"), depth_size=500).level_size == 500


# -- the path ---------------------------------------------------------------------------------


def test_path_is_a_pure_function_of_key_and_time() -> None:
    profile = SymbolProfile.large_cap()
    sequential = _path(profile)
    quotes = [sequential.quote(k) for k in range(2000)]
    scattered = _path(profile)
    for k in (1999, 0, 1500, 64, 63, 700, 1, 1998):
        assert scattered.quote(k) == quotes[k]
    other_key = _path(profile, key=8)
    assert [other_key.quote(k) for k in range(200)] != quotes[:200]


def test_the_path_of_a_key_stays_the_same_across_versions() -> None:
    """Pinned values: a faster path must give the same market (comparisons across versions,
    saved seeds and recorded benchmarks rely on it)."""
    path = MarketPath(12345, SymbolProfile.large_cap())
    assert [tuple(path.quote(k)) for k in (0, 1, 63, 64, 1000, 70000)] == [
        (18251, 18255, 200, 100), (18253, 18256, 200, 100), (18253, 18259, 400, 100),
        (18255, 18259, 700, 200), (18252, 18256, 100, 200), (18140, 18142, 500, 100),
    ]
    assert [(round(t.time, 6), int(t.kind), t.size, round(t.position, 6)) for t in path.trades(3)[:3]] == [
        (32.064388, 2, 340, 0.860934), (36.330291, 1, 133, 0.508098), (36.41727, 0, 121, 0.988544),
    ]
    assert path.log_return(777) == 0.0005144175132362901


def test_trades_are_a_pure_function_of_key_and_time() -> None:
    profile = SymbolProfile.large_cap()
    first = _path(profile).trades_between(0.0, 600.0)
    second = _path(profile)
    late = second.trades_between(300.0, 600.0)
    early = second.trades_between(0.0, 300.0)
    assert early + late == first
    assert all(a.time < b.time for a, b in itertools.pairwise(first))


def test_quotes_are_valid_books() -> None:
    path = _path(SymbolProfile.large_cap())
    for k in range(0, HOUR_STEPS, 7):
        top = path.quote(k)
        assert 0 < top.bid < top.ask
        assert top.bid_size >= 100
        assert top.ask_size >= 100
        assert top.bid_size % 100 == 0


def _stats(profile: SymbolProfile, key: int) -> dict[str, float]:
    path = _path(profile, key)
    quotes = [path.quote(k) for k in range(HOUR_STEPS)]
    spreads = sorted(q.ask - q.bid for q in quotes)
    sizes = sorted(q.bid_size for q in quotes)
    mids = [(q.bid + q.ask) / 2 for q in quotes]
    minutes = range(0, HOUR_STEPS - MINUTE_STEPS, MINUTE_STEPS)
    returns = [math.log(mids[k + MINUTE_STEPS] / mids[k]) * 1e4 for k in minutes]
    trades = path.trades_between(0.0, 3600.0)
    sizes_traded = [t.size for t in trades]
    return {
        "spread_median": spreads[len(spreads) // 2],
        "spread_p90": spreads[int(0.9 * len(spreads))],
        "size_median": sizes[len(sizes) // 2],
        "size_p90": sizes[int(0.9 * len(sizes))],
        "vol_1m_bps": statistics.pstdev(returns),
        "trades_per_minute": len(trades) / 60.0,
        "trade_size_median": statistics.median(sizes_traded),
        "trade_size_mean": statistics.fmean(sizes_traded),
        "at_ask": sum(t.kind is TradeKind.AT_ASK for t in trades) / len(trades),
        "at_bid": sum(t.kind is TradeKind.AT_BID for t in trades) / len(trades),
        "inside": sum(t.kind is TradeKind.INSIDE for t in trades) / len(trades),
        "mid_changes_per_second": sum(a != b for a, b in itertools.pairwise(mids)) / 3600.0,
        "top_changes_per_second": sum(a != b for a, b in itertools.pairwise(quotes)) / 3600.0,
    }


@pytest.mark.parametrize("key", [1, 2, 3])
def test_large_cap_hour_matches_the_calibration(key: int) -> None:
    """IBM, October 2013: spread 3 cents median, 7 at the 90th percentile; 200 shares at
    the touch (600 at the 90th); ~62-85 trades a minute of median 100 / mean 156 shares,
    36/35/30% at the ask / bid / inside; 1-minute mid returns of 3.6-4.1 bp."""
    s = _stats(SymbolProfile.large_cap(), key)
    assert 2 <= s["spread_median"] <= 4
    assert 5 <= s["spread_p90"] <= 9
    assert 100 <= s["size_median"] <= 300
    assert 300 <= s["size_p90"] <= 800
    assert 2.5 <= s["vol_1m_bps"] <= 6.0
    assert 45 <= s["trades_per_minute"] <= 80
    assert 85 <= s["trade_size_median"] <= 115
    assert 125 <= s["trade_size_mean"] <= 195
    assert abs(s["at_ask"] - 0.35) < 0.05
    assert abs(s["at_bid"] - 0.35) < 0.05
    assert abs(s["inside"] - 0.30) < 0.05
    assert 0.6 <= s["mid_changes_per_second"] <= 1.4
    assert 1.0 <= s["top_changes_per_second"] <= 2.0


def test_mega_etf_hour_matches_the_calibration() -> None:
    """SPY: one tick wide all day, thousands of shares at the touch, ~2.7 bp a minute."""
    s = _stats(SymbolProfile.mega_etf(), 5)
    assert s["spread_median"] == 1
    assert s["spread_p90"] == 1
    assert 3000 <= s["size_median"] <= 9000
    assert 1.5 <= s["vol_1m_bps"] <= 4.0


def test_volatility_scales_with_the_profile() -> None:
    calm = _stats(SymbolProfile(price=Decimal("182.53"), volatility_bps=2.0), 4)
    wild = _stats(SymbolProfile(price=Decimal("182.53"), volatility_bps=8.0), 4)
    assert calm["vol_1m_bps"] < wild["vol_1m_bps"]
    assert 1.0 <= calm["vol_1m_bps"] <= 3.0
    assert 5.0 <= wild["vol_1m_bps"] <= 11.0


def test_no_trades_when_the_rate_is_zero() -> None:
    path = _path(SymbolProfile(price=Decimal("50"), trade_rate=0.0))
    assert path.trades_between(0.0, 600.0) == []
