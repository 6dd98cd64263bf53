"""The sandbox's accounts: one key pair and one simulated exchange (SimBroker) each.

An accounts file is JSON::

    {"accounts": [
        {"key_id": "PKTEST1", "secret_key": "s3cret", "name": "alice",
         "cash": "100000", "positions": {"SPY": "50"}, "assets": {"BRK.A": {"fractionable": false}},
         "seed": 7, "universe": ["SPY", "QQQ", "AAPL"]},
        ...]}

Everything but the key pair is optional; cash, positions, assets and prices are the
simulated account file's fields. universe lists symbols that GET /v2/assets lists (any
valid symbol can be traded; the list also grows with every symbol an account touches).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from trimtab.adapters.sandbox import wire
from trimtab.adapters.sandbox.clock import WireClock
from trimtab.adapters.sandbox.faults import Faults
from trimtab.adapters.sandbox.ratelimit import SlidingWindow
from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.profile import MEGA_ETFS
from trimtab.domain.money import ZERO
from trimtab.domain.orders import BrokerOrderId, OrderEvent, OrderEventKind, OrderSnapshot, Side
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock

log = get_logger(__name__)

ENV_KEY_ID = "APCA_API_KEY_ID"
ENV_SECRET_KEY = "APCA_API_SECRET_KEY"
SIM_ACCOUNT_FIELDS = ("cash", "positions", "assets", "prices")
DEFAULT_UNIVERSE = tuple(sorted(MEGA_ETFS | {"AAPL", "MSFT", "AMZN", "GOOGL", "NVDA", "META", "TSLA", "IBM"}))


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One sandbox account. The key pair never appears in repr()."""

    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    name: str = "default"
    account: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    universe: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.key_id or not self.secret_key:
            raise ValueError(f"account {self.name!r}: key_id and secret_key are required")

    def matches(self, key_id: str, secret_key: str) -> bool:
        return hmac.compare_digest(self.key_id.encode(), key_id.encode()) and hmac.compare_digest(
            self.secret_key.encode(), secret_key.encode()
        )


def accounts_from_data(data: object, source: str = "accounts") -> list[AccountConfig]:
    """Accounts from a parsed accounts file (an object with "accounts", or a list)."""
    items = data.get("accounts") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ValueError(f"{source}: expected a non-empty list of accounts")
    accounts: list[AccountConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"{source}: accounts[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        key_id, secret = item.get("key_id"), item.get("secret_key")
        if not isinstance(key_id, str) or not key_id or not isinstance(secret, str) or not secret:
            raise ValueError(f"{where}: key_id and secret_key must be non-empty strings")
        if key_id in seen:
            raise ValueError(f"{where}: key_id used twice")
        seen.add(key_id)
        unknown = set(item) - {"key_id", "secret_key", "name", "seed", "universe", *SIM_ACCOUNT_FIELDS}
        if unknown:
            raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        seed = item.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"{where}.seed: expected an integer")
        universe = item.get("universe", [])
        if not isinstance(universe, list) or not all(isinstance(s, str) for s in universe):
            raise ValueError(f"{where}.universe: expected a list of symbols")
        name = item.get("name", f"account{index + 1}")
        accounts.append(
            AccountConfig(
                key_id=key_id,
                secret_key=secret,
                name=str(name),
                account={k: item[k] for k in SIM_ACCOUNT_FIELDS if k in item},
                seed=seed,
                universe=tuple(s.upper() for s in universe),
            )
        )
    return accounts


def load_accounts(path: Path) -> list[AccountConfig]:
    """Read an accounts file. Raises ValueError with the file and field on bad input."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read accounts file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"accounts file {path} is not valid JSON: {exc}") from None
    return accounts_from_data(data, str(path))


def accounts_from_environment(
    environ: Mapping[str, str], account: Mapping[str, Any] | None = None
) -> list[AccountConfig]:
    """The APCA_API_KEY_ID / APCA_API_SECRET_KEY pair as one account."""
    key_id = environ.get(ENV_KEY_ID, "").strip()
    secret = environ.get(ENV_SECRET_KEY, "").strip()
    if not key_id or not secret:
        raise ValueError(f"set {ENV_KEY_ID} and {ENV_SECRET_KEY}, or give an accounts file")
    return [AccountConfig(key_id=key_id, secret_key=secret, name="env", account=dict(account or {}))]


class TradeSubscriber:
    """One trade_updates connection: a queue of frames to send (None closes it)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.listening = False

    def close(self) -> None:
        self.queue.put_nowait(None)


