"""Target weights: the input of the planner, parsed from CSV, JSON or YAML text.

A weight is the fraction of the investable value (the portfolio value less the
planner's cash reserve) that a symbol should hold. Weights are in [0, 1] and sum to at
most 1; what they leave over stays in cash. A weight of 0 sells the whole position.

Formats (the file reading itself is the CLI's job; this module only parses text):

CSV, a header row naming exactly the two columns ``symbol`` and ``weight`` (in either
order), one symbol a row; blank lines and lines starting with ``#`` are ignored::

    symbol,weight
    SPY,0.60
    BND,0.35

JSON or YAML, an object with one key ``targets`` whose value is either a mapping from
symbol to weight or a list of ``{symbol, weight}`` objects::

    {"targets": {"SPY": "0.60", "BND": "0.35"}}

    targets:
      - {symbol: SPY, weight: 0.60}
      - {symbol: BND, weight: 0.35}

Weights are decimal strings or numbers ("0.6", 0.6, 1, "6e-1"); they are read as
Decimal straight from the text, never through a float. Percentages ("60%") are not
accepted: write 0.6. Symbols are normalized like plan symbols (trimmed, upper case,
letters, digits, '.' and '-'). In YAML, mapping keys are taken as written, so
``ON: 0.1`` means the symbol ON, not the boolean true.

Every problem raises PlanValidationError with one line that names the line or entry,
the symbol and the field. A sum up to 1 + 1e-9 is accepted as the rounding noise of
tools that write floats; the planner never spends more than the cash it has.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from trimtab.domain.errors import PlanValidationError
from trimtab.domain.money import ONE, ZERO
from trimtab.domain.plan import SYMBOL_PATTERN

TARGET_FORMATS = ("csv", "json", "yaml")
SUM_TOLERANCE = Decimal("1e-9")
"""How far above 1 the weights may sum (float noise from the tool that wrote them)."""

_FORMAT_ALIASES = {"csv": "csv", "json": "json", "yaml": "yaml", "yml": "yaml"}
_CSV_COLUMNS = ("symbol", "weight")
_PREFIX = "invalid targets"


def normalize_symbol(value: object) -> str:
    """Trim and upper-case a symbol and check it as plan symbols are checked."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_describe_type(value)}")
    symbol = value.strip().upper()
    if not symbol:
        raise ValueError("must not be empty")
    if not SYMBOL_PATTERN.match(symbol):
        raise ValueError(f"{value!r} is not a valid symbol (letters, digits, '.' and '-', at most 15)")
    return symbol


def parse_weight(value: object) -> Decimal:
    """Convert a raw weight to a Decimal in [0, 1]; refuse floats' cousins NaN and Infinity."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("missing")
    if isinstance(value, bool):
        raise ValueError("must be a number, got a boolean")
    if isinstance(value, Decimal):
        weight = value
    elif isinstance(value, int):
        weight = Decimal(value)
    elif isinstance(value, float):
        # Only from loosely typed callers: the parsers below never produce floats.
        weight = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        try:
            weight = Decimal(text)
        except InvalidOperation:
            hint = " (weights are fractions: write 0.6 for 60%)" if text.endswith("%") else ""
            raise ValueError(f"not a number: {value!r}{hint}") from None
    else:
        raise ValueError(f"must be a decimal string or number, got {_describe_type(value)}")
    if weight.is_nan():
        raise ValueError("must be a number, got NaN")
    if weight.is_infinite():
        raise ValueError(f"must be finite, got {weight}")
    if weight < ZERO:
        raise ValueError(f"must not be negative, got {weight}")
    if weight > ONE:
        raise ValueError(f"must be at most 1, got {weight}")
    return weight


def _describe_type(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return "a number"
    return type(value).__name__


class TargetWeight(BaseModel):
    """One symbol's target: a fraction of the investable value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    weight: Decimal

    @field_validator("symbol", mode="before")
    @classmethod
    def _check_symbol(cls, value: Any) -> str:
        return normalize_symbol(value)

    @field_validator("weight", mode="before")
    @classmethod
    def _check_weight(cls, value: Any) -> Decimal:
        return parse_weight(value)


