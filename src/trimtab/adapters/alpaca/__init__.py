"""The Alpaca adapter: the Broker and QuoteFeed ports over alpaca-py (paper by default)."""

from trimtab.adapters.alpaca.broker import AlpacaBroker
from trimtab.adapters.alpaca.config import AlpacaConfig, from_environment

__all__ = ["AlpacaBroker", "AlpacaConfig", "from_environment"]
