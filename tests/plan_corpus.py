"""Invalid plans, each with the format, the text and words the one-line error must contain."""

from __future__ import annotations

from typing import NamedTuple


class BadPlan(NamedTuple):
    name: str
    fmt: str
    text: str
    expect: tuple[str, ...]


def _items(items: str) -> str:
    return '{"plan_id": "p1", "items": [' + items + "]}"


BAD_PLANS: list[BadPlan] = [
    BadPlan(
        "missing plan_id", "json", '{"items": [{"symbol": "SPY", "action": "HOLD"}]}', ("plan_id", "missing")
    ),
    BadPlan(
        "empty plan_id",
        "json",
        '{"plan_id": "  ", "items": [{"symbol": "SPY", "action": "HOLD"}]}',
        ("plan_id", "empty"),
    ),
    BadPlan("empty items", "json", '{"plan_id": "p1", "items": []}', ("items",)),
    BadPlan("empty symbol", "json", _items('{"symbol": "", "action": "HOLD"}'), ("items[0].symbol", "empty")),
    BadPlan(
        "malformed symbol",
        "json",
        _items('{"symbol": "SP Y!", "action": "HOLD"}'),
        ("items[0].symbol", "not a valid symbol"),
    ),
    BadPlan(
        "duplicate symbol",
        "json",
        _items('{"symbol": "SPY", "action": "HOLD"}, {"symbol": "spy", "action": "HOLD"}'),
        ("items[1].symbol", "duplicate", "SPY"),
    ),
    BadPlan(
        "unknown action", "json", _items('{"symbol": "SPY", "action": "SHORT"}'), ("items[0].action", "SPY")
    ),
    BadPlan(
        "unknown item field",
        "json",
        _items('{"symbol": "SPY", "action": "HOLD", "qty": 5}'),
        ("items[0].qty", "unknown field"),
    ),
    BadPlan(
        "unknown plan field",
        "json",
        '{"plan_id": "p1", "foo": 1, "items": [{"symbol": "SPY", "action": "HOLD"}]}',
        ("foo", "unknown field"),
    ),
    BadPlan(
        "buy with negative amount",
        "json",
        _items('{"symbol": "SPY", "action": "BUY", "trade_amount": "-5"}'),
        ("items[0]", "SPY", "trade_amount", "positive"),
    ),
    BadPlan(
        "sell with positive amount",
        "json",
        _items('{"symbol": "SPY", "action": "SELL", "trade_amount": "5"}'),
        ("items[0]", "SPY", "trade_amount", "negative"),
    ),
    BadPlan(
        "NaN amount",
        "json",
        _items('{"symbol": "SPY", "action": "BUY", "trade_amount": NaN}'),
        ("items[0].trade_amount", "finite"),
    ),
    BadPlan(
        "Infinity amount",
        "json",
        _items('{"symbol": "SPY", "action": "BUY", "trade_amount": "Infinity"}'),
        ("items[0].trade_amount", "finite"),
    ),
    BadPlan(
        "non-numeric amount",
        "json",
        _items('{"symbol": "SPY", "action": "BUY", "trade_amount": "lots"}'),
        ("items[0].trade_amount", "not a number"),
    ),
    BadPlan(
        "absurd amount",
        "json",
        _items('{"symbol": "SPY", "action": "BUY", "trade_amount": 1e30}'),
        ("items[0].trade_amount", "largest"),
    ),
    BadPlan("malformed JSON", "json", '{"plan_id": "p1", "items": [', ("malformed JSON", "line 1")),
    BadPlan("top level list", "json", "[1, 2]", ("top level",)),
    BadPlan("malformed YAML", "yaml", "plan_id: p1\nitems: [\n  - {symbol: SPY", ("malformed YAML",)),
    BadPlan(
        "YAML NaN",
        "yaml",
        "plan_id: p1\nitems:\n  - {symbol: SPY, action: BUY, trade_amount: .nan}\n",
        ("items[0].trade_amount", "finite"),
    ),
    BadPlan(
        "malformed CSV", "csv", 'plan_id,symbol,action,trade_amount\np1,SPY,BUY,"100\n', ("malformed CSV",)
    ),
    BadPlan(
        "CSV unknown column",
        "csv",
        "plan_id,symbol,action,amount\np1,SPY,BUY,100\n",
        ("unknown column", "amount"),
    ),
    BadPlan("CSV ragged row", "csv", "plan_id,symbol,action,trade_amount\np1,SPY,BUY\n", ("line 2",)),
    BadPlan(
        "CSV sell positive",
        "csv",
        "plan_id,symbol,action,trade_amount\np1,SPY,SELL,100\n",
        ("items[0]", "SPY", "negative"),
    ),
]
