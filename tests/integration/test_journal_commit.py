"""The journal's intents: durable before the order is sent, one commit for the orders sent
together, and a failure or a cancellation of one sender never lost for the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.simkit import FixedClock
from trimtab.adapters.ledger import SqlLedger, default_ledger_url
from trimtab.domain.orders import OrderRequest, OrderType, Side, make_client_order_id
from trimtab.engine.journal import Journal
from trimtab.ports.ledger import NewIntent

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


class _CountingLedger(SqlLedger):
    """A real SQLite ledger that counts the commits of intents."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[int] = []

    def record_intents(self, plan_id: str, intents: Sequence[NewIntent]) -> list[bool]:
        self.batches.append(len(intents))
        return super().record_intents(plan_id, intents)


def _request(symbol: str) -> OrderRequest:
    return OrderRequest(make_client_order_id("p", symbol, 0), symbol, Side.BUY, Decimal(3), OrderType.LIMIT,
                        Decimal("10.01"))


def _journal(ledger: SqlLedger) -> Journal:
    clock = FixedClock(T0)
    return Journal(ledger, "p", clock, clock, "w1", 30.0)


def test_orders_sent_together_share_one_commit_and_are_durable_first(tmp_path: Path) -> None:
    url = default_ledger_url(tmp_path)
    counting = _CountingLedger(url)
    with counting as ledger, SqlLedger(url) as other:
        ledger.begin_plan("p", "hash", "{}", None, "w1", now=T0, lease_ttl=timedelta(seconds=30))
        journal = _journal(ledger)
        seen_when_sent: list[int] = []

        async def send(symbol: str) -> None:
            await journal.intent(_request(symbol), 0, None)
            seen_when_sent.append(len(other.intents("p")))  # what another process sees now

        async def main() -> None:
            await asyncio.gather(*(send(f"S{i:02d}") for i in range(25)))
            await send("LATE")  # alone: a commit of its own

        asyncio.run(main())
        assert counting.batches == [25, 1]
        assert min(seen_when_sent[:25]) == 25  # every one durable before its order went out
        assert seen_when_sent[25] == 26
        assert {i.symbol for i in other.intents("p")} == {f"S{i:02d}" for i in range(25)} | {"LATE"}


def test_a_cancelled_sender_does_not_cancel_the_commit_of_the_others(tmp_path: Path) -> None:
    url = default_ledger_url(tmp_path)
    with SqlLedger(url) as ledger:
        ledger.begin_plan("p", "hash", "{}", None, "w1", now=T0, lease_ttl=timedelta(seconds=30))
        journal = _journal(ledger)

        async def main() -> list[BaseException | None]:
            tasks = [asyncio.create_task(journal.intent(_request(s), 0, None)) for s in ("A", "B", "C")]
            await asyncio.sleep(0)  # all three waiting for the shared commit
            tasks[1].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

        outcomes = asyncio.run(main())
        assert outcomes[0] is None
        assert isinstance(outcomes[1], asyncio.CancelledError)
        assert outcomes[2] is None
        # B's intent was committed with the others (a recorded intent whose order was never
        # sent is what recovery expects after a crash too: it looks the id up and finds nothing).
        assert [i.symbol for i in ledger.intents("p")] == ["A", "B", "C"]


def test_a_failed_commit_reaches_every_sender(tmp_path: Path) -> None:
    with SqlLedger(default_ledger_url(tmp_path)) as ledger:
        journal = _journal(ledger)  # the plan was never begun: the ledger refuses its intents

        async def main() -> list[BaseException | None]:
            return await asyncio.gather(*(journal.intent(_request(s), 0, None) for s in ("A", "B")),
                                        return_exceptions=True)

        outcomes = asyncio.run(main())
        assert all(isinstance(o, LookupError) for o in outcomes), outcomes
        with pytest.raises(LookupError):  # and the next sender is not stuck behind the failure
            asyncio.run(journal.intent(_request("C"), 0, None))
