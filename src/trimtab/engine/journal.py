"""The run's journal: writes to the ledger before acting and as events arrive.

Without a ledger every method does nothing, so the engine has one code path.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from trimtab.domain.orders import ClientOrderId, OrderEvent, OrderEventKind, OrderRequest, OrderSnapshot
from trimtab.domain.quotes import Quote
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock
from trimtab.ports.ledger import Ledger, NewIntent, PlanState

log = get_logger(__name__)

_ORDER = list(PlanState)

QUOTE_HEARTBEAT = timedelta(seconds=1)
"""While a symbol is worked, a quote whose touch prices did not change is recorded at most
this often (it says the touch still held, which the markouts need)."""

MARKOUT_HORIZONS = (timedelta(seconds=1), timedelta(seconds=10), timedelta(seconds=60))
"""After a symbol's orders are done, only the market at these times after each fill is
recorded (what TCA's markouts read), not every quote of a lingering stream: one row each."""


class Journal:
    """The ledger side of one plan run."""

    def __init__(
        self,
        ledger: Ledger | None,
        plan_id: str,
        clock: Clock,
        lease_clock: Clock,
        owner: str,
        lease_ttl: float,
        state: PlanState = PlanState.RECEIVED,
    ) -> None:
        self.ledger = ledger
        self.plan_id = plan_id
        self._clock = clock
        self._lease_clock = lease_clock
        self.owner = owner
        self.lease_ttl = timedelta(seconds=lease_ttl)
        self.state = state
        self.client_order_ids: set[ClientOrderId] = set()
        self._last_quotes: dict[str, Quote] = {}  # the last quote recorded per symbol
        self._open: dict[str, set[ClientOrderId]] = {}  # orders not yet final per symbol
        self._targets: dict[str, list[datetime]] = {}  # markout times still to record
        self._held: dict[str, Quote] = {}  # the latest quote seen but not recorded
        self._filled: dict[ClientOrderId, Decimal] = {}  # cumulative fill qty recorded per order
        self._intents: list[NewIntent] = []  # waiting for their shared commit
        self._intents_committed: asyncio.Future[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.ledger is not None

    def advance(self, state: PlanState) -> None:
        """Move the plan forward to state; never backwards (a resumed plan re-enters)."""
        if _ORDER.index(state) <= _ORDER.index(self.state):
            return
        self.state = state
        if self.ledger is not None:
            self.ledger.set_plan_state(self.plan_id, state, now=self._lease_clock.now())

    async def intent(self, request: OrderRequest, step: int, quote: Quote | None) -> None:
        """Durably record an order about to be sent: returns once the intent is committed.

        The orders about to be sent in one turn of the event loop (a phase starting many at
        once) share one commit.
        """
        self.client_order_ids.add(request.client_order_id)
        self._open.setdefault(request.symbol, set()).add(request.client_order_id)
        if request.symbol not in self._last_quotes and quote is not None:
            self._last_quotes[request.symbol] = quote
        if self.ledger is None:
            return
        self._intents.append(NewIntent(request, step, quote, self._clock.now()))
        committed = self._intents_committed
        if committed is None:
            loop = asyncio.get_running_loop()
            committed = self._intents_committed = loop.create_future()
            # Read even when every waiter was cancelled, so a failure is never left unseen.
            committed.add_done_callback(lambda done: done.cancelled() or done.exception())
            loop.call_soon(self._commit_intents)
        # Shielded: one waiter cancelled must not cancel the commit the others wait for.
        await asyncio.shield(committed)

    def _commit_intents(self) -> None:
        intents, self._intents = self._intents, []
        committed, self._intents_committed = self._intents_committed, None
        assert self.ledger is not None
        assert committed is not None
        try:
            self.ledger.record_intents(self.plan_id, intents)
        except Exception as exc:
            committed.set_exception(exc)
        else:
            committed.set_result(None)

    def order(self, snapshot: OrderSnapshot) -> None:
        if self.ledger is not None:
            self.ledger.record_order(self.plan_id, snapshot)

    def event(self, event: OrderEvent) -> None:
        order = event.order
        if self.ledger is None or order.client_order_id not in self.client_order_ids:
            return
        self.ledger.record_event(self.plan_id, event)
        if event.fill_qty is not None and event.fill_qty > 0:
            cid = order.client_order_id
            self._filled[cid] = max(self._filled.get(cid, Decimal(0)), order.filled_qty)
            targets = self._targets.setdefault(order.symbol, [])
            for horizon in MARKOUT_HORIZONS:
                bisect.insort(targets, event.timestamp + horizon)
        if order.status.is_terminal:
            self._open.get(order.symbol, set()).discard(order.client_order_id)

    def note_filled(self, client_order_id: ClientOrderId, qty: Decimal) -> None:
        """What the ledger already holds for an order (from an interrupted run)."""
        self._filled[client_order_id] = max(self._filled.get(client_order_id, Decimal(0)), qty)

    def record_missing_fills(self, snapshots: Iterable[OrderSnapshot], now: datetime) -> None:
        """Record fills the broker reported (a REST answer) whose stream event never reached
        the ledger before the run ended, so the ledger's fills match the result."""
        if self.ledger is None:
            return
        for snapshot in snapshots:
            cid = snapshot.client_order_id
            if cid not in self.client_order_ids:
                continue
            missing = snapshot.filled_qty - self._filled.get(cid, Decimal(0))
            if missing > 0:
                self.event(reconciled_fill(snapshot, missing, now))

    @property
    def quote_observer(self) -> Callable[[Quote], None] | None:
        """What records the market around this plan's orders: quote, or None without a ledger."""
        return self.quote if self.ledger is not None else None

    def quote(self, quote: Quote) -> None:
        """Record a quote of a symbol this plan has sent orders for, throttled.

        While an order of the symbol is open, every change of the bid or ask price is kept
        (the charts need the touch), other quotes at most once per QUOTE_HEARTBEAT. Once
        its orders are done (the stream lingers for the markouts), one quote per
        MARKOUT_HORIZONS after each fill: the one prevailing then, stamped with that time,
        recorded once a later quote shows the market got there. Quotes of other symbols (a
        stream still lingering from an earlier plan) are not this plan's and are dropped.
        """
        symbol = quote.symbol
        last = self._last_quotes.get(symbol)
        if last is None or self.ledger is None or quote.timestamp < last.timestamp:
            return
        if self._open.get(symbol):
            if (
                quote.bid == last.bid
                and quote.ask == last.ask
                and quote.timestamp - last.timestamp < QUOTE_HEARTBEAT
            ):
                return
            self._held.pop(symbol, None)
            self._record(quote)
            return
        targets = self._targets.get(symbol)
        if not targets:
            return
        if quote.timestamp < targets[0]:
            self._held[symbol] = quote
            return
        # The market was seen at or past these targets: at each one the quote before this
        # one still held (recorded as of the target), unless this one came at that instant.
        prevailing = self._held.pop(symbol, None) or last
        passed = bisect.bisect_right(targets, quote.timestamp)
        for target in targets[:passed]:
            if target == quote.timestamp:
                self._record(quote)
            elif target > self._last_quotes[symbol].timestamp:  # else recorded while worked
                self._record(replace(prevailing, timestamp=target))
        del targets[:passed]
        if self._last_quotes[symbol] is not quote:
            self._held[symbol] = quote

    def _record(self, quote: Quote) -> None:
        assert self.ledger is not None
        self._last_quotes[quote.symbol] = quote
        self.ledger.record_quote(self.plan_id, quote)

    def renew(self) -> bool:
        if self.ledger is None:
            return True
        return self.ledger.renew_lease(
            self.plan_id, self.owner, now=self._lease_clock.now(), lease_ttl=self.lease_ttl
        )

    def finish(self, result: ExecutionResult) -> None:
        if self.ledger is None:
            return
        state = PlanState.FAILED if result.status is ExecutionStatus.FAILURE else PlanState.DONE
        self.ledger.finish_plan(self.plan_id, result, state, now=self._lease_clock.now())
        self.state = state

    def release(self, note: str | None = None) -> None:
        """Give the plan up unfinished (an error or a refusal stopped it), so a re-run resumes it."""
        if self.ledger is None:
            return
        self.ledger.flush()
        if not self.ledger.release_lease(self.plan_id, self.owner, now=self._lease_clock.now(), note=note):
            log.warning("lease already gone at release owner=%s", self.owner)


def reconciled_fill(snapshot: OrderSnapshot, qty: Decimal, now: datetime) -> OrderEvent:
    """A fill the broker reports that the ledger has not recorded."""
    kind = OrderEventKind.FILL if snapshot.filled_qty >= snapshot.qty else OrderEventKind.PARTIAL_FILL
    return OrderEvent(
        kind=kind,
        order=snapshot,
        timestamp=now,
        fill_qty=qty,
        fill_price=snapshot.filled_avg_price,
        reason="reconciled with the broker",
    )
