"""The output of an execution: per-order results, per-phase statistics, the plan's status."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from trimtab.domain.plan import Action


class ExecutionStatus(StrEnum):
    SUCCESS = "SUCCESS"
    SUCCESS_WITH_SKIPS = "SUCCESS_WITH_SKIPS"
    PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
    FAILURE = "FAILURE"


class QuoteView(BaseModel):
    """A quote as recorded on a result."""

    model_config = ConfigDict(frozen=True)

    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    time: datetime


class Attempt(BaseModel):
    """One order sent for an item: a rung of the ladder or the final market order."""

    model_config = ConfigDict(frozen=True)

    step: int
    time: datetime
    client_order_id: str
    broker_order_id: str | None
    order_type: str
    limit_price: Decimal | None
    qty: Decimal
    quote: QuoteView | None
    filled_qty: Decimal
    avg_fill_price: Decimal | None
    status: str
    ended_at: datetime | None = None


class OrderResult(BaseModel):
    """What happened to one plan item. Success means filled, never merely placed."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    action: Action
    side: str | None
    trade_amount: Decimal | None
    shares: Decimal
    filled_shares: Decimal
    avg_fill_price: Decimal | None
    filled_notional: Decimal
    arrival_mid: Decimal | None
    cost_bps: Decimal | None
    order_type: str | None
    client_order_id: str | None
    urgency: str | None
    scale_factor: Decimal | None
    success: bool
    skipped: bool
    skip_reason: str | None
    error_message: str | None
    fallback_reason: str | None
    notes: tuple[str, ...]
    attempts: tuple[Attempt, ...]


class PhaseStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    orders: int
    succeeded: int
    failed: int
    skipped: int
    notional: Decimal
    started_at: datetime | None
    finished_at: datetime | None
    timed_out: bool


class ExecutionStats(BaseModel):
    """Per-phase statistics of an execution."""

    model_config = ConfigDict(frozen=True)

    sell: PhaseStats
    buy: PhaseStats
    settlement_seconds: float
    buying_power_for_buys: Decimal | None
    buy_scale_factor: Decimal | None
    requests: int


class ExecutionResult(BaseModel):
    """The outcome of executing a plan."""

    model_config = ConfigDict(frozen=True)

    plan_id: str
    correlation_id: str | None
    status: ExecutionStatus
    success: bool
    already_executed: bool
    orders_placed: int
    orders_succeeded: int
    total_trade_value: Decimal
    started_at: datetime
    finished_at: datetime
    message: str | None
    warnings: tuple[str, ...]
    orders: tuple[OrderResult, ...]
    stats: ExecutionStats


class PlannedOrder(BaseModel):
    """One order a dry run would send, sized and priced from the current account and quotes."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    action: Action
    side: str | None
    trade_amount: Decimal | None
    shares: Decimal
    reference_price: Decimal | None
    first_limit_price: Decimal | None
    estimated_notional: Decimal
    scale_factor: Decimal | None
    skip_reason: str | None
    notes: tuple[str, ...]


class PreviewResult(BaseModel):
    """What a dry run found: the orders it would send, nothing sent."""

    model_config = ConfigDict(frozen=True)

    plan_id: str
    correlation_id: str | None
    dry_run: bool = True
    algo: str
    estimated_buying_power: Decimal
    orders: tuple[PlannedOrder, ...]
