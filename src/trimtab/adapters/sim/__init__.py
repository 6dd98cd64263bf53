"""The simulated exchange: synthetic market, matching engine, SimBroker, virtual time."""

from trimtab.adapters.sim.book import FillModel
from trimtab.adapters.sim.broker import SimBroker, SimClock
from trimtab.adapters.sim.path import MarketPath
from trimtab.adapters.sim.profile import SymbolProfile, derive_profile
from trimtab.adapters.sim.replay import ReplaySource, load_replay, replay_market
from trimtab.adapters.sim.state import session_start
from trimtab.adapters.sim.trading_calendar import market_clock
from trimtab.adapters.sim.virtual_loop import run_virtual

__all__ = [
    "FillModel",
    "MarketPath",
    "ReplaySource",
    "SimBroker",
    "SimClock",
    "SymbolProfile",
    "derive_profile",
    "load_replay",
    "market_clock",
    "replay_market",
    "run_virtual",
    "session_start",
]
