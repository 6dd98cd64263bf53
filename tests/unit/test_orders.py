from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trimtab.domain.errors import IllegalTransitionError
from trimtab.domain.orders import (
    MAX_CLIENT_ORDER_ID_LENGTH,
    TERMINAL_STATUSES,
    TRANSITIONS,
    ClientOrderId,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    make_client_order_id,
)


def test_terminal_statuses_cannot_change() -> None:
    for status in TERMINAL_STATUSES:
        assert status.is_terminal
        for target in OrderStatus:
            with pytest.raises(IllegalTransitionError, match=status.value):
                status.transition(target)


def test_live_order_can_fill_cancel_and_replace() -> None:
    status = OrderStatus.PENDING_NEW.transition(OrderStatus.ACCEPTED)
    status = status.transition(OrderStatus.PARTIALLY_FILLED)
    status = status.transition(OrderStatus.PARTIALLY_FILLED)
    status = status.transition(OrderStatus.PENDING_CANCEL)
    assert status.transition(OrderStatus.FILLED) is OrderStatus.FILLED
    assert OrderStatus.ACCEPTED.transition(OrderStatus.REPLACED) is OrderStatus.REPLACED


def test_illegal_transitions_raise() -> None:
    with pytest.raises(IllegalTransitionError):
        OrderStatus.ACCEPTED.transition(OrderStatus.PENDING_NEW)
    with pytest.raises(IllegalTransitionError):
        OrderStatus.PARTIALLY_FILLED.transition(OrderStatus.REJECTED)


@given(st.lists(st.sampled_from(list(OrderStatus)), min_size=1, max_size=12))
def test_any_path_through_the_table_is_consistent(path: list[OrderStatus]) -> None:
    status = OrderStatus.PENDING_NEW
    for target in path:
        if target in TRANSITIONS[status]:
            status = status.transition(target)
            assert status is target
        else:
            with pytest.raises(IllegalTransitionError):
                status.transition(target)
    assert status.is_terminal == (status in TERMINAL_STATUSES)


def test_client_order_ids_are_deterministic_short_and_distinct() -> None:
    a = make_client_order_id("plan-1", "SPY", 0)
    assert a == make_client_order_id("plan-1", "SPY", 0)
    assert a != make_client_order_id("plan-1", "SPY", 1)
    assert a != make_client_order_id("plan-2", "SPY", 0)
    longest = make_client_order_id("p" * 500, "ABCDEFGHIJKLMNO", 10_000, prefix="verylongprefix")
    assert len(longest) <= MAX_CLIENT_ORDER_ID_LENGTH


def test_order_request_validation() -> None:
    cid = ClientOrderId("x")
    with pytest.raises(ValueError, match="positive"):
        OrderRequest(cid, "SPY", Side.BUY, Decimal("0"), OrderType.MARKET)
    with pytest.raises(ValueError, match="limit_price"):
        OrderRequest(cid, "SPY", Side.BUY, Decimal("1"), OrderType.LIMIT)
    with pytest.raises(ValueError, match="no limit_price"):
        OrderRequest(cid, "SPY", Side.BUY, Decimal("1"), OrderType.MARKET, Decimal("10"))
    assert Side.BUY.opposite is Side.SELL
