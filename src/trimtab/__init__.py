"""trimtab: execute portfolio rebalance plans safely and cheaply.

Sells first, waits until they have filled and the cash is there, sizes the buys from
what the sells raised, then buys; every order worked by a quote-pegged limit ladder.
"""

from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.plan import Action, RebalancePlan, RebalancePlanItem, Urgency
from trimtab.domain.results import (
    Attempt,
    ExecutionResult,
    ExecutionStats,
    ExecutionStatus,
    OrderResult,
    PhaseStats,
)
from trimtab.engine.config import Anchor, ExecutionConfig, LadderPreset
from trimtab.engine.executor import Executor
from trimtab.engine.risk import RiskConfig
from trimtab.ports.broker import Broker
from trimtab.ports.quotes import QuoteFeed

__all__ = [
    "Action",
    "Anchor",
    "Attempt",
    "Broker",
    "ExecutionConfig",
    "ExecutionResult",
    "ExecutionStats",
    "ExecutionStatus",
    "Executor",
    "LadderPreset",
    "OrderResult",
    "PhaseStats",
    "QuoteFeed",
    "RebalancePlan",
    "RebalancePlanItem",
    "RiskConfig",
    "SimBroker",
    "Urgency",
    "run_virtual",
]
