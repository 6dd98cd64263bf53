"""Transaction cost analysis: cost metrics from the ledger, and the HTML execution report.

    record = load_execution(ledger, plan_id)      # or record_from_result(result, quotes)
    costs = analyze(record)                       # PlanCosts: totals, per side, per order
    html = render_html(record, costs)             # one self-contained page
"""

from trimtab.tca.costs import (
    HORIZONS,
    CostSummary,
    FillCosts,
    OrderCosts,
    PlanCosts,
    analyze,
    order_costs,
    percentile,
    summarize,
)
from trimtab.tca.record import (
    ExecAttempt,
    ExecFill,
    ExecOrder,
    ExecutionRecord,
    QuoteTape,
    SkippedItem,
    load_execution,
    record_from_result,
)

__all__ = [
    "HORIZONS",
    "CostSummary",
    "ExecAttempt",
    "ExecFill",
    "ExecOrder",
    "ExecutionRecord",
    "FillCosts",
    "OrderCosts",
    "PlanCosts",
    "QuoteTape",
    "SkippedItem",
    "analyze",
    "load_execution",
    "order_costs",
    "percentile",
    "record_from_result",
    "summarize",
]