class TargetWeights(BaseModel):
    """A validated set of target weights: distinct symbols, weights summing to at most 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: tuple[TargetWeight, ...]

    @model_validator(mode="after")
    def _check_set(self) -> TargetWeights:
        if not self.targets:
            raise ValueError("no targets (to sell everything, list the held symbols with weight 0)")
        seen: set[str] = set()
        for target in self.targets:
            if target.symbol in seen:
                raise ValueError(f"duplicate symbol {target.symbol}")
            seen.add(target.symbol)
        total = self.total
        if total > ONE + SUM_TOLERANCE:
            raise ValueError(f"weights sum to {total}, above 1 (the part below 1 stays cash)")
        return self

    @property
    def total(self) -> Decimal:
        """The sum of the weights."""
        return sum((target.weight for target in self.targets), ZERO)

    @property
    def cash_weight(self) -> Decimal:
        """The fraction of the investable value the targets leave in cash."""
        return max(ONE - self.total, ZERO)

    @property
    def weights(self) -> dict[str, Decimal]:
        """Symbol to weight, in file order."""
        return {target.symbol: target.weight for target in self.targets}

    @classmethod
    def from_mapping(cls, weights: Mapping[str, object]) -> TargetWeights:
        """Validate a symbol-to-weight mapping (for library callers)."""
        return _build(
            [(f"symbol {symbol}", {"symbol": symbol, "weight": weight}) for symbol, weight in weights.items()]
        )


# -- entries -> TargetWeights ---------------------------------------------------------


def _symbol_hint(raw: Mapping[str, Any]) -> str:
    symbol = raw.get("symbol")
    if isinstance(symbol, str) and symbol.strip():
        return f" (symbol {symbol.strip().upper()})"
    return ""


def _entry_problems(label: str, raw: Mapping[str, Any], error: ValidationError) -> list[str]:
    problems = []
    for detail in error.errors():
        loc = ".".join(str(part) for part in detail["loc"])
        message = str(detail["msg"]).removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "unknown field (expected symbol and weight)"
        elif detail["type"] == "missing":
            message = "missing"
        hint = _symbol_hint(raw)
        if hint and hint[len(" (symbol ") : -1] in label.upper():
            hint = ""
        problems.append(f"{label}{hint}: {loc}: {message}" if loc else f"{label}{hint}: {message}")
    return problems


def _build(entries: list[tuple[str, Mapping[str, Any]]]) -> TargetWeights:
    """Validate (label, raw entry) pairs into TargetWeights, reporting every problem on one line."""
    if not entries:
        raise PlanValidationError(
            f"{_PREFIX}: no targets (to sell everything, list the held symbols with weight 0)"
        )
    problems: list[str] = []
    targets: list[TargetWeight] = []
    first_label: dict[str, str] = {}
    for label, raw in entries:
        try:
            target = TargetWeight.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_entry_problems(label, raw, exc))
            continue
        if target.symbol in first_label:
            problems.append(
                f"{label}: symbol: duplicate symbol {target.symbol} (also {first_label[target.symbol]})"
            )
            continue
        first_label[target.symbol] = label
        targets.append(target)
    if problems:
        raise PlanValidationError(f"{_PREFIX}: " + "; ".join(problems))
    try:
        return TargetWeights(targets=tuple(targets))
    except ValidationError as exc:
        messages = [str(d["msg"]).removeprefix("Value error, ") for d in exc.errors()]
        raise PlanValidationError(f"{_PREFIX}: " + "; ".join(messages)) from None


def parse_targets_data(data: object) -> TargetWeights:
    """Validate data already parsed from JSON or YAML: {"targets": mapping or list}."""
    if not isinstance(data, Mapping):
        raise PlanValidationError(
            f"{_PREFIX}: the top level must be an object with a 'targets' key, got {_describe_type(data)}"
        )
    unknown = [str(key) for key in data if key != "targets"]
    if unknown:
        raise PlanValidationError(f"{_PREFIX}: {', '.join(unknown)}: unknown field (expected only 'targets')")
    if "targets" not in data:
        raise PlanValidationError(f"{_PREFIX}: targets: missing")
    body = data["targets"]
    entries: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(body, Mapping):
        for key, weight in body.items():
            entries.append((f"targets.{key}", {"symbol": key, "weight": weight}))
    elif isinstance(body, list):
        for index, item in enumerate(body):
            label = f"targets[{index}]"
            if not isinstance(item, Mapping):
                raise PlanValidationError(
                    f"{_PREFIX}: {label}: must be an object with symbol and weight, "
                    f"got {_describe_type(item)}"
                )
            entries.append((label, item))
    else:
        raise PlanValidationError(
            f"{_PREFIX}: targets: must be a mapping of symbol to weight or a list of "
            f"{{symbol, weight}} objects, got {_describe_type(body)}"
        )
    return _build(entries)


# -- text parsers ---------------------------------------------------------------------


def parse_targets_csv(text: str) -> TargetWeights:
    """Parse CSV text with the header symbol,weight."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    entries: list[tuple[str, Mapping[str, Any]]] = []
    try:
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if row[0].lstrip().startswith("#"):
                continue
            line = reader.line_num
            if header is None:
                header = _check_csv_header(row, line)
                continue
            if len(row) != len(header):
                raise PlanValidationError(
                    f"{_PREFIX}: line {line}: expected {len(header)} fields "
                    f"({','.join(header)}), got {len(row)}"
                )
            raw = dict(zip(header, row, strict=True))
            entries.append((f"line {line}", raw))
    except csv.Error as exc:
        raise PlanValidationError(f"{_PREFIX}: malformed CSV at line {reader.line_num}: {exc}") from None
    if header is None:
        raise PlanValidationError(f"{_PREFIX}: the file is empty (expected a header symbol,weight)")
    return _build(entries)


