"""The sandbox's HTTP and WebSocket endpoints: Alpaca's API over the simulated exchange.

Trading REST v2 (account, positions, orders, assets, clock), the trade_updates stream
(/stream, JSON), market data REST (latest quotes) and the stock data stream (/v2/iex and
/v2/sip, msgpack), authenticated by key pair, within 200 requests per minute per account,
with faults injected on demand (/_sandbox/faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import msgpack
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from trimtab.adapters.sandbox import wire
from trimtab.adapters.sandbox.accounts import DEFAULT_UNIVERSE, SandboxAccount, TradeSubscriber
from trimtab.adapters.sandbox.clock import rfc3339
from trimtab.adapters.sandbox.faults import Faults
from trimtab.adapters.sim.profile import MEGA_ETFS
from trimtab.domain.errors import (
    DuplicateClientOrderIdError,
    InsufficientBuyingPowerError,
    InsufficientQuantityError,
    InvalidOrderError,
    OrderNotCancelableError,
    OrderNotFoundError,
    RateLimitedError,
    TrimtabError,
)
from trimtab.domain.money import FRACTIONAL_SHARE, ZERO, to_decimal
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from trimtab.domain.plan import SYMBOL_PATTERN
from trimtab.domain.quotes import Quote
from trimtab.logs import get_logger

log = get_logger(__name__)

KEY_HEADER = "APCA-API-KEY-ID"
SECRET_HEADER = "APCA-API-SECRET-KEY"
UNAUTHORIZED = {"message": "unauthorized."}
NOT_REPLACEABLE = (OrderStatus.PENDING_NEW, OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_REPLACE)
STREAM_AUTH_TIMEOUT = 10.0
DATA_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
CLIENT_GONE: tuple[type[Exception], ...] = (WebSocketDisconnect, OSError)
"""What a send to a stream client that has gone raises. uvicorn raises ClientDisconnected (an
OSError) once the connection is lost; starlette turns it into WebSocketDisconnect(1006) after
accept() and lets it through as it is before."""


@dataclass(frozen=True, slots=True)
class AppOptions:
    speed: float = 1.0
    client_order_id_max_length: int = 128
    quote_interval: float = 0.02
    """Real seconds between two quote frames of one data connection (quotes are conflated)."""


class ApiError(Exception):
    """An HTTP error answer in Alpaca's shape."""

    def __init__(self, status: int, code: int | None, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = wire.error(code, message, **fields)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status)


