"""alpaca-py, imported in one place.

alpaca-py's streams import ``websockets.legacy``, which warns with a DeprecationWarning
on import. The warning is about alpaca-py's code, not ours, so it is silenced here, once,
and only for that import.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", category=DeprecationWarning, message=r"websockets\.legacy is deprecated"
    )
    from alpaca.common.exceptions import APIError
    from alpaca.data.enums import DataFeed
    from alpaca.data.historical.stock import StockHistoricalDataClient
    from alpaca.data.live.stock import StockDataStream
    from alpaca.data.models.quotes import Quote as AlpacaQuote
    from alpaca.data.requests import StockLatestQuoteRequest
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import AssetClass, AssetStatus, OrderSide, QueryOrderStatus
    from alpaca.trading.enums import OrderStatus as AlpacaOrderStatus
    from alpaca.trading.enums import TimeInForce as AlpacaTimeInForce
    from alpaca.trading.models import Asset as AlpacaAsset
    from alpaca.trading.models import Clock as AlpacaClock
    from alpaca.trading.models import Order as AlpacaOrder
    from alpaca.trading.models import Position as AlpacaPosition
    from alpaca.trading.models import TradeAccount, TradeUpdate
    from alpaca.trading.requests import (
        ClosePositionRequest,
        GetAssetsRequest,
        GetOrdersRequest,
        LimitOrderRequest,
        MarketOrderRequest,
        ReplaceOrderRequest,
    )
    from alpaca.trading.stream import TradingStream

__all__ = [
    "APIError",
    "AlpacaAsset",
    "AlpacaClock",
    "AlpacaOrder",
    "AlpacaOrderStatus",
    "AlpacaPosition",
    "AlpacaQuote",
    "AlpacaTimeInForce",
    "AssetClass",
    "AssetStatus",
    "ClosePositionRequest",
    "DataFeed",
    "GetAssetsRequest",
    "GetOrdersRequest",
    "LimitOrderRequest",
    "MarketOrderRequest",
    "OrderSide",
    "QueryOrderStatus",
    "ReplaceOrderRequest",
    "StockDataStream",
    "StockHistoricalDataClient",
    "StockLatestQuoteRequest",
    "TradeAccount",
    "TradeUpdate",
    "TradingClient",
    "TradingStream",
]
