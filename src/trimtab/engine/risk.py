"""RiskConfig and the guard that enforces it: limits a careful trader would set.

Every limit is optional (None turns it off). Plan-level refusals stop the plan before
anything is sent (the CLI exits 3); order-level refusals skip or stop the item with the
reason on its result. The daily traded-notional cap is counted in the ledger, so it holds
across processes and restarts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trimtab.domain.errors import ConfigurationError, SafetyRefusalError
from trimtab.domain.money import BPS, ZERO, money, to_decimal
from trimtab.domain.orders import Side
from trimtab.domain.plan import format_validation_error
from trimtab.domain.quotes import Quote
from trimtab.engine.config import read_toml_table
from trimtab.ports.ledger import Ledger

NEW_YORK = ZoneInfo("America/New_York")
HALT_FLAG = "halt"


class RiskConfig(BaseModel):
    """Limits on what an execution may do. Money in dollars, fractions in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_notional: Decimal | None = None
    max_order_fraction: Decimal | None = None
    max_plan_turnover: Decimal | None = None
    daily_notional_cap: Decimal | None = None
    price_collar_bps: Decimal | None = None
    max_failed_sell_notional: Decimal | None = None
    sell_shortfall_tolerance: Decimal = Decimal("0.05")
    extended_hours: bool = False
    halt_check_interval: float = Field(default=1.0, gt=0, le=60)

    @field_validator(
        "max_order_notional",
        "max_order_fraction",
        "max_plan_turnover",
        "daily_notional_cap",
        "price_collar_bps",
        "max_failed_sell_notional",
        "sell_shortfall_tolerance",
        mode="before",
    )
    @classmethod
    def _decimals(cls, value: Any, info: Any) -> Decimal | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
            return None
        result = to_decimal(value, field=info.field_name)
        if result < 0:
            raise ValueError(f"must not be negative, got {result}")
        if info.field_name in ("max_order_fraction", "sell_shortfall_tolerance") and result > 1:
            raise ValueError(f"must be a fraction in [0, 1], got {result}")
        return result

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "risk config") -> RiskConfig:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc, data, what=source)) from None

    @classmethod
    def load(cls, path: Path | None = None, environ: Mapping[str, str] | None = None) -> RiskConfig:
        """From the [risk] table of a TOML file, then TRIMTAB_RISK_<FIELD> variables."""
        data: dict[str, Any] = {}
        if path is not None:
            data.update(read_toml_table(path, "risk", fallback_to_top=False))
        env = os.environ if environ is None else environ
        for name in cls.model_fields:
            key = f"TRIMTAB_RISK_{name.upper()}"
            if key in env:
                data[name] = env[key]
        return cls.from_mapping(data, source=f"risk config{f' in {path}' if path else ''}")


def market_day_start(now: datetime) -> datetime:
    """Midnight in New York of the trading day that contains now (the daily cap's window)."""
    day: date = now.astimezone(NEW_YORK).date()
    return datetime.combine(day, time(0), tzinfo=NEW_YORK)


class RiskGuard:
    """Checks orders and plans against a RiskConfig, using the ledger for durable state."""

    def __init__(self, config: RiskConfig, ledger: Ledger | None) -> None:
        if config.daily_notional_cap is not None and ledger is None:
            raise ConfigurationError("daily_notional_cap needs a ledger to count what was traded")
        self.config = config
        self._ledger = ledger

    def halted(self) -> str | None:
        """The kill switch's reason when it is set, else None."""
        if self._ledger is None:
            return None
        return self._ledger.get_flag(HALT_FLAG)

    def check_plan(self, planned_notional: Decimal, portfolio_value: Decimal, now: datetime) -> None:
        """Refuse the whole plan (SafetyRefusalError) when it breaks a plan-level limit."""
        reason = self.halted()
        if reason is not None:
            raise SafetyRefusalError(f"trading is halted ({reason}); nothing was sent")
        limit = self.config.max_plan_turnover
        if limit is not None and portfolio_value > ZERO and planned_notional / portfolio_value > limit:
            raise SafetyRefusalError(
                f"plan turnover {money(planned_notional)} is {planned_notional / portfolio_value:.2%} of "
                f"the portfolio, above max_plan_turnover {limit:.2%}; nothing was sent"
            )
        cap = self.config.daily_notional_cap
        if cap is not None:
            traded = self.traded_today(now)
            if traded + planned_notional > cap:
                raise SafetyRefusalError(
                    f"daily notional cap {money(cap)}: {money(traded)} traded today plus "
                    f"{money(planned_notional)} planned would exceed it; nothing was sent"
                )

    def traded_today(self, now: datetime) -> Decimal:
        assert self._ledger is not None
        return self._ledger.traded_notional_since(market_day_start(now))

    def order_problem(self, notional: Decimal, portfolio_value: Decimal) -> str | None:
        """Why an order of this notional may not be sent at all (checked when sizing)."""
        limit = self.config.max_order_notional
        if limit is not None and notional > limit:
            return f"order notional {money(notional)} is above max_order_notional {money(limit)}"
        fraction = self.config.max_order_fraction
        if fraction is not None and portfolio_value > ZERO and notional / portfolio_value > fraction:
            return (
                f"order notional {money(notional)} is {notional / portfolio_value:.2%} of the portfolio, "
                f"above max_order_fraction {fraction:.2%}"
            )
        return None

    def check_send(
        self,
        side: Side,
        qty: Decimal,
        limit_price: Decimal | None,
        arrival: Quote | None,
        quote: Quote | None,
        now: datetime,
    ) -> None:
        """Refuse one order about to be sent (SafetyRefusalError): collar and daily cap."""
        collar = self.config.price_collar_bps
        if collar is not None and arrival is not None:
            price = limit_price
            if price is None and quote is not None:
                price = quote.far_touch(side is Side.BUY)
            if price is not None:
                away = (price - arrival.mid) / arrival.mid * BPS
                if (side is Side.BUY and away > collar) or (side is Side.SELL and -away > collar):
                    raise SafetyRefusalError(
                        f"price collar: {price} is {abs(away):.1f} bps from the arrival mid {arrival.mid}, "
                        f"beyond price_collar_bps {collar}"
                    )
        cap = self.config.daily_notional_cap
        if cap is not None:
            reference = limit_price or (quote.far_touch(side is Side.BUY) if quote else None)
            if reference is None and arrival is not None:
                reference = arrival.far_touch(side is Side.BUY)
            notional = qty * (reference or ZERO)
            traded = self.traded_today(now)
            if traded + notional > cap:
                raise SafetyRefusalError(
                    f"daily notional cap {money(cap)}: {money(traded)} traded today, this order "
                    f"({money(notional)}) would exceed it"
                )

    def collar_price(self, side: Side, arrival: Quote | None) -> Decimal | None:
        """The worst price the collar allows, to turn a market order into a limit order."""
        collar = self.config.price_collar_bps
        if collar is None or arrival is None:
            return None
        factor = collar / BPS
        return arrival.mid * (1 + factor) if side is Side.BUY else arrival.mid * (1 - factor)