def _check_csv_header(row: list[str], line: int) -> list[str]:
    header = [cell.strip().lower() for cell in row]
    unknown = [name for name in header if name not in _CSV_COLUMNS]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise PlanValidationError(
            f"{_PREFIX}: line {line}: unknown column {names} in the header (expected symbol,weight)"
        )
    for name in _CSV_COLUMNS:
        if header.count(name) > 1:
            raise PlanValidationError(f"{_PREFIX}: line {line}: column {name!r} appears twice")
        if name not in header:
            raise PlanValidationError(
                f"{_PREFIX}: line {line}: missing column {name!r} in the header (expected symbol,weight)"
            )
    return header


class _DuplicateKeyError(Exception):
    def __init__(self, key: str, where: str = "") -> None:
        super().__init__(key)
        self.key = key
        self.where = where


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def parse_targets_json(text: str) -> TargetWeights:
    """Parse JSON text; numbers become Decimal, never float."""
    if not text.strip():
        raise PlanValidationError(f"{_PREFIX}: the file is empty")
    try:
        data = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=Decimal,  # NaN, Infinity: kept so the weight check names them
            object_pairs_hook=_json_object,
        )
    except json.JSONDecodeError as exc:
        raise PlanValidationError(
            f"{_PREFIX}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except _DuplicateKeyError as exc:
        raise PlanValidationError(f"{_PREFIX}: duplicate key {exc.key!r}") from None
    except RecursionError:
        raise PlanValidationError(f"{_PREFIX}: malformed JSON: nested too deeply") from None
    return parse_targets_data(data)


_BOOL_TAG = "tag:yaml.org,2002:bool"


class _TargetsYamlLoader(yaml.SafeLoader):
    """SafeLoader with Decimal floats, plain-text keys, no yes/no/on/off booleans."""


_TargetsYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal | str:
    text = str(loader.construct_scalar(node)).replace("_", "").strip()  # type: ignore[arg-type]
    lowered = text.lower()
    if lowered in (".nan",):
        return Decimal("NaN")
    if lowered in (".inf", "+.inf"):
        return Decimal("Infinity")
    if lowered == "-.inf":
        return Decimal("-Infinity")
    try:
        return Decimal(text)
    except InvalidOperation:
        return text  # e.g. a sexagesimal float: the weight check reports it as text


def _yaml_mapping(loader: yaml.SafeLoader, node: yaml.Node) -> dict[Any, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, "expected a mapping", node.start_mark)
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                "a key must be plain text",
                key_node.start_mark,
            )
        key = key_node.value
        if key in result:
            raise _DuplicateKeyError(key, f" at line {key_node.start_mark.line + 1}")
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_TargetsYamlLoader.add_constructor("tag:yaml.org,2002:float", _yaml_decimal)
_TargetsYamlLoader.add_constructor("tag:yaml.org,2002:map", _yaml_mapping)


def parse_targets_yaml(text: str) -> TargetWeights:
    """Parse YAML text; floats become Decimal from their text, never float."""
    if not text.strip():
        raise PlanValidationError(f"{_PREFIX}: the file is empty")
    try:
        data = yaml.load(text, Loader=_TargetsYamlLoader)
    except _DuplicateKeyError as exc:
        raise PlanValidationError(f"{_PREFIX}: duplicate key {exc.key!r}{exc.where}") from None
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        problem = " ".join(str(exc.problem or exc.context or "parse error").split())
        raise PlanValidationError(f"{_PREFIX}: malformed YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        raise PlanValidationError(f"{_PREFIX}: malformed YAML: {message}") from None
    except RecursionError:
        raise PlanValidationError(f"{_PREFIX}: malformed YAML: nested too deeply") from None
    if data is None:
        raise PlanValidationError(f"{_PREFIX}: the file is empty")
    return parse_targets_data(data)


def targets_format_for(name: str) -> str:
    """The format of a targets file from its name's suffix (csv, json, yaml/yml)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    fmt = _FORMAT_ALIASES.get(suffix)
    if fmt is None:
        raise PlanValidationError(
            f"{_PREFIX}: cannot tell the format of {name!r} from its suffix (use .csv, .json, .yaml or .yml)"
        )
    return fmt


def parse_targets(text: str, fmt: str) -> TargetWeights:
    """Parse targets text in the named format: csv, json, yaml (or yml)."""
    normalized = _FORMAT_ALIASES.get(fmt.strip().lower().lstrip("."))
    if normalized == "csv":
        return parse_targets_csv(text)
    if normalized == "json":
        return parse_targets_json(text)
    if normalized == "yaml":
        return parse_targets_yaml(text)
    raise PlanValidationError(
        f"{_PREFIX}: unknown format {fmt!r} (expected one of {', '.join(TARGET_FORMATS)})"
    )
