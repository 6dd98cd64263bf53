"""The ledger port: the durable record of plans, order intents, orders, events and fills.

The engine calls it inline and synchronously: a local SQLite or PostgreSQL write takes
well under a millisecond. Nothing here reads the wall clock; every time comes from the
caller, so the simulated exchange can run in virtual time.

Quotes of the symbols being worked are recorded too (record_quote), so the market
around each order can be charted and each fill marked out afterwards.

A plan's progress is a persisted state machine::

    RECEIVED -> SELLING -> SETTLING -> BUYING -> DONE
        \\__________\\__________\\__________\\______-> FAILED

A plan only moves forward (a phase with nothing to do may be skipped, e.g. RECEIVED ->
BUYING for a plan without sells); setting the state it is already in is a no-op, so a
resumed plan may re-enter its phase; DONE and FAILED are final. Any other change raises
IllegalTransitionError.

Intents, orders, events, fills and quotes are append-only. Only a plan's own row
changes: its state, its lease and, at the end, its stored result.

Durable before acting: record_intent (record_intents for several) commits the intent, and
everything recorded before it, before it returns; the engine sends the order after that.
Order snapshots and events may wait in memory until the next commit point (see
Ledger.flush), so an order lifecycle costs one commit, not one per event. Events lost in a
crash are still at the broker: recovery looks up every client order id of the plan's
intents, and records the orders and any fill quantity the ledger is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from trimtab.domain.errors import IllegalTransitionError
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEvent,
    OrderRequest,
    OrderSnapshot,
    OrderType,
    Side,
    TimeInForce,
)
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.quotes import Quote
from trimtab.domain.results import ExecutionResult


class PlanState(StrEnum):
    """Where a plan stands. The order of the members is the order of the phases."""

    RECEIVED = "RECEIVED"
    SELLING = "SELLING"
    SETTLING = "SETTLING"
    BUYING = "BUYING"
    DONE = "DONE"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (PlanState.DONE, PlanState.FAILED)

    def can_become(self, new: PlanState) -> bool:
        """True when the state machine allows self -> new (self -> self included)."""
        if self.is_terminal:
            return False
        if new is PlanState.FAILED or new is self:
            return True
        return _PHASE_ORDER[new] > _PHASE_ORDER[self]

    def transition(self, new: PlanState) -> PlanState:
        """Return new if self -> new is allowed, else raise IllegalTransitionError."""
        if not self.can_become(new):
            raise IllegalTransitionError(f"plan state cannot go from {self.value} to {new.value}")
        return new


_PHASE_ORDER = {state: index for index, state in enumerate(PlanState)}


class ClaimOutcome(StrEnum):
    """The answer of Ledger.begin_plan."""

    NEW = "NEW"
    """First sight of this plan: the caller owns it, state RECEIVED."""
    ALREADY_DONE = "ALREADY_DONE"
    """The plan is final; PlanClaim.result holds the stored result. Send nothing."""
    RESUME = "RESUME"
    """The plan is in progress and its lease expired (or is the caller's): the caller now
    owns it and must reconcile with the broker before resuming from PlanClaim.state."""
    BUSY = "BUSY"
    """Another owner holds a live lease on the plan. Do not touch it."""


@dataclass(frozen=True, slots=True)
class PlanClaim:
    """The outcome of claiming a plan, with the plan's state and lease after the claim."""

    outcome: ClaimOutcome
    plan_id: str
    state: PlanState
    owner: str | None
    lease_expires_at: datetime | None
    result: ExecutionResult | None = None

    @property
    def owned(self) -> bool:
        """True when the caller now owns the plan (NEW or RESUME)."""
        return self.outcome in (ClaimOutcome.NEW, ClaimOutcome.RESUME)


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A plan's row: identity, content, state, lease and the status of its stored result."""

    plan_id: str
    content_hash: str
    plan_json: str
    correlation_id: str | None
    state: PlanState
    owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    status: str | None
    """ExecutionStatus value of the stored result, None until the plan is finished."""


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """One line of a listing of plans, with totals from the intents and fills."""

    plan_id: str
    correlation_id: str | None
    state: PlanState
    status: str | None
    created_at: datetime
    updated_at: datetime
    orders: int
    """Order intents recorded (orders sent or about to be sent)."""
    fills: int
    filled_notional: Decimal
    """Sum of qty * price over the plan's fills, both sides."""


@dataclass(frozen=True, slots=True)
class NewIntent:
    """An order about to be sent, to be recorded: the request, its ladder step, the quote
    it was priced from and when."""

    request: OrderRequest
    step: int
    quote: Quote | None
    time: datetime


@dataclass(frozen=True, slots=True)
class IntentRecord:
    """An order the engine was about to send, with the quote it was priced from."""

    plan_id: str
    client_order_id: ClientOrderId
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    time_in_force: TimeInForce
    step: int
    quote: Quote | None
    time: datetime

    @property
    def request(self) -> OrderRequest:
        """The order request this intent stands for."""
        return OrderRequest(
            client_order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            order_type=self.order_type,
            limit_price=self.limit_price,
            time_in_force=self.time_in_force,
        )


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One execution: qty at price, at time."""

    plan_id: str
    client_order_id: ClientOrderId
    broker_order_id: BrokerOrderId
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    time: datetime

    @property
    def notional(self) -> Decimal:
        return self.qty * self.price


@dataclass(frozen=True, slots=True)
class StateChange:
    """One line of a plan's history: a state change or a change of owner."""

    plan_id: str
    from_state: PlanState | None
    to_state: PlanState
    owner: str | None
    time: datetime
    note: str


@runtime_checkable
class Ledger(Protocol):
    """The durable record the engine writes before it acts and as events arrive.

    Every datetime passed in must be timezone-aware. Unknown plan ids raise LookupError
    where a plan must exist.
    """

    # --- plans: claim, lease, state ---

    def begin_plan(
        self,
        plan_id: str,
        content_hash: str,
        plan_json: str,
        correlation_id: str | None,
        owner: str,
        *,
        now: datetime,
        lease_ttl: timedelta,
    ) -> PlanClaim:
        """Claim a plan atomically; see ClaimOutcome for the four answers.

        Of several processes racing on one new plan_id exactly one gets NEW. A known
        plan_id with another content_hash raises PlanValidationError.
        """
        ...

    def renew_lease(self, plan_id: str, owner: str, *, now: datetime, lease_ttl: timedelta) -> bool:
        """Extend owner's lease to now + lease_ttl. False when owner no longer holds the plan
        (another process took it over, or it is final): the caller must stop working on it."""
        ...

    def release_lease(self, plan_id: str, owner: str, *, now: datetime, note: str | None = None) -> bool:
        """Give up owner's lease of an unfinished plan so another process may resume it now;
        note (why, e.g. a refusal) goes into the plan's history. False when owner did not hold it."""
        ...

    def set_plan_state(self, plan_id: str, state: PlanState, *, now: datetime) -> None:
        """Move the plan to state; raises IllegalTransitionError if the machine forbids it."""
        ...

    def plan_state(self, plan_id: str) -> PlanState | None:
        """The plan's state, or None for an unknown plan_id."""
        ...

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        """The plan's row, or None for an unknown plan_id."""
        ...

    def finish_plan(
        self,
        plan_id: str,
        result: ExecutionResult,
        state: PlanState = PlanState.DONE,
        *,
        now: datetime,
    ) -> None:
        """Store the result, move to state (DONE or FAILED) and release the lease."""
        ...

    def stored_result(self, plan_id: str) -> ExecutionResult | None:
        """The result stored by finish_plan, or None."""
        ...

    def list_plans(self, limit: int | None = 50) -> list[PlanSummary]:
        """Plans, newest first, with totals. limit None lists them all."""
        ...

    def history(self, plan_id: str) -> list[StateChange]:
        """The plan's state changes and changes of owner, oldest first."""
        ...

    # --- the append-only record of orders ---

    def record_intent(
        self,
        plan_id: str,
        request: OrderRequest,
        *,
        step: int,
        quote: Quote | None,
        time: datetime,
    ) -> bool:
        """Record an order about to be sent. Call it before sending: when it returns, the
        intent and everything recorded before it are durable.

        Returns False, writing nothing, when this plan already has an intent with this
        client order id (a resumed plan re-sending under the same id).
        """
        ...

    def record_intents(self, plan_id: str, intents: Sequence[NewIntent]) -> list[bool]:
        """record_intent for several orders at once, in one commit: what the engine uses
        when several orders are about to be sent together. One bool per intent, in order."""
        ...

    def record_order(self, plan_id: str, order: OrderSnapshot) -> None:
        """Record the broker's view of an order (acknowledgement, lookup, reconciliation).

        Durable at the next commit point (see flush)."""
        ...

    def record_event(self, plan_id: str, event: OrderEvent) -> None:
        """Record an order event; a fill or partial fill also becomes a fill row.

        A fill already recorded (the same order at the same cumulative filled quantity,
        order.filled_qty, e.g. delivered by the stream and again by a REST poll) is not
        stored twice. Durable at the next commit point (see flush).
        """
        ...

    def flush(self) -> None:
        """Make every order and event recorded so far durable.

        Orders and events may wait in memory until the next commit point: the next
        record_intent (so they are durable before the next order is sent), any change to
        a plan (claim, lease, state, finish), any read of the record, flush() and close().
        """
        ...

    def intents(self, plan_id: str) -> list[IntentRecord]:
        """The plan's intents, in the order they were recorded."""
        ...

    def client_order_ids(self, plan_id: str) -> list[ClientOrderId]:
        """Every client order id the plan recorded an intent for, in order."""
        ...

    def orders(self, plan_id: str) -> list[OrderSnapshot]:
        """Every order snapshot recorded for the plan, in order."""
        ...

    def events(self, plan_id: str) -> list[OrderEvent]:
        """Every order event recorded for the plan, in order of arrival."""
        ...

    def fills(self, plan_id: str) -> list[FillRecord]:
        """The plan's fills, in order of arrival."""
        ...

    def traded_notional_since(self, since: datetime) -> Decimal:
        """Sum of qty * price over every fill at or after since, all plans, both sides."""
        ...

    # --- the market around the plan's orders (charts and markouts of the report) ---

    def record_quote(self, plan_id: str, quote: Quote) -> None:
        """Record a quote of a symbol the plan is working, as the stream delivered it.

        The caller throttles (the engine's Journal keeps every change of the touch and at
        most one other quote per symbol per second). Durable at the next commit point (see
        flush), like order events; a quote lost in a crash is only a gap in a chart.
        """
        ...

    def quotes(self, plan_id: str) -> list[Quote]:
        """The plan's recorded quotes, in the order they were recorded ([] for none)."""
        ...

    # --- flags (kill switch and the like) ---

    def set_flag(self, name: str, value: str, *, now: datetime) -> None: ...

    def get_flag(self, name: str) -> str | None: ...

    def clear_flag(self, name: str) -> None: ...

    def close(self) -> None:
        """Commit what is pending and release connections. Safe to call twice."""
        ...


def plan_content_hash(plan: RebalancePlan) -> str:
    """The plan's content hash (see RebalancePlan.content_hash), the key of idempotency."""
    return plan.content_hash()
