"""Plan files: JSON, YAML, or CSV with a header row of the plan's field names. Text in, plan out."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import yaml

from trimtab.domain.errors import PlanValidationError
from trimtab.domain.plan import RebalancePlan, parse_plan

PLAN_FIELDS = ("plan_id", "correlation_id", "default_urgency")
ITEM_FIELDS = ("symbol", "action", "trade_amount", "target_weight", "urgency")
FORMATS = ("json", "yaml", "csv")


def format_of(filename: str) -> str:
    """The plan format named by a file's extension (json, yaml/yml, csv)."""
    lowered = filename.lower()
    if lowered.endswith(".json"):
        return "json"
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    if lowered.endswith(".csv"):
        return "csv"
    raise PlanValidationError(f"cannot tell the format of {filename}: use a .json, .yaml, .yml or .csv file")


def parse_plan_text(text: str, fmt: str) -> RebalancePlan:
    """Parse and validate a plan from text in the given format."""
    if fmt == "json":
        data = load_json(text, "plan")
    elif fmt == "yaml":
        data = load_yaml(text, "plan")
    elif fmt == "csv":
        data = _csv_to_plan_data(text)
    else:
        raise PlanValidationError(f"unknown plan format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return parse_plan(data)


def load_json(text: str, what: str) -> Any:
    """JSON with every number as Decimal (never a float); NaN and Infinity stay visible."""
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError as exc:
        raise PlanValidationError(
            f"invalid {what}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def load_yaml(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "could not parse"
        raise PlanValidationError(f"invalid {what}: malformed YAML{where}: {problem}") from None


def _csv_to_plan_data(text: str) -> dict[str, Any]:
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise PlanValidationError(f"invalid plan: malformed CSV: {exc}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise PlanValidationError("invalid plan: the CSV file is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    known = set(PLAN_FIELDS) | set(ITEM_FIELDS)
    unknown = [name for name in header if name not in known]
    if unknown:
        raise PlanValidationError(f"invalid plan: CSV header: unknown column(s) {', '.join(unknown)}")
    if len(set(header)) != len(header):
        raise PlanValidationError("invalid plan: CSV header: a column appears twice")
    if "symbol" not in header:
        raise PlanValidationError("invalid plan: CSV header: the symbol column is missing")
    plan: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise PlanValidationError(
                f"invalid plan: CSV line {number}: {len(row)} cells, the header has {len(header)}"
            )
        record = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
        for name in PLAN_FIELDS:
            value = record.pop(name, "")
            if value == "":
                continue
            if name in plan and plan[name] != value:
                raise PlanValidationError(
                    f"invalid plan: CSV line {number}: {name} {value!r} differs from {plan[name]!r}"
                )
            plan[name] = value
        items.append({k: v for k, v in record.items() if v != ""})
    plan["items"] = items
    return plan
