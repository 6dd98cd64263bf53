"""ExecutionConfig: every tunable of an execution, frozen and validated.

Loadable from a TOML file (the [execution] table, or the top level) and from environment
variables named TRIMTAB_<FIELD> (upper case), which override the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trimtab.domain.errors import ConfigurationError
from trimtab.domain.money import to_decimal
from trimtab.domain.plan import Urgency, format_validation_error


class Anchor(StrEnum):
    """Where the first limit price of a ladder sits."""

    PASSIVE = "passive"  # at the near touch (bid for a buy)
    IMPROVE = "improve"  # one tick inside the near touch, when the spread allows
    MID = "mid"  # at the mid, rounded away from the far side


def _dec(value: Any, info_field: str) -> Decimal:
    return to_decimal(value, field=info_field)


class LadderPreset(BaseModel):
    """How patiently an order is worked.

    The order starts at the anchor. Each step waits fill_wait seconds (less if the market
    moves away), then re-pegs from a fresh quote at the next fraction of the spread
    toward the far side (0 = near touch, 1 = far touch). After the last step the rest is
    sent as a market order. An empty steps tuple means a market order at once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    anchor: Anchor = Anchor.IMPROVE
    fill_wait: float = Field(default=20.0, gt=0, le=3600)
    steps: tuple[Decimal, ...] = (Decimal("0"), Decimal("0.5"), Decimal("0.75"), Decimal("0.95"))

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_decimal(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(_dec(v, "steps") for v in value)
        return value

    @model_validator(mode="after")
    def _check_steps(self) -> LadderPreset:
        previous = Decimal("-1")
        for fraction in self.steps:
            if not Decimal("0") <= fraction <= Decimal("1"):
                raise ValueError(f"steps: each fraction must be in [0, 1], got {fraction}")
            if fraction < previous:
                raise ValueError("steps: fractions must not decrease")
            previous = fraction
        return self


DEFAULT_LADDERS: dict[Urgency, LadderPreset] = {
    Urgency.LOW: LadderPreset(
        anchor=Anchor.PASSIVE,
        fill_wait=45.0,
        steps=(Decimal("0"), Decimal("0.25"), Decimal("0.5"), Decimal("0.75"), Decimal("0.95")),
    ),
    # Measured in bench/RESULTS.md: a 30 s wait and gentler rungs beat 20 s rungs of
    # (0, 0.5, 0.75, 0.95) on the synthetic market and the IBM replay alike.
    Urgency.NORMAL: LadderPreset(
        anchor=Anchor.IMPROVE,
        fill_wait=30.0,
        steps=(Decimal("0"), Decimal("0.25"), Decimal("0.5"), Decimal("0.75")),
    ),
    Urgency.HIGH: LadderPreset(anchor=Anchor.MID, fill_wait=5.0, steps=(Decimal("1"),)),
}


class ExecutionConfig(BaseModel):
    """Every tunable of an execution. Durations are seconds; money is Decimal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    algo: Literal["smart", "market"] = "smart"
    default_urgency: Urgency = Urgency.NORMAL
    ladders: dict[Urgency, LadderPreset] = Field(default_factory=lambda: dict(DEFAULT_LADDERS))
    repeg_threshold_bps: Decimal = Decimal("5")
    size_aggression_ratio: Decimal = Decimal("1")

    quote_max_age: float = Field(default=10.0, gt=0)
    max_spread_bps: Decimal = Decimal("100")
    quote_refresh_attempts: int = Field(default=3, ge=0, le=100)
    quote_refresh_interval: float = Field(default=1.0, gt=0)
    on_bad_quote: Literal["skip", "market"] = "skip"

    min_notional: Decimal = Decimal("1")
    small_remainder: Literal["market", "drop"] = "market"

    cash_reserve: Decimal = Decimal("0")
    buy_price_buffer_bps: Decimal = Decimal("20")
    buying_power_tolerance: Decimal = Decimal("0.01")

    sell_phase_timeout: float = Field(default=900.0, gt=0)
    settlement_timeout: float = Field(default=60.0, gt=0)
    buy_phase_timeout: float = Field(default=900.0, gt=0)
    plan_timeout: float = Field(default=2400.0, gt=0)
    order_ack_timeout: float = Field(default=15.0, gt=0)
    market_order_timeout: float = Field(default=60.0, gt=0)

    lease_ttl: float = Field(default=30.0, gt=0, le=3600)

    max_concurrent_orders: int = Field(default=50, ge=1, le=10000)
    max_request_retries: int = Field(default=5, ge=0, le=100)
    result_cache_size: int = Field(default=256, ge=1)
    client_order_id_prefix: str = Field(default="tt", pattern=r"^[A-Za-z0-9]{1,10}$")

    @field_validator(
        "repeg_threshold_bps",
        "size_aggression_ratio",
        "max_spread_bps",
        "min_notional",
        "cash_reserve",
        "buy_price_buffer_bps",
        "buying_power_tolerance",
        mode="before",
    )
    @classmethod
    def _decimal_fields(cls, value: Any, info: Any) -> Decimal:
        result = _dec(value, info.field_name)
        if result < 0:
            raise ValueError(f"must not be negative, got {result}")
        return result

    @field_validator("ladders", mode="before")
    @classmethod
    def _merge_ladders(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        merged: dict[Any, Any] = dict(DEFAULT_LADDERS)
        for key, preset in value.items():
            urgency = Urgency(str(key).upper()) if isinstance(key, str) else key
            merged[urgency] = preset
        return merged

    @model_validator(mode="after")
    def _check_consistency(self) -> ExecutionConfig:
        if self.max_spread_bps <= 0:
            raise ValueError("max_spread_bps must be positive")
        if self.buying_power_tolerance >= 1:
            raise ValueError("buying_power_tolerance must be below 1")
        if self.plan_timeout < max(self.sell_phase_timeout, self.buy_phase_timeout):
            raise ValueError("plan_timeout must be at least as long as each phase timeout")
        return self

    def ladder(self, urgency: Urgency | None) -> LadderPreset:
        return self.ladders[urgency or self.default_urgency]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "execution config") -> ExecutionConfig:
        """Validate a mapping, turning errors into one ConfigurationError line."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc, data, what=source)) from None

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> ExecutionConfig:
        """Build a config from a TOML file, then TRIMTAB_* environment variables, then overrides."""
        data: dict[str, Any] = {}
        if path is not None:
            data.update(read_toml_table(path, "execution"))
        env = os.environ if environ is None else environ
        for name in cls.model_fields:
            key = f"TRIMTAB_{name.upper()}"
            if key in env and name != "ladders":
                data[name] = env[key]
        if overrides:
            data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data, source=f"execution config{f' in {path}' if path else ''}")


def read_toml_table(path: Path, table: str, *, fallback_to_top: bool = True) -> dict[str, Any]:
    """Read one table of a TOML file ([table]); without one, the top level (if fallback_to_top)."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    section = document.get(table)
    if isinstance(section, dict):
        return dict(section)
    if not fallback_to_top:
        return {}
    return {k: v for k, v in document.items() if not isinstance(v, dict) or k == "ladders"}