class FaultState:
    """The faults in force, shared by every account; counted faults are consumed here."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def update(self, changes: dict[str, Any]) -> Faults:
        merged = self.faults.model_dump()
        merged.update(changes)
        self.faults = Faults.model_validate(merged)
        return self.faults

    def take_burst(self) -> bool:
        if self.faults.rate_limit_burst > 0:
            self.faults.rate_limit_burst -= 1
            return True
        return False

    def take_submit_error(self) -> int | None:
        if self.faults.submit_errors > 0:
            self.faults.submit_errors -= 1
            return self.faults.submit_error_status
        return None


Handler = Callable[[Request, SandboxAccount], Awaitable[Response]]


class SandboxApp:
    """Builds the Starlette app over the accounts."""

    def __init__(self, accounts: list[SandboxAccount], faults: FaultState, options: AppOptions) -> None:
        self.accounts = accounts
        self.fault_state = faults
        self.options = options

    @property
    def faults(self) -> Faults:
        return self.fault_state.faults

    def loop_seconds(self, real_seconds: float) -> float:
        """The loop-time length of a real-time duration (the loop runs `speed` times faster)."""
        return real_seconds * self.options.speed

    def build(self) -> Starlette:
        t, d = self.trading, self.data
        routes: list[BaseRoute] = [
            Route("/v2/account", t(self.get_account), methods=["GET"]),
            Route("/v2/positions", t(self.list_positions), methods=["GET"]),
            Route("/v2/positions", t(self.close_all_positions), methods=["DELETE"]),
            Route("/v2/positions/{symbol}", t(self.get_position), methods=["GET"]),
            Route("/v2/positions/{symbol}", t(self.close_position), methods=["DELETE"]),
            Route("/v2/orders", t(self.submit_order), methods=["POST"]),
            Route("/v2/orders", t(self.list_orders), methods=["GET"]),
            Route("/v2/orders", t(self.cancel_all_orders), methods=["DELETE"]),
            Route("/v2/orders:by_client_order_id", t(self.get_order_by_client_id), methods=["GET"]),
            Route("/v2/orders/{order_id}", t(self.get_order), methods=["GET"]),
            Route("/v2/orders/{order_id}", t(self.replace_order), methods=["PATCH"]),
            Route("/v2/orders/{order_id}", t(self.cancel_order), methods=["DELETE"]),
            Route("/v2/assets", t(self.list_assets), methods=["GET"]),
            Route("/v2/assets/{symbol}", t(self.get_asset), methods=["GET"]),
            Route("/v2/clock", t(self.get_clock), methods=["GET"]),
            Route("/v2/stocks/quotes/latest", d(self.latest_quotes), methods=["GET"]),
            Route("/v2/stocks/{symbol}/quotes/latest", d(self.latest_quote), methods=["GET"]),
            Route("/_sandbox/faults", self.admin(self.get_faults), methods=["GET"]),
            Route("/_sandbox/faults", self.admin(self.set_faults), methods=["POST"]),
            Route("/_sandbox/disconnect", self.admin(self.disconnect), methods=["POST"]),
            Route("/_sandbox/stats", self.admin(self.stats), methods=["GET"]),
            WebSocketRoute("/stream", _until_client_leaves(self.trade_stream)),
            WebSocketRoute("/v2/iex", _until_client_leaves(self.data_stream)),
            WebSocketRoute("/v2/sip", _until_client_leaves(self.data_stream)),
        ]
        return Starlette(routes=routes)

    # --- authentication, budget, errors ---

    def find_account(self, key_id: str | None, secret: str | None) -> SandboxAccount | None:
        if not key_id or not secret:
            return None
        for account in self.accounts:
            if account.config.matches(key_id, secret):
                return account
        return None

    def _authenticate(self, request: Request) -> SandboxAccount | None:
        return self.find_account(request.headers.get(KEY_HEADER), request.headers.get(SECRET_HEADER))

    def trading(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return self._guarded(handler, data=False)

    def data(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return self._guarded(handler, data=True)

    def _guarded(self, handler: Handler, *, data: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            account = self._authenticate(request)
            if account is None:
                return JSONResponse(UNAUTHORIZED, status_code=401)
            window = account.data_window if data else account.trading_window
            verdict = window.hit(forced_refusal=self.fault_state.take_burst())
            headers = verdict.headers()
            if not verdict.allowed:
                body = wire.error(wire.CODE_RATE_LIMITED, "rate limit exceeded")
                return JSONResponse(body, status_code=429, headers=headers)
            try:
                response = await handler(request, account)
            except ApiError as exc:
                response = exc.response()
            except TrimtabError as exc:
                response = self._error_response(exc, account)
            response.headers.update(headers)
            return response

        return endpoint

    def admin(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if self._authenticate(request) is None:
                return JSONResponse(UNAUTHORIZED, status_code=401)
            try:
                return await handler(request)
            except ApiError as exc:
                return exc.response()

        return endpoint

    def _error_response(self, exc: TrimtabError, account: SandboxAccount) -> JSONResponse:
        return self._api_error(exc, account).response()

    def _api_error(self, exc: TrimtabError, account: SandboxAccount) -> ApiError:
        message = str(exc)
        if isinstance(exc, InsufficientBuyingPowerError):
            error = ApiError(403, wire.CODE_FORBIDDEN, "insufficient buying power")
        elif isinstance(exc, InsufficientQuantityError):
            error = ApiError(403, wire.CODE_FORBIDDEN, message)
        elif isinstance(exc, DuplicateClientOrderIdError):
            error = ApiError(422, wire.CODE_INVALID, "client_order_id must be unique")
        elif isinstance(exc, InvalidOrderError) and "wash trade" in message:
            error = ApiError(403, wire.CODE_FORBIDDEN, "potential wash trade detected. use complex orders")
        elif isinstance(exc, InvalidOrderError):
            error = ApiError(422, wire.CODE_INVALID, message)
        elif isinstance(exc, OrderNotFoundError):
            error = ApiError(404, wire.CODE_NOT_FOUND, "order not found")
        elif isinstance(exc, OrderNotCancelableError):
            error = ApiError(422, wire.CODE_UNPROCESSABLE, message)
        elif isinstance(exc, RateLimitedError):
            error = ApiError(429, wire.CODE_RATE_LIMITED, "rate limit exceeded")
        else:
            log.warning("sandbox internal error account=%s kind=%s", account.config.name, type(exc).__name__)
            error = ApiError(500, wire.CODE_INTERNAL, "internal server error")
        return error

    # --- account, positions ---

    async def get_account(self, request: Request, account: SandboxAccount) -> Response:
        info = await account.exchange.get_account()
        positions = await account.exchange.get_positions()
        long_value = sum((p.market_value or ZERO for p in positions.values()), ZERO)
        return JSONResponse(
            wire.account_json(
                info, account.config.key_id, account.account_number, long_value, account.created_at
            )
        )

    async def list_positions(self, request: Request, account: SandboxAccount) -> Response:
        positions = await account.exchange.get_positions()
        return JSONResponse([self._position(p) for p in positions.values()])

    def _position(self, position: Any) -> dict[str, Any]:
        if position.market_value is not None and position.qty:
            price = (position.market_value / position.qty).quantize(Decimal("0.0001"))
        else:
            price = position.avg_entry_price
        return wire.position_json(position, price, position.symbol in MEGA_ETFS)

    async def _find_position(self, account: SandboxAccount, key: str) -> Any:
        positions = await account.exchange.get_positions()
        position = positions.get(key.upper())
        if position is None:
            position = next((p for p in positions.values() if wire.asset_id(p.symbol) == key), None)
        if position is None:
            raise ApiError(404, wire.CODE_NOT_FOUND, "position does not exist")
        return position

    async def get_position(self, request: Request, account: SandboxAccount) -> Response:
        position = await self._find_position(account, request.path_params["symbol"])
        return JSONResponse(self._position(position))

    async def close_position(self, request: Request, account: SandboxAccount) -> Response:
        position = await self._find_position(account, request.path_params["symbol"])
        query = request.query_params
        qty_text, pct_text = query.get("qty"), query.get("percentage")
        if qty_text and pct_text:
            raise ApiError(422, wire.CODE_INVALID, "only one of qty or percentage may be given")
        qty = position.qty
        if qty_text:
            qty = _decimal(qty_text, "qty")
        elif pct_text:
            pct = _decimal(pct_text, "percentage")
            if not ZERO < pct <= 100:
                raise ApiError(422, wire.CODE_INVALID, "percentage must be in (0, 100]")
            if pct < 100:
                asset = await account.exchange.get_asset(position.symbol)
                quantum = FRACTIONAL_SHARE if asset is None or asset.fractionable else Decimal(1)
                qty = (position.qty * pct / 100).quantize(quantum, rounding=ROUND_DOWN)
        if qty <= ZERO:
            raise ApiError(422, wire.CODE_INVALID, "qty must be > 0")
        if qty > position.qty_available:
            raise self._qty_error(position, qty)
        request_ = OrderRequest(
            client_order_id=ClientOrderId(str(uuid.uuid4())),
            symbol=position.symbol,
            side=Side.SELL,
            qty=qty,
            order_type=OrderType.MARKET,
        )
        snap = await account.exchange.submit_order(request_)
        return JSONResponse(account.order_json(account.upsert(snap, time_in_force="day")))

    def _qty_error(self, position: Any, qty: Decimal) -> ApiError:
        available = position.qty_available if position is not None else ZERO
        existing = position.qty if position is not None else ZERO
        symbol = position.symbol if position is not None else ""
        return ApiError(
            403,
            wire.CODE_FORBIDDEN,
            f"insufficient qty available for order (requested: {wire.dstr(qty)}, "
            f"available: {wire.dstr(available)})",
            available=wire.dstr(available),
            existing_qty=wire.dstr(existing),
            held_for_orders=wire.dstr(existing - available),
            symbol=symbol,
        )

    async def close_all_positions(self, request: Request, account: SandboxAccount) -> Response:
        if _truthy(request.query_params.get("cancel_orders")):
            await self._cancel_all(account)
            await self._settle(account)
        positions = await account.exchange.get_positions()
        answers: list[dict[str, Any]] = []
        for position in positions.values():
            order = OrderRequest(
                client_order_id=ClientOrderId(str(uuid.uuid4())),
                symbol=position.symbol,
                side=Side.SELL,
                qty=position.qty_available,
                order_type=OrderType.MARKET,
            )
            try:
                if position.qty_available <= ZERO:
                    raise self._qty_error(position, position.qty)
                snap = await account.exchange.submit_order(order)
            except ApiError as exc:
                answers.append({"symbol": position.symbol, "status": exc.status, "body": exc.body})
                continue
            except TrimtabError as exc:
                failed = self._api_error(exc, account)
                answers.append({"symbol": position.symbol, "status": failed.status, "body": failed.body})
                continue
            body = account.order_json(account.upsert(snap, time_in_force="day"))
            answers.append({"symbol": position.symbol, "status": 200, "body": body})
        return JSONResponse(answers, status_code=207)

    async def _settle(self, account: SandboxAccount) -> None:
        """Wait (bounded, in market time) until the account has no open orders."""
        for _ in range(50):
            if not await account.exchange.list_open_orders():
                return
            await asyncio.sleep(0.05)

    # --- orders ---

    async def submit_order(self, request: Request, account: SandboxAccount) -> Response:
        body = await _json_body(request)
        symbol = str(body.get("symbol") or "").strip().upper()
        if not symbol or not SYMBOL_PATTERN.match(symbol):
            raise ApiError(422, wire.CODE_INVALID, "symbol is required" if not symbol else "invalid symbol")
        side = _choice(body.get("side"), "side", ("buy", "sell"))
        type_name = _choice(
            body.get("type") or body.get("order_type"),
            "type",
            ("market", "limit", "stop", "stop_limit", "trailing_stop"),
        )
        if type_name not in ("market", "limit"):
            raise ApiError(422, wire.CODE_INVALID, f"order type {type_name} is not supported by the sandbox")
        tif = _choice(body.get("time_in_force"), "time_in_force", ("day", "gtc", "opg", "cls", "ioc", "fok"))
        if tif not in ("day", "gtc", "ioc"):
            raise ApiError(422, wire.CODE_INVALID, f"time_in_force {tif} is not supported by the sandbox")
        qty = _opt_decimal(body, "qty")
        notional = _opt_decimal(body, "notional")
        limit = _opt_decimal(body, "limit_price")
        if (qty is None) == (notional is None):
            raise ApiError(422, wire.CODE_INVALID, "qty or notional is required, not both")
        if type_name == "limit" and limit is None:
            raise ApiError(422, wire.CODE_INVALID, "limit_price is required for limit orders")
        if type_name == "market" and limit is not None:
            raise ApiError(422, wire.CODE_INVALID, "limit_price must not be given for market orders")
        extended = _truthy(body.get("extended_hours"))
        if extended and (type_name != "limit" or tif != "day"):
            raise ApiError(422, wire.CODE_INVALID, "extended hours order must be DAY limit orders")
        cid_value = body.get("client_order_id")
        cid = str(cid_value) if cid_value else str(uuid.uuid4())
        if len(cid) > self.options.client_order_id_max_length:
            raise ApiError(
                422,
                wire.CODE_INVALID,
                f"client_order_id must be no more than {self.options.client_order_id_max_length} characters",
            )
        if cid in account.by_cid:
            raise ApiError(422, wire.CODE_INVALID, "client_order_id must be unique")
        if notional is not None:
            if notional <= ZERO:
                raise ApiError(422, wire.CODE_INVALID, "notional must be > 0")
            if tif != "day":
                raise ApiError(422, wire.CODE_INVALID, "notional orders must be DAY orders")
            qty = await self._notional_qty(account, symbol, Side(side), notional, limit)
        assert qty is not None
        if qty <= ZERO:
            raise ApiError(422, wire.CODE_INVALID, "qty must be > 0")
        if Side(side) is Side.SELL:
            await self._check_sell(account, symbol, qty)
        order = OrderRequest(
            client_order_id=ClientOrderId(cid),
            symbol=symbol,
            side=Side(side),
            qty=qty,
            order_type=OrderType(type_name),
            limit_price=limit,
            time_in_force=TimeInForce(tif),
        )
        snap = await account.exchange.submit_order(order)
        record = account.upsert(snap, time_in_force=tif, notional=notional, extended_hours=extended)
        status = self.fault_state.take_submit_error()
        if status is not None:
            log.warning(
                "fault: order accepted, answered %d account=%s cid=%s", status, account.config.name, cid
            )
            if status == 504:
                return Response("upstream request timeout", status_code=504, media_type="text/plain")
            return JSONResponse(wire.error(wire.CODE_INTERNAL, "internal server error"), status_code=status)
        return JSONResponse(account.order_json(record))

    async def _check_sell(self, account: SandboxAccount, symbol: str, qty: Decimal) -> None:
        positions = await account.exchange.get_positions()
        position = positions.get(symbol)
        if position is None or qty > position.qty_available:
            raise self._qty_error(position, qty)

    async def _notional_qty(
        self, account: SandboxAccount, symbol: str, side: Side, notional: Decimal, limit: Decimal | None
    ) -> Decimal:
        asset = await account.exchange.get_asset(symbol)
        if asset is None:
            raise ApiError(422, wire.CODE_INVALID, f"asset {symbol} not found")
        if not asset.fractionable:
            raise ApiError(422, wire.CODE_INVALID, f"asset {symbol} is not fractionable")
        price = limit
        if price is None:
            quote = await account.exchange.get_quote(symbol)
            if quote is None:
                raise ApiError(422, wire.CODE_INVALID, f"no market for {symbol}")
            price = quote.ask if side is Side.BUY else quote.bid
        if price is None or price <= ZERO:
            raise ApiError(422, wire.CODE_INVALID, f"no price to size a notional order of {symbol}")
        return (notional / price).quantize(FRACTIONAL_SHARE, rounding=ROUND_DOWN)

    async def _refresh_open(self, account: SandboxAccount) -> None:
        """Bring the account's open orders up to the exchange's truth."""
        fresh = await account.exchange.list_open_orders()
        open_ids = set()
        for snap in fresh:
            account.upsert(snap)
            open_ids.add(snap.broker_order_id)
        for record in account.open_records():
            if record.snapshot.broker_order_id not in open_ids:
                with contextlib.suppress(OrderNotFoundError):
                    account.upsert(await account.exchange.get_order(record.snapshot.broker_order_id))

    async def list_orders(self, request: Request, account: SandboxAccount) -> Response:
        query = request.query_params
        status = (query.get("status") or "open").lower()
        if status not in ("open", "closed", "all"):
            raise ApiError(422, wire.CODE_INVALID, "status must be open, closed or all")
        limit = _int(query.get("limit"), "limit", 50)
        if not 1 <= limit <= 500:
            raise ApiError(422, wire.CODE_INVALID, "limit must be between 1 and 500")
        direction = (query.get("direction") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise ApiError(422, wire.CODE_INVALID, "direction must be asc or desc")
        after = _time(query.get("after"), "after")
        until = _time(query.get("until"), "until")
        symbols = {s.strip().upper() for s in (query.get("symbols") or "").split(",") if s.strip()}
        side = (query.get("side") or "").lower()
        await self._refresh_open(account)
        chosen = []
        for record in account.records.values():
            snap = record.snapshot
            if status == "open" and not snap.status.is_open:
                continue
            if status == "closed" and snap.status.is_open:
                continue
            if symbols and snap.symbol not in symbols:
                continue
            if side and snap.side.value != side:
                continue
            submitted = account.wire.wire(snap.created_at)
            if after is not None and submitted <= after:
                continue
            if until is not None and submitted >= until:
                continue
            chosen.append(record)
        chosen.sort(key=lambda r: r.snapshot.created_at, reverse=direction == "desc")
        return JSONResponse([account.order_json(r) for r in chosen[:limit]])

    async def _order_of(self, account: SandboxAccount, order_id: str) -> OrderSnapshot:
        try:
            uuid.UUID(order_id)
        except ValueError:
            raise ApiError(404, wire.CODE_NOT_FOUND, f"order not found for {order_id}") from None
        try:
            snap = await account.exchange.get_order(BrokerOrderId(order_id))
        except OrderNotFoundError:
            raise ApiError(404, wire.CODE_NOT_FOUND, f"order not found for {order_id}") from None
        account.upsert(snap)
        return snap

    async def get_order(self, request: Request, account: SandboxAccount) -> Response:
        snap = await self._order_of(account, request.path_params["order_id"])
        return JSONResponse(account.order_json(account.records[snap.broker_order_id]))

    async def get_order_by_client_id(self, request: Request, account: SandboxAccount) -> Response:
        cid = request.query_params.get("client_order_id") or ""
        if not cid:
            raise ApiError(422, wire.CODE_INVALID, "client_order_id is required")
        snap = await account.exchange.get_order_by_client_id(ClientOrderId(cid))
        if snap is None:
            raise ApiError(404, wire.CODE_NOT_FOUND, "order not found")
        record = account.upsert(snap)
        return JSONResponse(account.order_json(record))

    async def cancel_order(self, request: Request, account: SandboxAccount) -> Response:
        snap = await self._order_of(account, request.path_params["order_id"])
        if snap.status.is_terminal:
            raise _final_state(snap)
        try:
            await account.exchange.cancel_order(snap.broker_order_id)
        except OrderNotCancelableError:
            fresh = await account.exchange.get_order(snap.broker_order_id)
            account.upsert(fresh)
            raise _final_state(fresh) from None
        return Response(status_code=204)

    async def _cancel_all(self, account: SandboxAccount) -> list[dict[str, Any]]:
        answers = []
        for snap in await account.exchange.list_open_orders():
            try:
                await account.exchange.cancel_order(snap.broker_order_id)
            except (OrderNotCancelableError, OrderNotFoundError) as exc:
                answers.append(
                    {
                        "id": str(snap.broker_order_id),
                        "status": 422,
                        "body": wire.error(wire.CODE_UNPROCESSABLE, str(exc)),
                    }
                )
                continue
            answers.append({"id": str(snap.broker_order_id), "status": 200})
        return answers

    async def cancel_all_orders(self, request: Request, account: SandboxAccount) -> Response:
        return JSONResponse(await self._cancel_all(account), status_code=207)

    async def replace_order(self, request: Request, account: SandboxAccount) -> Response:
        snap = await self._order_of(account, request.path_params["order_id"])
        record = account.records[snap.broker_order_id]
        if snap.status.is_terminal:
            raise _final_state(snap)
        if snap.status in NOT_REPLACEABLE:
            raise ApiError(
                422,
                wire.CODE_UNPROCESSABLE,
                f'order is not replaceable in "{wire.ORDER_STATUS[snap.status]}" state',
            )
        if record.notional is not None:
            raise ApiError(422, wire.CODE_INVALID, "notional orders cannot be replaced")
        body = await _json_body(request)
        qty = _opt_decimal(body, "qty")
        limit = _opt_decimal(body, "limit_price")
        tif = body.get("time_in_force")
        cid_value = body.get("client_order_id")
        if limit is not None and snap.order_type is not OrderType.LIMIT:
            raise ApiError(422, wire.CODE_INVALID, "limit_price can only be replaced on limit orders")
        if qty is not None and qty <= ZERO:
            raise ApiError(422, wire.CODE_INVALID, "qty must be > 0")
        changed = (
            (qty is not None and qty != snap.qty)
            or (limit is not None and limit != snap.limit_price)
            or (tif is not None and tif != record.time_in_force)
        )
        if not changed:
            raise ApiError(403, wire.CODE_FORBIDDEN, "order parameters are not changed")
        cid = ClientOrderId(str(cid_value)) if cid_value else ClientOrderId(str(uuid.uuid4()))
        if str(cid) in account.by_cid:
            raise ApiError(422, wire.CODE_INVALID, "client_order_id must be unique")
        new = await account.exchange.replace_order(
            snap.broker_order_id, qty=qty, limit_price=limit, client_order_id=cid
        )
        fresh = account.upsert(new, time_in_force=str(tif) if tif else record.time_in_force)
        return JSONResponse(account.order_json(fresh))

    # --- assets, clock ---

    def _universe(self, account: SandboxAccount) -> list[str]:
        return sorted(set(DEFAULT_UNIVERSE) | account.symbols_seen)

    async def list_assets(self, request: Request, account: SandboxAccount) -> Response:
        query = request.query_params
        if (query.get("asset_class") or "us_equity") != "us_equity":
            return JSONResponse([])
        if (query.get("status") or "active") != "active":
            return JSONResponse([])
        assets = await account.exchange.get_assets(self._universe(account))
        exchange = query.get("exchange")
        listed = [wire.asset_json(a, a.symbol in MEGA_ETFS) for a in assets.values()]
        if exchange:
            listed = [a for a in listed if a["exchange"] == exchange]
        return JSONResponse(listed)

    async def get_asset(self, request: Request, account: SandboxAccount) -> Response:
        key = request.path_params["symbol"]
        symbol = key.upper()
        if not SYMBOL_PATTERN.match(symbol):
            symbol = next((s for s in self._universe(account) if wire.asset_id(s) == key), "")
        asset = await account.exchange.get_asset(symbol) if symbol else None
        if asset is None:
            raise ApiError(404, wire.CODE_NOT_FOUND, "asset not found")
        account.symbols_seen.add(symbol)
        return JSONResponse(wire.asset_json(asset, symbol in MEGA_ETFS))

    async def get_clock(self, request: Request, account: SandboxAccount) -> Response:
        clock = await account.exchange.get_market_clock()
        return JSONResponse(
            {
                "timestamp": rfc3339(account.wire.now()),
                "is_open": clock.is_open,
                "next_open": rfc3339(account.wire.wire(clock.next_open)),
                "next_close": rfc3339(account.wire.wire(clock.next_close)),
            }
        )

    # --- market data ---

    def _quote_json(self, account: SandboxAccount, quote: Quote) -> dict[str, Any]:
        body = wire.quote_fields(quote, self.faults.quote_zeroed(quote.symbol))
        body["t"] = rfc3339(self._quote_time(account, quote))
        return body

    def _quote_time(self, account: SandboxAccount, quote: Quote) -> datetime:
        return account.wire.wire(quote.timestamp) - timedelta(seconds=self.faults.stale_quotes_seconds)

    async def latest_quotes(self, request: Request, account: SandboxAccount) -> Response:
        symbols = [
            s.strip().upper() for s in (request.query_params.get("symbols") or "").split(",") if s.strip()
        ]
        if not symbols:
            raise ApiError(400, 40010000, "symbols is required")
        quotes: dict[str, Any] = {}
        for symbol in dict.fromkeys(symbols):
            quote = await account.exchange.get_quote(symbol) if SYMBOL_PATTERN.match(symbol) else None
            if quote is not None:
                quotes[symbol] = self._quote_json(account, quote)
        return JSONResponse({"quotes": quotes})

    async def latest_quote(self, request: Request, account: SandboxAccount) -> Response:
        symbol = request.path_params["symbol"].upper()
        quote = await account.exchange.get_quote(symbol) if SYMBOL_PATTERN.match(symbol) else None
        if quote is None:
            raise ApiError(404, wire.CODE_NOT_FOUND, "not found")
        return JSONResponse({"symbol": symbol, "quote": self._quote_json(account, quote)})

    # --- admin ---

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self.faults.model_dump())

    async def set_faults(self, request: Request) -> Response:
        changes = await _json_body(request)
        try:
            faults = self.fault_state.update(changes)
        except ValueError as exc:
            raise ApiError(422, wire.CODE_INVALID, f"invalid faults: {exc}") from None
        if faults.stream_disconnect:
            self.disconnect_all()
            faults.stream_disconnect = False
        log.warning("faults set %s", json.dumps(faults.model_dump(), sort_keys=True))
        return JSONResponse(faults.model_dump())

    def disconnect_all(self) -> int:
        closed = sum(account.disconnect_streams() for account in self.accounts)
        log.warning("fault: trade_updates connections closed count=%d", closed)
        return closed

    async def disconnect(self, request: Request) -> Response:
        return JSONResponse({"closed": self.disconnect_all()})

    async def stats(self, request: Request) -> Response:
        return JSONResponse({"accounts": [self.account_stats(a) for a in self.accounts]})

    def account_stats(self, account: SandboxAccount) -> dict[str, Any]:
        return {
            "name": account.config.name,
            "requests": account.trading_window.total,
            "refused": account.trading_window.refused,
            "peak_per_minute": account.trading_window.peak,
            "data_requests": account.data_window.total,
            "data_refused": account.data_window.refused,
            "orders": len(account.records),
            "filled_orders": sum(
                1 for r in account.records.values() if r.snapshot.status is OrderStatus.FILLED
            ),
            "events_sent": account.events_sent,
            "events_dropped": account.events_dropped,
            "stream_connections": len(account.subscribers),
            "data_connections": account.data_connections,
        }

    # --- the trade_updates stream ---

    async def trade_stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            async with asyncio.timeout(self.loop_seconds(STREAM_AUTH_TIMEOUT)):
                first = await _receive_json(websocket)
        except TimeoutError:
            await _close(websocket, 1008)
            return
        if first is None:
            return
        data = first.get("data") if isinstance(first.get("data"), dict) else first
        assert isinstance(data, dict)
        account = self.find_account(
            str(data.get("key_id") or data.get("key") or ""),
            str(data.get("secret_key") or data.get("secret") or ""),
        )
        if first.get("action") not in ("authenticate", "auth") or account is None:
            refusal = {
                "stream": "authorization",
                "data": {
                    "action": "authenticate",
                    "status": "unauthorized",
                    "message": "access key verification failed",
                },
            }
            await websocket.send_bytes(json.dumps(refusal).encode())
            await _close(websocket, 1008)
            return
        authorized = {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}
        await websocket.send_bytes(json.dumps(authorized).encode())
        subscriber = TradeSubscriber()
        account.subscribers.add(subscriber)
        log.info(
            "trade_updates connected account=%s connections=%d", account.config.name, len(account.subscribers)
        )

        async def on_message(message: dict[str, Any]) -> None:
            if message.get("action") != "listen":
                return
            body = message.get("data") if isinstance(message.get("data"), dict) else {}
            assert isinstance(body, dict)
            streams = [s for s in body.get("streams", []) if s == "trade_updates"]
            subscriber.listening = bool(streams)
            ack = {"stream": "listening", "data": {"streams": streams}}
            subscriber.queue.put_nowait(json.dumps(ack).encode())

        try:
            await _pump(websocket, subscriber.queue, on_message)
        finally:
            account.subscribers.discard(subscriber)
            log.info("trade_updates closed account=%s", account.config.name)

    # --- the stock data stream ---

    async def data_stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_bytes(_pack([{"T": "success", "msg": "connected"}]))
        try:
            async with asyncio.timeout(self.loop_seconds(STREAM_AUTH_TIMEOUT)):
                first = await _receive_any(websocket)
        except TimeoutError:
            await websocket.send_bytes(_pack([{"T": "error", "code": 404, "msg": "auth timeout"}]))
            await _close(websocket, 1008)
            return
        if first is None:
            return
        account = None
        if first.get("action") == "auth":
            account = self.find_account(str(first.get("key") or ""), str(first.get("secret") or ""))
        if account is None:
            await websocket.send_bytes(_pack([{"T": "error", "code": 402, "msg": "auth failed"}]))
            await _close(websocket, 1008)
            return
        await websocket.send_bytes(_pack([{"T": "success", "msg": "authenticated"}]))
        connection = _QuoteConnection(self, account, websocket)
        account.data_connections += 1
        try:
            await connection.run()
        finally:
            account.data_connections -= 1
            await connection.close()
            log.debug("data stream closed account=%s", account.config.name)


class _QuoteConnection:
    """One data stream connection: subscriptions, conflated quotes, msgpack frames."""

    def __init__(self, app: SandboxApp, account: SandboxAccount, websocket: WebSocket) -> None:
        self._app = app
        self._account = account
        self._websocket = websocket
        self._channels: dict[str, set[str]] = {name: set() for name in DATA_CHANNELS}
        self._pending: dict[str, Quote] = {}
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._wake = asyncio.Event()

    def _on_quote(self, quote: Quote) -> None:
        if quote.symbol in self._channels["quotes"]:
            self._pending[quote.symbol] = quote
            self._wake.set()

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            while True:
                receive = asyncio.ensure_future(_receive_any(self._websocket))
                done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receive
                    return
                message = receive.result()
                if message is None:
                    return
                await self._handle(message)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _handle(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action not in ("subscribe", "unsubscribe"):
            self._send([{"T": "error", "code": 400, "msg": "invalid syntax"}])
            return
        added: list[str] = []
        removed: list[str] = []
        for channel in DATA_CHANNELS:
            symbols = message.get(channel)
            if not isinstance(symbols, list):
                continue
            names = {str(s).upper() for s in symbols}
            current = self._channels[channel]
            if action == "subscribe":
                if channel == "quotes":
                    added.extend(sorted(names - current))
                current |= names
            else:
                if channel == "quotes":
                    removed.extend(sorted(names & current))
                current -= names
        exchange = self._account.exchange
        valid = [s for s in added if SYMBOL_PATTERN.match(s)]
        if valid:
            self._account.symbols_seen.update(valid)
            await exchange.subscribe_quotes(valid, self._on_quote)
        if removed:
            await exchange.unsubscribe_quotes(removed, self._on_quote)
            for symbol in removed:
                self._pending.pop(symbol, None)
        reply: dict[str, Any] = {"T": "subscription"}
        for channel in DATA_CHANNELS:
            reply[channel] = sorted(self._channels[channel])
        reply["corrections"] = sorted(self._channels["trades"])
        reply["cancelErrors"] = sorted(self._channels["trades"])
        self._send([reply])

    def _send(self, messages: list[dict[str, Any]]) -> None:
        self._outbox.put_nowait(_pack(messages))
        self._wake.set()

    async def _write(self) -> None:
        interval = self._app.loop_seconds(self._app.options.quote_interval)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self._outbox.empty():
                frame = self._outbox.get_nowait()
                if frame is None or not await _send(self._websocket, frame):
                    return
            if self._pending:
                quotes = list(self._pending.values())
                self._pending.clear()
                if not await _send(self._websocket, _pack([self._quote_message(q) for q in quotes])):
                    return
                await asyncio.sleep(interval)

    def _quote_message(self, quote: Quote) -> dict[str, Any]:
        body = wire.quote_fields(quote, self._app.faults.quote_zeroed(quote.symbol))
        body["T"] = "q"
        body["S"] = quote.symbol
        body["t"] = self._app._quote_time(self._account, quote)
        return body

    async def close(self) -> None:
        symbols = sorted(self._channels["quotes"])
        self._channels["quotes"].clear()
        if symbols:
            await self._account.exchange.unsubscribe_quotes(symbols, self._on_quote)


# --- helpers ---


def _pack(messages: list[dict[str, Any]]) -> bytes:
    packed = msgpack.packb(messages, datetime=True)
    assert isinstance(packed, bytes)
    return packed


async def _pump(
    websocket: WebSocket,
    outbox: asyncio.Queue[bytes | None],
    on_message: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Send what arrives in outbox (None closes) while handling what the client sends.

    Ends when either side ends: the client closes or goes away, or outbox says to close.
    """

    async def write() -> None:
        while True:
            frame = await outbox.get()
            if frame is None:
                await _close(websocket, 1001)
                return
            if not await _send(websocket, frame):
                return

    writer = asyncio.create_task(write())
    try:
        while True:
            receive = asyncio.ensure_future(_receive_json(websocket))
            done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receive
                return
            message = receive.result()
            if message is None:
                return
            await on_message(message)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def _receive_raw(websocket: WebSocket) -> bytes | str | None:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("bytes") is not None:
        data: bytes = message["bytes"]
        return data
    text: str = message.get("text") or ""
    return text


