"""From target weights and the account's state to a rebalance plan.

Weights and values:
- ``portfolio_value`` V is the account's value at the given prices; cash is what V
  leaves after the positions (V - sum of qty x price).
- The cash reserve R keeps R x V uninvested. A target weight w from the targets file is
  a fraction of the investable value V x (1 - R): its target value is w x V x (1 - R)
  and its target weight in the portfolio is w x (1 - R). Current weights are value / V.
- Drift bands compare the current portfolio weight with the target portfolio weight.
  The absolute band is in weight points (0.05: five points), the relative band a
  fraction of the target weight (0.25: a quarter of it). An item is inside the band when
  it is inside every band configured; inside, it HOLDs. A target of 0 has no band.

Trades:
- An item outside its band trades to its target value (signed dollars: + buy, - sell).
- A held symbol absent from the targets, or with weight 0, is liquidated: a SELL with
  target_weight 0 that closes the exact position, whatever its size or the minimum.
- With whole_shares, each trade is rounded to a whole number of shares at the price.
- A trade smaller than min_trade_notional becomes a HOLD.
- The reserve is a floor. If cash plus sells (less their estimated cost) would stay
  below it, overweight positions inside their band are sold to their targets as well,
  largest excess first. Buys are then scaled down together so that cash after the plan,
  less the estimated cost of every trade, stays at least the reserve.
- Estimated cost: half the quoted spread on each trade's notional, when quotes are given.

No price, no guess: a held symbol, or a target symbol to buy, without a usable price
makes the planner refuse with PlanValidationError naming the symbol.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trimtab.domain.account import Account, Position
from trimtab.domain.errors import ConfigurationError, PlanValidationError, SafetyRefusalError
from trimtab.domain.money import CENT, MAX_AMOUNT, ONE, ZERO, bps, money, to_decimal
from trimtab.domain.orders import OrderSnapshot
from trimtab.domain.plan import Action, RebalancePlan, RebalancePlanItem, format_validation_error
from trimtab.domain.quotes import Quote
from trimtab.domain.targets import TargetWeights, normalize_symbol
from trimtab.ports.broker import Broker
from trimtab.ports.quotes import QuoteFeed

_QTY_DIGITS = Decimal("0.000000001")
_QUOTE_CONCURRENCY = 8


class PlannerConfig(BaseModel):
    """Every tunable of the planner, frozen and validated. Money in dollars, weights 0-1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cash_reserve: Decimal = Field(default=ZERO)
    """Fraction of the portfolio value kept in cash, in [0, 1)."""
    drift_band_absolute: Decimal | None = None
    """Weight points an item may drift from its target and still HOLD, in [0, 1]."""
    drift_band_relative: Decimal | None = None
    """Fraction of its target weight an item may drift and still HOLD, in [0, 1]."""
    min_trade_notional: Decimal = Field(default=ONE)
    """Trades smaller than this many dollars become HOLD (liquidations excepted)."""
    whole_shares: bool = False
    """Round each trade to a whole number of shares at the planning price."""
    quote_max_age: float = Field(default=60.0, gt=0)
    """Seconds after which a quote is too old to price the plan."""
    max_spread_bps: Decimal = Field(default=Decimal("200"))
    """A quote with a wider spread is not used to price the plan."""

    @field_validator(
        "cash_reserve",
        "drift_band_absolute",
        "drift_band_relative",
        "min_trade_notional",
        "max_spread_bps",
        mode="before",
    )
    @classmethod
    def _decimal(cls, value: Any, info: Any) -> Decimal | None:
        if value is None:
            if info.field_name.startswith("drift_band"):
                return None
            raise ValueError("must be a number")
        result = to_decimal(value, field=info.field_name)
        name = info.field_name
        if result < ZERO:
            raise ValueError(f"must not be negative, got {result}")
        if name == "cash_reserve" and result >= ONE:
            raise ValueError(f"must be below 1, got {result}")
        if name.startswith("drift_band") and result > ONE:
            raise ValueError(f"must be at most 1, got {result}")
        if name == "min_trade_notional" and result > MAX_AMOUNT:
            raise ValueError(f"must be at most {MAX_AMOUNT}, got {result}")
        if name == "max_spread_bps" and result == ZERO:
            raise ValueError("must be positive")
        return result

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "planner config") -> PlannerConfig:
        """Validate a mapping, turning errors into one ConfigurationError line."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc, data, what=source)) from None

    def band(self, target_weight: Decimal) -> Decimal:
        """The drift allowed around a target portfolio weight (0 for a zero target)."""
        if target_weight <= ZERO:
            return ZERO
        bands = []
        if self.drift_band_absolute is not None:
            bands.append(self.drift_band_absolute)
        if self.drift_band_relative is not None:
            bands.append(self.drift_band_relative * target_weight)
        return min(bands) if bands else ZERO


class HoldReason(StrEnum):
    """Why an item does not trade."""

    INSIDE_BAND = "inside band"
    BELOW_MINIMUM = "below minimum trade"
    LESS_THAN_ONE_SHARE = "less than one whole share"
    NO_CASH = "no cash left above the reserve"
    NOTHING_HELD = "target 0 and nothing held"


class Adjustment(StrEnum):
    """Why a trade differs from the exact distance to its target."""

    WHOLE_SHARES = "rounded to whole shares"
    CASH_LIMITED = "scaled down to keep the cash reserve"
    RESERVE_RESTORE = "sold inside its band to restore the cash reserve"


@dataclass(frozen=True, slots=True)
class ProposalItem:
    """One symbol of a proposal: where it is, where it should be, what to trade."""

    symbol: str
    action: Action
    current_qty: Decimal
    price: Decimal | None
    current_value: Decimal
    current_weight: Decimal
    target_weight: Decimal
    """The weight from the targets (0 for a held symbol the targets do not list)."""
    target_portfolio_weight: Decimal
    """target_weight x (1 - cash_reserve): the weight of the portfolio value it aims at."""
    target_value: Decimal
    trade_amount: Decimal
    """Signed dollars: + buy, - sell, 0 for HOLD; a liquidation shows minus its value."""
    trade_qty: Decimal
    """Signed shares at the planning price (a liquidation: the exact position)."""
    in_targets: bool
    liquidation: bool = False
    hold_reason: HoldReason | None = None
    adjustments: tuple[Adjustment, ...] = ()
    estimated_cost: Decimal | None = None
    """Half the quoted spread on the trade's notional, in dollars (None: no quote)."""

    @property
    def projected_value(self) -> Decimal:
        """The value after the trade at the planning price."""
        if self.liquidation:
            return ZERO
        return self.current_value + self.trade_amount

    @property
    def reason(self) -> str:
        """A short human explanation: the hold reason, liquidation, or adjustments."""
        if self.hold_reason is not None:
            return self.hold_reason.value
        parts = []
        if self.liquidation:
            parts.append("not in targets" if not self.in_targets else "target 0")
        parts.extend(adjustment.value for adjustment in self.adjustments)
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class PlanProposal:
    """The planner's answer: per-symbol items, totals, an estimated cost and the plan."""

    plan: RebalancePlan
    items: tuple[ProposalItem, ...]
    config: PlannerConfig
    portfolio_value: Decimal
    cash: Decimal
    """Cash before the plan: portfolio value less the positions at the planning prices."""
    reserve_amount: Decimal
    investable_value: Decimal
    total_buys: Decimal
    total_sells: Decimal
    estimated_cost: Decimal
    """Dollars, unrounded: half-spread x notional over the trades that have a quote."""
    warnings: tuple[str, ...] = field(default=())

    @property
    def plan_id(self) -> str:
        return self.plan.plan_id

    @property
    def turnover(self) -> Decimal:
        """Dollars bought plus dollars sold."""
        return self.total_buys + self.total_sells

    @property
    def turnover_fraction(self) -> Decimal:
        """Turnover as a fraction of the portfolio value."""
        return self.turnover / self.portfolio_value if self.portfolio_value > ZERO else ZERO

    @property
    def estimated_cost_bps(self) -> Decimal:
        """The estimated cost in basis points of the turnover."""
        return bps(self.estimated_cost, self.turnover)

    @property
    def projected_cash(self) -> Decimal:
        """Cash after the plan at the planning prices, before costs."""
        return self.cash + self.total_sells - self.total_buys

    @property
    def trading_items(self) -> tuple[ProposalItem, ...]:
        return tuple(item for item in self.items if item.action is not Action.HOLD)

    def content_digest(self) -> str:
        """A hex digest of what the plan trades; equal plans have equal digests."""
        parts = []
        for item in self.plan.items:
            parts.append(f"{item.symbol}|{item.action.value}|{item.trade_amount}|{item.target_weight}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def with_plan_id(self, plan_id: str, correlation_id: str | None = None) -> PlanProposal:
        """The same proposal under another plan id (and correlation id, if given)."""
        plan = _make_plan(
            plan_id,
            correlation_id if correlation_id is not None else self.plan.correlation_id,
            self.plan.items,
        )
        return replace(self, plan=plan)


@dataclass(slots=True)
class _Draft:
    symbol: str
    qty: Decimal
    price: Decimal | None
    value: Decimal
    weight: Decimal
    target_weight: Decimal
    target_portfolio_weight: Decimal
    target_value: Decimal
    in_targets: bool
    cost_rate: Decimal | None
    amount: Decimal = ZERO
    trade_qty: Decimal = ZERO
    liquidation: bool = False
    hold_reason: HoldReason | None = None
    adjustments: list[Adjustment] = field(default_factory=list)

    @property
    def is_buy(self) -> bool:
        return self.hold_reason is None and self.amount > ZERO

    @property
    def is_sell(self) -> bool:
        return self.hold_reason is None and (self.liquidation or self.amount < ZERO)

    @property
    def proceeds(self) -> Decimal:
        return -self.amount

    def cost_of(self, notional: Decimal) -> Decimal:
        return notional * (self.cost_rate or ZERO)


def _usable_price(price: Decimal | None) -> bool:
    return price is not None and price.is_finite() and price > ZERO


def _cost_rates(quotes: Mapping[str, Quote] | None) -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for symbol, quote in (quotes or {}).items():
        mid = quote.mid
        if mid > ZERO and quote.spread >= ZERO:
            rates[symbol] = quote.spread / 2 / mid
    return rates


def _whole(value: Decimal, rounding: str) -> Decimal:
    return value.to_integral_value(rounding=rounding)


def _size_trade(draft: _Draft, raw: Decimal, config: PlannerConfig, *, floor: bool = False) -> None:
    """Set draft.amount and trade_qty from a raw signed dollar amount."""
    price = draft.price
    assert price is not None
    if config.whole_shares:
        shares = _whole(raw / price, ROUND_FLOOR if floor else ROUND_HALF_EVEN)
        if shares < ZERO:
            shares = max(shares, -_whole(draft.qty, ROUND_FLOOR))
        # Cents rounded away from zero, so that amount / price is at least the whole
        # shares meant even where the price has sub-cent digits (a mid of 55.995).
        notional = (abs(shares) * price).quantize(CENT, rounding=ROUND_CEILING)
        amount = notional if shares >= ZERO else -notional
        if amount != money(raw) and Adjustment.WHOLE_SHARES not in draft.adjustments:
            draft.adjustments.append(Adjustment.WHOLE_SHARES)
        draft.amount = amount
        draft.trade_qty = shares
    else:
        amount = raw.quantize(CENT, rounding=ROUND_DOWN if floor else ROUND_HALF_EVEN)
        draft.amount = amount
        draft.trade_qty = (amount / price).quantize(_QTY_DIGITS, rounding=ROUND_DOWN)


def _apply_minimum(draft: _Draft, config: PlannerConfig, reason_if_small: HoldReason) -> None:
    if draft.amount == ZERO:
        draft.hold_reason = HoldReason.LESS_THAN_ONE_SHARE if config.whole_shares else reason_if_small
    elif abs(draft.amount) < config.min_trade_notional:
        draft.hold_reason = reason_if_small
    if draft.hold_reason is not None:
        draft.amount = ZERO
        draft.trade_qty = ZERO


def _refuse_missing_prices(
    drafts_needing: Iterable[str],
    prices: Mapping[str, Decimal],
    price_problems: Mapping[str, str] | None,
) -> None:
    missing = []
    for symbol in drafts_needing:
        if not _usable_price(prices.get(symbol)):
            problem = (price_problems or {}).get(symbol)
            if problem is None and symbol in prices:
                problem = f"price {prices[symbol]}"
            missing.append(f"{symbol} ({problem})" if problem else symbol)
    if missing:
        raise PlanValidationError(
            "cannot plan: no usable price for " + ", ".join(missing) + "; refusing to plan rather than guess"
        )


def compute_plan(
    targets: TargetWeights | Mapping[str, object],
    positions: Mapping[str, Position],
    prices: Mapping[str, Decimal],
    portfolio_value: Decimal,
    config: PlannerConfig,
    plan_id: str,
    correlation_id: str | None = None,
    *,
    quotes: Mapping[str, Quote] | None = None,
    price_problems: Mapping[str, str] | None = None,
) -> PlanProposal:
    """Compute a rebalance plan from targets, positions, prices and the portfolio value.

    quotes, when given, feed the cost estimate (half-spread x notional) and the cost
    buffer kept for the reserve; price_problems (symbol to why it has no price) make the
    refusal for a missing price say why.
    """
    if not isinstance(targets, TargetWeights):
        targets = TargetWeights.from_mapping(targets)
    if not portfolio_value.is_finite() or portfolio_value <= ZERO:
        raise PlanValidationError(f"cannot plan: portfolio value must be positive, got {portfolio_value}")
    weights = targets.weights
    held: dict[str, Position] = {}
    for key, position in positions.items():
        try:
            symbol = normalize_symbol(key)
        except ValueError as exc:
            raise PlanValidationError(f"cannot plan: position symbol {key!r}: {exc}") from None
        if position.qty < ZERO:
            raise PlanValidationError(
                f"cannot plan: {symbol} is a short position ({position.qty} shares), "
                "which the planner does not rebalance"
            )
        if position.qty > ZERO:
            held[symbol] = position
    symbols = list(weights) + sorted(symbol for symbol in held if symbol not in weights)
    _refuse_missing_prices(
        (s for s in symbols if s in held or weights.get(s, ZERO) > ZERO), prices, price_problems
    )

    value = portfolio_value
    investable = value * (ONE - config.cash_reserve)
    reserve = value * config.cash_reserve
    rates = _cost_rates(quotes)
    drafts: list[_Draft] = []
    for symbol in symbols:
        holding = held.get(symbol)
        qty = holding.qty if holding is not None else ZERO
        price = prices.get(symbol) if _usable_price(prices.get(symbol)) else None
        current = qty * price if price is not None else ZERO
        weight = weights.get(symbol, ZERO)
        drafts.append(
            _Draft(
                symbol=symbol,
                qty=qty,
                price=price,
                value=current,
                weight=current / value,
                target_weight=weight,
                target_portfolio_weight=weight * (ONE - config.cash_reserve),
                target_value=weight * investable,
                in_targets=symbol in weights,
                cost_rate=rates.get(symbol),
            )
        )
    cash = value - sum((draft.value for draft in drafts), ZERO)

    for draft in drafts:
        if draft.target_weight == ZERO:
            if draft.qty == ZERO:
                draft.hold_reason = HoldReason.NOTHING_HELD
            else:
                draft.liquidation = True
                draft.amount = -draft.value.quantize(CENT, rounding=ROUND_DOWN)
                draft.trade_qty = -draft.qty
            continue
        drift = abs(draft.weight - draft.target_portfolio_weight)
        if drift <= config.band(draft.target_portfolio_weight):
            draft.hold_reason = HoldReason.INSIDE_BAND
            continue
        _size_trade(draft, draft.target_value - draft.value, config)
        _apply_minimum(draft, config, HoldReason.BELOW_MINIMUM)

    _restore_reserve(drafts, cash, reserve, config)
    _fit_buys_to_cash(drafts, cash, reserve, config)

    items = tuple(_item(draft) for draft in drafts)
    total_buys = sum((item.trade_amount for item in items if item.action is Action.BUY), ZERO)
    total_sells = sum((-item.trade_amount for item in items if item.action is Action.SELL), ZERO)
    estimated_cost = sum((item.estimated_cost or ZERO for item in items), ZERO)
    proposal = PlanProposal(
        plan=_make_plan(plan_id, correlation_id, tuple(_plan_item(item) for item in items)),
        items=items,
        config=config,
        portfolio_value=value,
        cash=cash,
        reserve_amount=reserve,
        investable_value=investable,
        total_buys=total_buys,
        total_sells=total_sells,
        estimated_cost=estimated_cost,
    )
    return replace(proposal, warnings=_warnings(proposal, drafts))


def _restore_reserve(drafts: list[_Draft], cash: Decimal, reserve: Decimal, config: PlannerConfig) -> None:
    """Sell overweight positions held inside their band when cash and sells miss the reserve."""
    shortfall = reserve - _cash_after_sells(drafts, cash)
    if shortfall <= ZERO:
        return
    candidates = [
        draft
        for draft in drafts
        if draft.hold_reason in (HoldReason.INSIDE_BAND, HoldReason.BELOW_MINIMUM)
        and draft.value > draft.target_value
    ]
    candidates.sort(key=lambda draft: (draft.target_value - draft.value, draft.symbol))
    for draft in candidates:
        if shortfall <= ZERO:
            break
        previous = draft.hold_reason
        assert previous is not None
        draft.hold_reason = None
        _size_trade(draft, draft.target_value - draft.value, config)
        _apply_minimum(draft, config, previous)
        if draft.hold_reason is None:
            draft.adjustments.append(Adjustment.RESERVE_RESTORE)
            shortfall -= draft.proceeds - draft.cost_of(draft.proceeds)
        else:
            draft.hold_reason = previous
            draft.adjustments.clear()


def _cash_after_sells(drafts: list[_Draft], cash: Decimal) -> Decimal:
    result = cash
    for draft in drafts:
        if draft.is_sell:
            result += draft.proceeds - draft.cost_of(draft.proceeds)
    return result


def _fit_buys_to_cash(drafts: list[_Draft], cash: Decimal, reserve: Decimal, config: PlannerConfig) -> None:
    """Scale every buy down by one factor so cash after the plan, less costs, stays >= reserve."""
    buys = [draft for draft in drafts if draft.is_buy]
    if not buys:
        return
    available = _cash_after_sells(drafts, cash) - reserve
    needed = sum((draft.amount + draft.cost_of(draft.amount) for draft in buys), ZERO)
    if needed <= available:
        return
    if config.whole_shares:
        available -= CENT * len(buys)  # each buy's notional is rounded up to the cent
    factor = max(available, ZERO) / needed
    for draft in buys:
        _size_trade(draft, draft.amount * factor, config, floor=True)
        _apply_minimum(draft, config, HoldReason.NO_CASH)
        if draft.hold_reason is None:
            draft.adjustments.append(Adjustment.CASH_LIMITED)
        elif draft.hold_reason is HoldReason.LESS_THAN_ONE_SHARE:
            draft.hold_reason = HoldReason.NO_CASH
        if draft.hold_reason is not None:
            draft.adjustments.clear()


def _item(draft: _Draft) -> ProposalItem:
    trades = draft.hold_reason is None and (draft.liquidation or draft.amount != ZERO)
    if not trades:
        action = Action.HOLD
    elif draft.liquidation or draft.amount < ZERO:
        action = Action.SELL
    else:
        action = Action.BUY
    notional = abs(draft.amount)
    cost = None
    if draft.cost_rate is not None:
        cost = notional * draft.cost_rate if trades else ZERO
    return ProposalItem(
        symbol=draft.symbol,
        action=action,
        current_qty=draft.qty,
        price=draft.price,
        current_value=draft.value,
        current_weight=draft.weight,
        target_weight=draft.target_weight,
        target_portfolio_weight=draft.target_portfolio_weight,
        target_value=draft.target_value,
        trade_amount=draft.amount if trades else ZERO,
        trade_qty=draft.trade_qty if trades else ZERO,
        in_targets=draft.in_targets,
        liquidation=draft.liquidation and trades,
        hold_reason=draft.hold_reason if not trades else None,
        adjustments=tuple(draft.adjustments) if trades else (),
        estimated_cost=cost,
    )


def _plan_item(item: ProposalItem) -> RebalancePlanItem:
    if item.action is Action.HOLD:
        return RebalancePlanItem(symbol=item.symbol, action=Action.HOLD)
    if item.liquidation:
        return RebalancePlanItem(symbol=item.symbol, action=Action.SELL, target_weight=ZERO)
    return RebalancePlanItem(symbol=item.symbol, action=item.action, trade_amount=item.trade_amount)


def _make_plan(
    plan_id: str, correlation_id: str | None, items: tuple[RebalancePlanItem, ...]
) -> RebalancePlan:
    try:
        return RebalancePlan(plan_id=plan_id, correlation_id=correlation_id, items=items)
    except ValidationError as exc:
        raise PlanValidationError(format_validation_error(exc, {"plan_id": plan_id, "items": []})) from None


def _warnings(proposal: PlanProposal, drafts: list[_Draft]) -> tuple[str, ...]:
    warnings = []
    cash_after = proposal.projected_cash - proposal.estimated_cost
    if cash_after < proposal.reserve_amount:
        warnings.append(
            f"cash after the plan ({money(cash_after)}) stays below the reserve "
            f"({money(proposal.reserve_amount)}): the remaining excess is below the minimum "
            "trade or one share"
        )
    limited = [d.symbol for d in drafts if d.hold_reason is HoldReason.NO_CASH]
    if limited:
        warnings.append("no cash left above the reserve to buy " + ", ".join(limited))
    return tuple(warnings)


# -- inputs from the broker -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanningInputs:
    """What the planner needs from the broker, read through the ports."""

    account: Account
    positions: Mapping[str, Position]
    prices: Mapping[str, Decimal]
    """Mid prices of the symbols whose quote is usable."""
    quotes: Mapping[str, Quote]
    """The usable quotes (for the cost estimate)."""
    price_problems: Mapping[str, str]
    """Symbols without a usable price, and why."""
    open_orders: tuple[OrderSnapshot, ...] = ()

    @property
    def portfolio_value(self) -> Decimal:
        """Cash plus the positions at the mid prices (the account's own figure if a price is missing)."""
        total = self.account.cash
        for symbol, position in self.positions.items():
            if position.qty == ZERO:
                continue
            price = self.prices.get(symbol)
            if price is None:
                return self.account.portfolio_value
            total += position.qty * price
        return total


async def gather_planning_inputs(
    broker: Broker,
    quote_feed: QuoteFeed,
    symbols: Iterable[str],
    config: PlannerConfig | None = None,
) -> PlanningInputs:
    """Read the account, positions, open orders and a quote per symbol (targets and held)."""
    config = config or PlannerConfig()
    account = await broker.get_account()
    positions = dict(await broker.get_positions())
    wanted = list(
        dict.fromkeys(
            [normalize_symbol(symbol) for symbol in symbols]
            + sorted(symbol for symbol, position in positions.items() if position.qty != ZERO)
        )
    )
    open_orders = tuple(await broker.list_open_orders(wanted)) if wanted else ()
    limit = asyncio.Semaphore(_QUOTE_CONCURRENCY)

    async def fetch(symbol: str) -> Quote | None:
        async with limit:
            return await quote_feed.get_quote(symbol)

    fetched = await asyncio.gather(*(fetch(symbol) for symbol in wanted))
    now = broker.clock.now()
    prices: dict[str, Decimal] = {}
    quotes: dict[str, Quote] = {}
    problems: dict[str, str] = {}
    for symbol, quote in zip(wanted, fetched, strict=True):
        if quote is None:
            problems[symbol] = "no quote"
            continue
        problem = quote.problem(now, config.quote_max_age, config.max_spread_bps)
        if problem is not None:
            problems[symbol] = problem
            continue
        quotes[symbol] = quote
        prices[symbol] = quote.mid
    return PlanningInputs(
        account=account,
        positions=positions,
        prices=prices,
        quotes=quotes,
        price_problems=problems,
        open_orders=open_orders,
    )


def plan_from_inputs(
    targets: TargetWeights,
    inputs: PlanningInputs,
    config: PlannerConfig,
    plan_id: str,
    correlation_id: str | None = None,
    *,
    allow_open_orders: bool = False,
) -> PlanProposal:
    """compute_plan over gathered inputs; refuse while orders are open on its symbols.

    A plan computed from positions cannot see orders still working at the broker, and
    executing it on top of them could trade twice: SafetyRefusalError unless allowed.
    """
    if inputs.open_orders and not allow_open_orders:
        symbols = sorted({order.symbol for order in inputs.open_orders})
        raise SafetyRefusalError(
            "open orders at the broker for "
            + ", ".join(symbols)
            + ": a plan computed now would trade on top of them; wait for them to finish "
            "or cancel them first"
        )
    return compute_plan(
        targets,
        inputs.positions,
        inputs.prices,
        inputs.portfolio_value,
        config,
        plan_id,
        correlation_id,
        quotes=inputs.quotes,
        price_problems=inputs.price_problems,
    )
