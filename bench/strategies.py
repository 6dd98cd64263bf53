"""Baseline execution strategies for the benchmark, as OrderAlgorithm implementations.

Each plugs into Executor(order_algorithm=...) and works one intent with the same
OrderSession the engine's own algorithms use (deterministic client order ids, confirmed
cancels, the ledger), so every strategy runs under identical plumbing and only its
decisions differ.

- SpreadGatedMarket: LEAN's SpreadExecutionModel. A market order for the whole quantity as
  soon as the quoted spread is at most 0.5% of the price; otherwise wait for a quote that
  is. Never crosses a wide spread, so it may not trade at all.
- TwapMarketableLimits: equal slices at a fixed interval, each a limit at the far touch
  (takes what is displayed there, no deeper), cancelled after a short wait; what a slice
  leaves rolls into the next, and the last slice finishes with a market order.
- PostThenCross: one limit at the near touch (join the queue), then after a timeout cancel
  and send a market order for the rest. No re-pegging.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from trimtab.domain.errors import RejectedError
from trimtab.domain.money import ZERO, floor_qty
from trimtab.domain.orders import OrderType, Side
from trimtab.domain.quotes import Quote
from trimtab.engine.algos import send_market
from trimtab.engine.working import OrderIntent, OrderSession, WorkOutcome, rejected_message


def _spread_ok(quote: Quote, limit: Decimal) -> bool:
    return quote.bid > ZERO and quote.ask > quote.bid and quote.spread <= limit * quote.mid


class SpreadGatedMarket:
    """LEAN's SpreadExecutionModel: market orders only while spread <= accepting_spread x price."""

    name = "lean-spread"

    def __init__(self, accepting_spread: Decimal = Decimal("0.005")) -> None:
        self.accepting_spread = accepting_spread

    async def work(self, session: OrderSession, intent: OrderIntent, outcome: WorkOutcome) -> WorkOutcome:
        if not await session.quotes.acquire(intent.symbol):
            outcome.fallback_reason = session.quotes.stream_error
            await send_market(session, intent, outcome, intent.qty, step=0, quote=intent.arrival)
            return outcome
        changed = asyncio.Event()
        remove = session.quotes.watch(intent.symbol, lambda _quote: changed.set())
        try:
            while session.time_left(intent) > 0:
                quote, _ = await session.quotes.usable(intent.symbol)
                if quote is not None and _spread_ok(quote, self.accepting_spread):
                    await send_market(session, intent, outcome, intent.qty, step=0, quote=quote)
                    return outcome
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), timeout=max(session.time_left(intent), 0.0))
                except TimeoutError:
                    break
            outcome.timed_out = True
            outcome.notes.append("the spread never came within the accepting spread")
            return outcome
        finally:
            remove()
            await session.quotes.release(intent.symbol)


class TwapMarketableLimits:
    """TWAP: `slices` marketable limits `interval` seconds apart; the last one sweeps with a market order."""

    name = "twap"

    def __init__(self, slices: int = 5, interval: float = 24.0, wait: float = 1.0) -> None:
        self.slices = slices
        self.interval = interval
        self.wait = wait

    async def work(self, session: OrderSession, intent: OrderIntent, outcome: WorkOutcome) -> WorkOutcome:
        if not await session.quotes.acquire(intent.symbol):
            outcome.fallback_reason = session.quotes.stream_error
            await send_market(session, intent, outcome, intent.qty, step=0, quote=intent.arrival)
            return outcome
        try:
            start = session.clock.monotonic()
            for index in range(self.slices):
                remaining = intent.qty - outcome.filled_qty
                if remaining <= ZERO:
                    break
                due = start + index * self.interval
                delay = min(due - session.clock.monotonic(), session.time_left(intent))
                if delay > 0:
                    await asyncio.sleep(delay)
                if session.time_left(intent) <= 0:
                    outcome.timed_out = True
                    break
                last = index == self.slices - 1
                qty = remaining if last else floor_qty(remaining / (self.slices - index), intent.fractionable)
                if qty <= ZERO:
                    continue
                quote, _ = await session.quotes.usable(intent.symbol)
                if quote is None:
                    continue
                limit = quote.far_touch(intent.side is Side.BUY)
                try:
                    record = await session.submit(intent, outcome, step=index, qty=qty,
                                                  order_type=OrderType.LIMIT, limit_price=limit, quote=quote)
                except RejectedError as exc:
                    outcome.error = rejected_message(exc)
                    return outcome
                await session.wait(record, min(self.wait, max(session.time_left(intent), 0.0)))
                if not await session.cancel(record):
                    outcome.error = "cancel not confirmed"
                    return outcome
            remaining = intent.qty - outcome.filled_qty
            if remaining > ZERO and session.time_left(intent) > 0:
                quote, _ = await session.quotes.usable(intent.symbol)
                await send_market(session, intent, outcome, remaining, step=self.slices, quote=quote)
            return outcome
        finally:
            await session.quotes.release(intent.symbol)


class PostThenCross:
    """Post one limit at the near touch; after `timeout` seconds cancel and cross with a market order."""

    name = "post-cross"

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout

    async def work(self, session: OrderSession, intent: OrderIntent, outcome: WorkOutcome) -> WorkOutcome:
        if not await session.quotes.acquire(intent.symbol):
            outcome.fallback_reason = session.quotes.stream_error
            await send_market(session, intent, outcome, intent.qty, step=0, quote=intent.arrival)
            return outcome
        try:
            quote, _ = await session.quotes.usable(intent.symbol)
            if quote is not None:
                limit = quote.near_touch(intent.side is Side.BUY)
                try:
                    record = await session.submit(intent, outcome, step=0, qty=intent.qty,
                                                  order_type=OrderType.LIMIT, limit_price=limit, quote=quote)
                except RejectedError as exc:
                    outcome.error = rejected_message(exc)
                    return outcome
                await session.wait(record, min(self.timeout, max(session.time_left(intent), 0.0)))
                if not await session.cancel(record):
                    outcome.error = "cancel not confirmed"
                    return outcome
            remaining = intent.qty - outcome.filled_qty
            if remaining > ZERO and session.time_left(intent) > 0:
                quote, _ = await session.quotes.usable(intent.symbol)
                await send_market(session, intent, outcome, remaining, step=1, quote=quote)
            return outcome
        finally:
            await session.quotes.release(intent.symbol)
