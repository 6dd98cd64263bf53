"""The rebalance plan: the input of an execution, validated in full before anything is sent."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trimtab.domain.errors import PlanValidationError
from trimtab.domain.money import MAX_AMOUNT, ZERO, to_decimal

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,14}$")
MAX_PLAN_ID_LENGTH = 128


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"


class Urgency(StrEnum):
    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _decimal_or_none(value: Any, field: str) -> Decimal | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    return to_decimal(value, field=field)


class RebalancePlanItem(BaseModel):
    """One symbol of a plan: dollars to trade (signed: + buy, - sell) or a full close."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    action: Action
    trade_amount: Decimal | None = None
    target_weight: Decimal | None = None
    urgency: Urgency | None = None

    @field_validator("symbol", mode="before")
    @classmethod
    def _check_symbol(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        symbol = value.strip().upper()
        if not symbol:
            raise ValueError("must not be empty")
        if not SYMBOL_PATTERN.match(symbol):
            raise ValueError(f"{value!r} is not a valid symbol (letters, digits, '.' and '-', at most 15)")
        return symbol

    @field_validator("action", "urgency", mode="before")
    @classmethod
    def _normalize_enum(cls, value: Any) -> Any:
        return _upper(value)

    @field_validator("trade_amount", mode="before")
    @classmethod
    def _check_amount(cls, value: Any) -> Decimal | None:
        amount = _decimal_or_none(value, "trade_amount")
        if amount is not None and abs(amount) > MAX_AMOUNT:
            raise ValueError(f"{amount} is beyond the largest accepted amount ({MAX_AMOUNT})")
        return amount

    @field_validator("target_weight", mode="before")
    @classmethod
    def _check_weight(cls, value: Any) -> Decimal | None:
        weight = _decimal_or_none(value, "target_weight")
        if weight is not None and not (ZERO <= weight <= 1):
            raise ValueError(f"must be between 0 and 1, got {weight}")
        return weight

    @model_validator(mode="after")
    def _check_sign(self) -> RebalancePlanItem:
        amount = self.trade_amount
        if self.action is Action.BUY:
            if amount is None:
                raise ValueError("trade_amount: a BUY needs a positive trade_amount")
            if amount <= ZERO:
                raise ValueError(f"trade_amount: a BUY needs a positive amount, got {amount}")
            if self.target_weight == ZERO:
                raise ValueError("target_weight: a BUY cannot have target_weight 0")
        elif self.action is Action.SELL:
            if amount is None and self.target_weight is None:
                raise ValueError("trade_amount: a SELL needs a negative trade_amount or target_weight 0")
            if amount is not None and amount >= ZERO:
                raise ValueError(f"trade_amount: a SELL needs a negative amount, got {amount}")
            if amount is None and self.target_weight != ZERO:
                raise ValueError("target_weight: a SELL without trade_amount must have target_weight 0")
        elif amount is not None and amount != ZERO:
            raise ValueError(f"trade_amount: a HOLD must not trade, got {amount}")
        return self

    @property
    def is_liquidation(self) -> bool:
        """A SELL with target_weight 0 closes the whole position, whatever its size."""
        return self.action is Action.SELL and self.target_weight == ZERO


class RebalancePlan(BaseModel):
    """A plan: per symbol, dollars to buy or sell, or a full close."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan_id: str
    correlation_id: str | None = None
    default_urgency: Urgency | None = None
    items: tuple[RebalancePlanItem, ...] = Field(min_length=1)

    @field_validator("plan_id", mode="before")
    @classmethod
    def _check_plan_id(cls, value: Any) -> Any:
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError("must be a string")
        plan_id = value.strip()
        if not plan_id:
            raise ValueError("must not be empty")
        if len(plan_id) > MAX_PLAN_ID_LENGTH:
            raise ValueError(f"must be at most {MAX_PLAN_ID_LENGTH} characters")
        if any(ord(ch) < 32 for ch in plan_id):
            raise ValueError("must not contain control characters")
        return plan_id

    @field_validator("default_urgency", mode="before")
    @classmethod
    def _normalize_urgency(cls, value: Any) -> Any:
        return _upper(value)

    @model_validator(mode="after")
    def _check_duplicates(self) -> RebalancePlan:
        seen: dict[str, int] = {}
        for index, item in enumerate(self.items):
            if item.symbol in seen:
                raise ValueError(
                    f"items[{index}].symbol: duplicate symbol {item.symbol} (also items[{seen[item.symbol]}])"
                )
            seen[item.symbol] = index
        return self

    def content_hash(self) -> str:
        """SHA-256 of what the plan trades: the same plan_id with another hash is another plan.

        Independent of item order and number formatting ("5000" equals "5000.00");
        correlation_id is free text for tracing and is left out.
        """
        content = _canonical(self.model_dump(mode="python", exclude={"correlation_id"}))
        assert isinstance(content, dict)
        items = content.pop("items")
        assert isinstance(items, list)
        content["items"] = sorted(items, key=lambda item: str(item["symbol"]))
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def urgency_of(self, item: RebalancePlanItem) -> Urgency | None:
        """The item's urgency, else the plan's default, else None (the config decides)."""
        return item.urgency or self.default_urgency


def _canonical(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _describe_location(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    symbol_hint = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
            if index >= 1 and loc[index - 1] == "items":
                try:
                    raw = data["items"][part]
                    if isinstance(raw, dict) and isinstance(raw.get("symbol"), str):
                        symbol_hint = f" (symbol {raw['symbol'].strip().upper() or '<empty>'})"
                except (KeyError, IndexError, TypeError):
                    pass
        else:
            parts.append(str(part))
    return ".".join(parts) + symbol_hint


def format_validation_error(error: ValidationError, data: Any, what: str = "plan") -> str:
    """One line naming every problem with its item and field."""
    messages = []
    for detail in error.errors():
        loc = tuple(detail["loc"])
        message = str(detail["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            if message.startswith(prefix):
                message = message[len(prefix) :]
        if detail["type"] == "extra_forbidden":
            message = "unknown field"
        elif detail["type"] == "missing":
            message = "missing"
        where = _describe_location(loc, data) if loc else ""
        messages.append(f"{where}: {message}" if where else message)
    return f"invalid {what}: " + "; ".join(messages)


def parse_plan(data: Any) -> RebalancePlan:
    """Validate raw plan data (already parsed from a file) into a RebalancePlan."""
    if not isinstance(data, dict):
        raise PlanValidationError("invalid plan: the top level must be an object with plan_id and items")
    try:
        return RebalancePlan.model_validate(data)
    except ValidationError as exc:
        raise PlanValidationError(format_validation_error(exc, data)) from None