class SandboxAccount:
    """An account at run time: its SimBroker, its orders on the wire, its streams and budget."""

    def __init__(
        self,
        config: AccountConfig,
        exchange: SimBroker,
        wire_clock: WireClock,
        faults: Callable[[], Faults],
        clock: Clock,
        *,
        requests_per_minute: int,
        number: int,
    ) -> None:
        self.config = config
        self.exchange = exchange
        self.wire = wire_clock
        self._faults = faults
        self.trading_window = SlidingWindow(requests_per_minute, clock)
        self.data_window = SlidingWindow(requests_per_minute, clock)
        self.records: dict[BrokerOrderId, wire.OrderRecord] = {}
        self.by_cid: dict[str, BrokerOrderId] = {}
        self.subscribers: set[TradeSubscriber] = set()
        self.data_connections = 0
        """Open (authenticated) market data stream connections."""
        self.positions: dict[str, Decimal] = {}
        self.symbols_seen: set[str] = set(config.universe)
        self.account_number = f"PA{number:010d}"
        self.created_at: datetime = clock.now()
        self.events_sent = 0
        self.events_dropped = 0
        self._remove_listener: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"SandboxAccount(name={self.config.name!r}, orders={len(self.records)})"

    async def start(self) -> None:
        await self.exchange.start()
        self._remove_listener = self.exchange.add_order_listener(self._on_event)
        positions = await self.exchange.get_positions()
        self.positions = {s: p.qty for s, p in positions.items()}
        self.symbols_seen.update(self.positions)
        self.symbols_seen.update(str(s) for s in self.config.account.get("assets", {}) or {})

    async def close(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for subscriber in list(self.subscribers):
            subscriber.close()
        await self.exchange.close()

    # --- orders ---

    def upsert(
        self,
        snap: OrderSnapshot,
        *,
        time_in_force: str | None = None,
        notional: Decimal | None = None,
        extended_hours: bool | None = None,
    ) -> wire.OrderRecord:
        """Remember an order's latest state (the furthest one wins) and its wire-only fields."""
        record = self.records.get(snap.broker_order_id)
        if record is None:
            record = wire.OrderRecord(snapshot=snap)
            if snap.replaces is not None and snap.replaces in self.records:
                record.time_in_force = self.records[snap.replaces].time_in_force
            self.records[snap.broker_order_id] = record
            self.by_cid[str(snap.client_order_id)] = snap.broker_order_id
        elif _later(record.snapshot, snap):
            record.snapshot = snap
        if time_in_force is not None:
            record.time_in_force = time_in_force
        if notional is not None:
            record.notional = notional
        if extended_hours is not None:
            record.extended_hours = extended_hours
        self.symbols_seen.add(snap.symbol)
        return record

    def order_json(self, record: wire.OrderRecord) -> dict[str, Any]:
        return wire.order_json(record, self.wire.wire)

    def open_records(self) -> list[wire.OrderRecord]:
        return [r for r in self.records.values() if r.snapshot.status.is_open]

    # --- the trade_updates stream ---

    def _on_event(self, event: OrderEvent) -> None:
        snap = event.order
        record = self.upsert(snap)
        position_qty = None
        if event.kind in (OrderEventKind.FILL, OrderEventKind.PARTIAL_FILL) and event.fill_qty is not None:
            sign = 1 if snap.side is Side.BUY else -1
            position_qty = self.positions.get(snap.symbol, ZERO) + sign * event.fill_qty
            self.positions[snap.symbol] = position_qty
        name = wire.EVENT_NAME.get(event.kind)
        if name is None:
            return
        if self._faults().stream_silent:
            self.events_dropped += 1
            return
        shown = wire.OrderRecord(
            snapshot=snap,
            time_in_force=record.time_in_force,
            notional=record.notional,
            extended_hours=record.extended_hours,
        )
        message = wire.trade_update_json(
            name,
            self.order_json(shown),
            self.wire.wire(event.timestamp),
            price=event.fill_price,
            qty=event.fill_qty,
            position_qty=position_qty,
            execution_id=_execution_id(snap, event) if position_qty is not None else None,
        )
        frame = json.dumps(message).encode("utf-8")
        for subscriber in list(self.subscribers):
            if subscriber.listening:
                subscriber.queue.put_nowait(frame)
                self.events_sent += 1

    def disconnect_streams(self) -> int:
        """Close every trade_updates connection of the account (a fault)."""
        count = 0
        for subscriber in list(self.subscribers):
            subscriber.close()
            count += 1
        return count


def _execution_id(snap: OrderSnapshot, event: OrderEvent) -> str:
    return str(uuid.uuid5(wire.NAMESPACE, f"exec:{snap.broker_order_id}:{snap.filled_qty}:{event.fill_qty}"))


def _later(current: OrderSnapshot, candidate: OrderSnapshot) -> bool:
    if candidate.filled_qty != current.filled_qty:
        return candidate.filled_qty > current.filled_qty
    if current.status is candidate.status:
        return candidate.updated_at >= current.updated_at
    if current.status.is_terminal:
        return False
    return candidate.status.is_terminal or current.status.can_become(candidate.status)


def new_exchange(config: AccountConfig, *, seed: int, start: datetime, latency: float) -> SimBroker:
    """The SimBroker of an account. The sandbox enforces the request budget itself."""
    options: dict[str, Any] = {"start": start, "latency": latency, "request_budget": 10**9}
    account_seed = config.seed if config.seed is not None else seed
    if config.account:
        return SimBroker.from_account_text(json.dumps(dict(config.account)), seed=account_seed, **options)
    return SimBroker(seed=account_seed, **options)
