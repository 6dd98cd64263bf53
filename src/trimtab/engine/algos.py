"""Order algorithms: plain market orders, and the smart quote-pegged limit ladder."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from trimtab.domain.errors import RejectedError
from trimtab.domain.money import BPS, ZERO, price_tick, round_buy_limit, round_sell_limit
from trimtab.domain.orders import OrderType, Side
from trimtab.domain.quotes import Quote
from trimtab.engine.config import Anchor, LadderPreset
from trimtab.engine.working import (
    AttemptRecord,
    OrderIntent,
    OrderSession,
    WorkOutcome,
    rejected_message,
)
from trimtab.logs import get_logger

log = get_logger(__name__)


def ladder_price(quote: Quote, side: Side, fraction: Decimal, anchor: Anchor | None) -> Decimal:
    """The limit price of a ladder step: `fraction` of the spread from the near touch.

    On the first step the anchor sets a floor of aggressiveness (improve by a tick, or
    the mid). The price is rounded to the tick away from the far side, never crossing
    the near touch backwards.
    """
    buying = side is Side.BUY
    near, far = quote.near_touch(buying), quote.far_touch(buying)
    spread = quote.spread
    direction = Decimal(1) if buying else Decimal(-1)
    offset = spread * fraction
    if anchor is Anchor.IMPROVE:
        tick = price_tick(near)
        if spread > tick:
            offset = max(offset, tick)
    elif anchor is Anchor.MID:
        offset = max(offset, spread / 2)
    raw = near + direction * offset
    if buying:
        price = round_buy_limit(raw)
        return min(max(price, near), far)
    price = round_sell_limit(raw)
    return max(min(price, near), far)


def moved_away(quote: Quote, side: Side, limit: Decimal, threshold_bps: Decimal) -> bool:
    """True when the near touch has run away from our limit by more than the threshold."""
    near = quote.near_touch(side is Side.BUY)
    gap = near - limit if side is Side.BUY else limit - near
    return gap > ZERO and gap / limit * BPS > threshold_bps


class MarketAlgorithm:
    """One market order for the whole quantity; the baseline of every comparison."""

    name = "market"

    async def work(self, session: OrderSession, intent: OrderIntent, outcome: WorkOutcome) -> WorkOutcome:
        await send_market(session, intent, outcome, intent.qty, step=0, quote=intent.arrival)
        return outcome


async def send_market(
    session: OrderSession,
    intent: OrderIntent,
    outcome: WorkOutcome,
    qty: Decimal,
    *,
    step: int,
    quote: Quote | None,
) -> None:
    """Send a market order for qty and wait for it to finish (bounded), cancelling at timeout."""
    if session.time_left(intent) <= 0:
        outcome.timed_out = True
        return
    order_type, limit = OrderType.MARKET, None
    collar = session.risk.collar_price(intent.side, intent.arrival)
    if collar is not None:
        # With a price collar a market order becomes a limit order at the collar's edge.
        order_type = OrderType.LIMIT
        limit = round_buy_limit(collar) if intent.side is Side.BUY else round_sell_limit(collar)
    try:
        record = await session.submit(
            intent, outcome, step=step, qty=qty, order_type=order_type, limit_price=limit, quote=quote
        )
    except RejectedError as exc:
        outcome.error = rejected_message(exc)
        log.warning("order rejected symbol=%s reason=%s", intent.symbol, exc)
        return
    timeout = min(session.config.market_order_timeout, max(session.time_left(intent), 0.0))
    await session.wait(record, timeout)
    if not _is_final(session, record):
        outcome.timed_out = session.time_left(intent) <= 0
        await session.cancel(record)
    _note_rejection(outcome, record)


def _is_final(session: OrderSession, record: AttemptRecord) -> bool:
    tracked = session.tracker.get(record.client_order_id)
    return tracked is not None and tracked.is_terminal


def _note_rejection(outcome: WorkOutcome, record: AttemptRecord) -> None:
    snap = record.snapshot
    if snap is not None and snap.status.value == "rejected":
        outcome.error = f"rejected by the broker: {snap.reject_reason or 'no reason given'}"


class SmartAlgorithm:
    """Quote-pegged limit orders on a re-pegging ladder, escalated to market at the end.

    Each step prices from a fresh usable quote, waits for fills (or for the market to
    move away), cancels and confirms, then re-sends only the remaining quantity.
    """

    name = "smart"

    async def work(self, session: OrderSession, intent: OrderIntent, outcome: WorkOutcome) -> WorkOutcome:
        if not await session.quotes.acquire(intent.symbol):
            outcome.fallback_reason = session.quotes.stream_error
            await send_market(session, intent, outcome, intent.qty, step=0, quote=intent.arrival)
            return outcome
        try:
            return await self._ladder(session, intent, outcome)
        finally:
            await session.quotes.release(intent.symbol)

    async def _ladder(self, session: OrderSession, intent: OrderIntent, outcome: WorkOutcome) -> WorkOutcome:
        config = session.config
        ladder = config.ladder(intent.urgency)
        steps = list(ladder.steps)
        start = self._first_step(intent, ladder, config.size_aggression_ratio)
        step_index = 0
        for position, fraction in enumerate(steps[start:], start=start):
            remaining = intent.qty - outcome.filled_qty
            if remaining <= ZERO:
                return outcome
            if session.time_left(intent) <= 0:
                outcome.timed_out = True
                return outcome
            quote, problem = await session.quotes.usable(intent.symbol)
            if quote is None:
                return await self._no_quote(session, intent, outcome, remaining, step_index, problem)
            anchor = ladder.anchor if position == start else None
            limit = ladder_price(quote, intent.side, fraction, anchor)
            if self._below_minimum(session, intent, remaining, limit):
                return await self._small_remainder(session, intent, outcome, remaining, step_index, quote)
            try:
                record = await session.submit(
                    intent,
                    outcome,
                    step=step_index,
                    qty=remaining,
                    order_type=OrderType.LIMIT,
                    limit_price=limit,
                    quote=quote,
                )
            except RejectedError as exc:
                outcome.error = rejected_message(exc)
                log.warning("order rejected symbol=%s reason=%s", intent.symbol, exc)
                return outcome
            step_index += 1
            await self._rest(session, intent, record, limit, ladder)
            if not await session.cancel(record):
                outcome.error = "cancel of the previous order was not confirmed; nothing more sent"
                return outcome
            _note_rejection(outcome, record)
            if outcome.error:
                return outcome
        remaining = intent.qty - outcome.filled_qty
        if remaining > ZERO:
            if session.time_left(intent) <= 0:
                outcome.timed_out = True
                return outcome
            quote, _ = await session.quotes.usable(intent.symbol)
            if self._below_minimum(session, intent, remaining, quote.mid if quote else None):
                return await self._small_remainder(session, intent, outcome, remaining, step_index, quote)
            await send_market(session, intent, outcome, remaining, step=step_index, quote=quote)
        return outcome

    @staticmethod
    def _first_step(intent: OrderIntent, ladder: LadderPreset, ratio: Decimal) -> int:
        """Start one rung more aggressive when the order dwarfs the size on its side."""
        if intent.arrival is None or len(ladder.steps) < 2 or ratio <= ZERO:
            return 0
        displayed = intent.arrival.bid_size if intent.side is Side.BUY else intent.arrival.ask_size
        return 1 if intent.qty > displayed * ratio else 0

    async def _rest(
        self,
        session: OrderSession,
        intent: OrderIntent,
        record: AttemptRecord,
        limit: Decimal,
        ladder: LadderPreset,
    ) -> None:
        wake = asyncio.Event()
        threshold = session.config.repeg_threshold_bps

        def on_quote(quote: Quote) -> None:
            if moved_away(quote, intent.side, limit, threshold):
                wake.set()

        remove = session.quotes.watch(intent.symbol, on_quote)
        try:
            await session.wait(record, min(ladder.fill_wait, max(session.time_left(intent), 0.0)), wake)
        finally:
            remove()

    @staticmethod
    def _below_minimum(
        session: OrderSession, intent: OrderIntent, qty: Decimal, price: Decimal | None
    ) -> bool:
        if price is None or not intent.fractionable:
            return False
        return qty * price < session.config.min_notional and qty != qty.to_integral_value()

    async def _small_remainder(
        self,
        session: OrderSession,
        intent: OrderIntent,
        outcome: WorkOutcome,
        remaining: Decimal,
        step: int,
        quote: Quote | None,
    ) -> WorkOutcome:
        """A fractional remainder below the minimum notional cannot be sent as a limit order.

        A sell remainder is finished as a market order (brokers accept closing dust that
        way) unless the config says drop; a buy remainder is always dropped.
        """
        if session.config.small_remainder == "drop" or intent.side is Side.BUY:
            outcome.notes.append(
                f"remaining {remaining} shares are below the minimum notional "
                f"{session.config.min_notional}; not sent"
            )
            outcome.dropped_qty = remaining
            return outcome
        await send_market(session, intent, outcome, remaining, step=step, quote=quote)
        return outcome

    async def _no_quote(
        self,
        session: OrderSession,
        intent: OrderIntent,
        outcome: WorkOutcome,
        remaining: Decimal,
        step: int,
        problem: str | None,
    ) -> WorkOutcome:
        reason = f"no usable quote for {intent.symbol}: {problem}"
        if session.config.on_bad_quote == "market":
            outcome.fallback_reason = reason + "; sent as a market order"
            await send_market(session, intent, outcome, remaining, step=step, quote=None)
        else:
            outcome.skip_reason = reason
        return outcome


def algorithm(name: str) -> MarketAlgorithm | SmartAlgorithm:
    if name == "market":
        return MarketAlgorithm()
    if name == "smart":
        return SmartAlgorithm()
    raise ValueError(f"unknown algorithm {name!r}: choose smart or market")
