"""The run's journal: writes to the ledger before acting and as events arrive.

Without a ledger every method does nothing, so the engine has one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from trimtab.domain.orders import ClientOrderId, OrderEvent, OrderRequest, OrderSnapshot
from trimtab.domain.quotes import Quote
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock
from trimtab.ports.ledger import Ledger, PlanState

log = get_logger(__name__)

_ORDER = list(PlanState)

QUOTE_HEARTBEAT = timedelta(seconds=1)
"""A quote whose touch prices did not change is recorded at most this often per symbol."""


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
        self._last_quotes: dict[str, Quote] = {}

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

    def intent(self, request: OrderRequest, step: int, quote: Quote | None) -> None:
        """Durably record an order about to be sent."""
        self.client_order_ids.add(request.client_order_id)
        if request.symbol not in self._last_quotes and quote is not None:
            self._last_quotes[request.symbol] = quote
        if self.ledger is not None:
            self.ledger.record_intent(self.plan_id, request, step=step, quote=quote, time=self._clock.now())

    def order(self, snapshot: OrderSnapshot) -> None:
        if self.ledger is not None:
            self.ledger.record_order(self.plan_id, snapshot)

    def event(self, event: OrderEvent) -> None:
        if self.ledger is not None and event.order.client_order_id in self.client_order_ids:
            self.ledger.record_event(self.plan_id, event)

    @property
    def quote_observer(self) -> Callable[[Quote], None] | None:
        """What records the market around this plan's orders: quote, or None without a ledger."""
        return self.quote if self.ledger is not None else None

    def quote(self, quote: Quote) -> None:
        """Record a quote of a symbol this plan has sent orders for, throttled.

        Every change of the bid or ask price is kept (the charts and markouts need the
        touch); a change of the displayed sizes alone at most once per QUOTE_HEARTBEAT.
        Quotes of other symbols (a stream still lingering from an earlier plan) are not
        this plan's and are dropped.
        """
        last = self._last_quotes.get(quote.symbol)
        if last is None or self.ledger is None or quote.timestamp < last.timestamp:
            return
        if quote.bid == last.bid and quote.ask == last.ask and (
            quote.timestamp - last.timestamp < QUOTE_HEARTBEAT
            or (quote.bid_size == last.bid_size and quote.ask_size == last.ask_size)
        ):
            return
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