async def _receive_json(websocket: WebSocket) -> dict[str, Any] | None:
    """The next JSON object from the client (text or binary); {} if it is not one."""
    raw = await _receive_raw(websocket)
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def _receive_any(websocket: WebSocket) -> dict[str, Any] | None:
    """The next msgpack (or JSON text) object from a data stream client."""
    raw = await _receive_raw(websocket)
    if raw is None:
        return None
    try:
        parsed = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
    except (ValueError, msgpack.UnpackException):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _until_client_leaves(
    endpoint: Callable[[WebSocket], Awaitable[None]],
) -> Callable[[WebSocket], Awaitable[None]]:
    """A stream endpoint that ends quietly when its client goes away.

    A client may drop the connection at any moment, without a close frame (its process is
    killed, its network goes): that is normal, so it ends the connection with a debug line,
    not an exception out of the ASGI app (which uvicorn prints as a traceback).
    """

    @functools.wraps(endpoint)
    async def run(websocket: WebSocket) -> None:
        try:
            await endpoint(websocket)
        except CLIENT_GONE as exc:
            code = exc.code if isinstance(exc, WebSocketDisconnect) else 1006
            log.debug("stream client gone path=%s code=%s", websocket.url.path, code)

    return run


async def _send(websocket: WebSocket, frame: bytes) -> bool:
    """Send one frame; False when the client has gone (the connection is over)."""
    try:
        await websocket.send_bytes(frame)
    except CLIENT_GONE:
        return False
    return True


