"""Small protocols the engine talks to: Broker, QuoteFeed, Clock."""

from trimtab.ports.broker import Broker, OrderListener
from trimtab.ports.clock import Clock
from trimtab.ports.quotes import QuoteFeed, QuoteListener

__all__ = ["Broker", "Clock", "OrderListener", "QuoteFeed", "QuoteListener"]