async def _close(websocket: WebSocket, code: int) -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, *CLIENT_GONE):
            await websocket.close(code=code)


def _final_state(snap: OrderSnapshot) -> ApiError:
    return ApiError(
        422, wire.CODE_UNPROCESSABLE, f'order is already in "{wire.ORDER_STATUS[snap.status]}" state'
    )


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, 40010000, "request body format is invalid") from None
    if not isinstance(body, dict):
        raise ApiError(400, 40010000, "request body format is invalid")
    return body


def _choice(value: object, name: str, allowed: Iterable[str]) -> str:
    text = str(value or "").lower()
    if not text:
        raise ApiError(422, wire.CODE_INVALID, f"{name} is required")
    if text not in allowed:
        raise ApiError(422, wire.CODE_INVALID, f"invalid {name} {value!r}")
    return text


def _decimal(value: object, name: str) -> Decimal:
    try:
        return to_decimal(str(value) if isinstance(value, float) else value, field=name)
    except ValueError:
        raise ApiError(422, wire.CODE_INVALID, f"invalid {name}") from None


def _opt_decimal(body: dict[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    return _decimal(value, name)


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(422, wire.CODE_INVALID, f"invalid {name}") from None


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    text = value.strip().replace(" ", "+")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(422, wire.CODE_INVALID, f"invalid {name}") from None
    if moment.tzinfo is None:
        raise ApiError(422, wire.CODE_INVALID, f"{name} needs a time zone")
    return moment


def _truthy(value: object) -> bool:
    return str(value).lower() in ("true", "1", "yes")
