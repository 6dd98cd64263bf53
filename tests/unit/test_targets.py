"""The targets file: good files in each format, and the validation corpus of bad ones."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trimtab.domain.errors import PlanValidationError
from trimtab.domain.targets import (
    TargetWeights,
    parse_targets,
    parse_targets_data,
    targets_format_for,
)

D = Decimal

GOOD: list[tuple[str, str, str, dict[str, Decimal]]] = [
    ("csv-basic", "csv", "symbol,weight\nSPY,0.6\nBND,0.4\n", {"SPY": D("0.6"), "BND": D("0.4")}),
    (
        "csv-reordered-columns-comments-blank-lines-bom-crlf",
        "csv",
        "\ufeffWeight, Symbol\r\n# strategy output\r\n\r\n0.5, spy \r\n0.25,brk.b\r\n",
        {"SPY": D("0.5"), "BRK.B": D("0.25")},
    ),
    ("csv-quoted", "csv", 'symbol,weight\n"SPY","0.60"\n', {"SPY": D("0.60")}),
    ("csv-zero-weight", "csv", "symbol,weight\nSPY,1\nBND,0\n", {"SPY": D("1"), "BND": D("0")}),
    ("csv-exponent", "csv", "symbol,weight\nSPY,6e-1\n", {"SPY": D("0.6")}),
    (
        "csv-float-noise-within-tolerance",
        "csv",
        "symbol,weight\nA,0.1\nB,0.2\nC,0.7000000000000001\n",
        {"A": D("0.1"), "B": D("0.2"), "C": D("0.7000000000000001")},
    ),
    (
        "json-mapping",
        "json",
        '{"targets": {"SPY": "0.6", "BND": 0.35}}',
        {"SPY": D("0.6"), "BND": D("0.35")},
    ),
    (
        "json-list",
        "json",
        '{"targets": [{"symbol": "spy", "weight": 0.1}, {"weight": "0.2", "symbol": "QQQ"}]}',
        {"SPY": D("0.1"), "QQQ": D("0.2")},
    ),
    ("json-int-weight", "json", '{"targets": {"SPY": 1}}', {"SPY": D("1")}),
    (
        "yaml-mapping",
        "yaml",
        "targets:\n  SPY: 0.6\n  BND: '0.35'\n",
        {"SPY": D("0.6"), "BND": D("0.35")},
    ),
    (
        "yaml-list",
        "yaml",
        "targets:\n  - {symbol: SPY, weight: 0.6}\n  - symbol: BND\n    weight: 0.4\n",
        {"SPY": D("0.6"), "BND": D("0.4")},
    ),
    (
        "yaml-symbols-that-look-like-booleans-and-numbers",
        "yaml",
        "targets:\n  ON: 0.1\n  NO: 0.1\n  Y: 0.1\n  123: 0.1\n",
        {"ON": D("0.1"), "NO": D("0.1"), "Y": D("0.1"), "123": D("0.1")},
    ),
    (
        "yaml-list-boolean-looking-symbol",
        "yaml",
        "targets:\n  - {symbol: ON, weight: 0.3}\n  - {symbol: OFF, weight: 0.3}\n",
        {"ON": D("0.3"), "OFF": D("0.3")},
    ),
    (
        "yaml-precise-decimal",
        "yaml",
        "targets:\n  SPY: 0.1234567890123456789\n",
        {"SPY": D("0.1234567890123456789")},
    ),
    ("yml-alias", "yml", "targets: {SPY: 0.5}\n", {"SPY": D("0.5")}),
]


@pytest.mark.parametrize(
    ("fmt", "text", "expected"), [case[1:] for case in GOOD], ids=[case[0] for case in GOOD]
)
def test_good_files_parse(fmt: str, text: str, expected: dict[str, Decimal]) -> None:
    targets = parse_targets(text, fmt)
    assert targets.weights == expected
    assert list(targets.weights) == list(expected)  # file order kept
    for weight in targets.weights.values():
        assert type(weight) is Decimal


def test_cash_weight_and_total() -> None:
    targets = parse_targets("symbol,weight\nSPY,0.6\nBND,0.3\n", "csv")
    assert targets.total == D("0.9")
    assert targets.cash_weight == D("0.1")


# (id, format, text, substrings the one-line message must contain)
BAD: list[tuple[str, str, str, tuple[str, ...]]] = [
    # sums and ranges
    ("csv-sum-above-1", "csv", "symbol,weight\nSPY,0.7\nBND,0.4\n", ("sum to 1.1", "above 1")),
    ("json-sum-above-1", "json", '{"targets": {"A": "0.5", "B": "0.5", "C": "0.01"}}',
     ("sum to 1.01",)),
    ("csv-negative", "csv", "symbol,weight\nSPY,-0.1\n",
     ("line 2", "SPY", "weight", "negative", "-0.1")),
    ("csv-above-1", "csv", "symbol,weight\nSPY,1.5\n", ("line 2", "SPY", "weight", "at most 1")),
    ("yaml-above-1", "yaml", "targets:\n  SPY: 2\n", ("targets.SPY", "weight", "at most 1")),
    # numbers
    ("csv-non-numeric", "csv", "symbol,weight\nSPY,abc\n",
     ("line 2", "SPY", "weight", "not a number", "'abc'")),
    ("csv-percent", "csv", "symbol,weight\nSPY,60%\n", ("weight", "0.6 for 60%")),
    ("csv-nan", "csv", "symbol,weight\nSPY,NaN\n", ("line 2", "SPY", "weight", "NaN")),
    ("csv-infinity", "csv", "symbol,weight\nSPY,Infinity\n", ("SPY", "weight", "finite")),
    ("csv-empty-weight", "csv", "symbol,weight\nSPY,\n", ("line 2", "SPY", "weight", "missing")),
    ("json-nan", "json", '{"targets": {"SPY": NaN}}', ("targets.SPY", "weight", "NaN")),
    ("json-infinity", "json", '{"targets": {"SPY": -Infinity}}', ("weight", "finite")),
    ("json-boolean", "json", '{"targets": {"SPY": true}}', ("weight", "boolean")),
    ("json-null", "json", '{"targets": {"SPY": null}}', ("targets.SPY", "weight", "missing")),
    ("json-object-weight", "json", '{"targets": {"SPY": {"w": 1}}}', ("weight", "an object")),
    ("yaml-nan", "yaml", "targets:\n  SPY: .nan\n", ("weight", "NaN")),
    ("yaml-inf", "yaml", "targets:\n  SPY: .inf\n", ("weight", "finite")),
    ("yaml-yes", "yaml", "targets:\n  SPY: yes\n", ("weight", "not a number", "'yes'")),
    # symbols
    ("csv-duplicate", "csv", "symbol,weight\nSPY,0.1\nspy,0.2\n",
     ("line 3", "duplicate symbol SPY", "line 2")),
    ("json-duplicate-key", "json", '{"targets": {"SPY": 0.1, "SPY": 0.2}}', ("duplicate", "SPY")),
    ("json-duplicate-after-normalizing", "json", '{"targets": {"SPY": 0.1, "spy": 0.2}}',
     ("duplicate symbol SPY",)),
    ("json-list-duplicate", "json",
     '{"targets": [{"symbol": "SPY", "weight": 0.1}, {"symbol": "SPY", "weight": 0.2}]}',
     ("targets[1]", "duplicate symbol SPY", "targets[0]")),
    ("yaml-duplicate-key", "yaml", "targets:\n  SPY: 0.1\n  SPY: 0.2\n",
     ("duplicate", "SPY", "line 3")),
    ("csv-bad-symbol", "csv", "symbol,weight\nS&P,0.1\n", ("line 2", "symbol", "not a valid symbol")),
    ("csv-empty-symbol", "csv", "symbol,weight\n,0.1\n", ("line 2", "symbol", "empty")),
    ("csv-long-symbol", "csv", "symbol,weight\nABCDEFGHIJKLMNOPQ,0.1\n", ("symbol", "at most 15")),
    ("json-numeric-symbol", "json", '{"targets": [{"symbol": 7, "weight": 0.1}]}',
     ("targets[0]", "symbol", "must be a string")),
    # structure
    ("csv-empty-file", "csv", "", ("empty",)),
    ("csv-only-blank-lines", "csv", "\n\n  \n", ("empty",)),
    ("csv-header-only", "csv", "symbol,weight\n", ("no targets",)),
    ("csv-unknown-column", "csv", "symbol,weight,price\nSPY,0.1,3\n",
     ("line 1", "unknown column", "'price'")),
    ("csv-missing-column", "csv", "symbol\nSPY\n", ("missing column", "'weight'")),
    ("csv-duplicate-column", "csv", "symbol,weight,weight\nSPY,0.1,0.2\n", ("'weight'", "twice")),
    ("csv-extra-field", "csv", "symbol,weight\nSPY,0.1,3\n", ("line 2", "expected 2 fields", "got 3")),
    ("csv-short-row", "csv", "symbol,weight\nSPY\n", ("line 2", "expected 2 fields", "got 1")),
    ("csv-malformed-quote", "csv", 'symbol,weight\n"SPY,0.1\n', ("malformed CSV",)),
    ("json-empty-file", "json", "  \n", ("empty",)),
    ("json-malformed", "json", '{"targets": {"SPY": 0.6', ("malformed JSON", "line 1")),
    ("json-top-level-list", "json", "[1, 2]", ("top level", "'targets'", "a list")),
    ("json-unknown-top-field", "json", '{"targets": {"SPY": 0.6}, "cash": 0.4}',
     ("cash", "unknown field")),
    ("json-missing-targets", "json", "{}", ("targets", "missing")),
    ("json-empty-targets", "json", '{"targets": {}}', ("no targets",)),
    ("json-targets-not-collection", "json", '{"targets": "SPY"}', ("targets", "mapping", "list")),
    ("json-list-item-not-object", "json", '{"targets": ["SPY"]}',
     ("targets[0]", "must be an object")),
    ("json-unknown-entry-field", "json",
     '{"targets": [{"symbol": "SPY", "weight": 0.1, "price": 3}]}',
     ("targets[0]", "SPY", "price", "unknown field")),
    ("json-missing-weight", "json", '{"targets": [{"symbol": "SPY"}]}',
     ("targets[0]", "SPY", "weight", "missing")),
    ("json-missing-symbol", "json", '{"targets": [{"weight": 0.1}]}',
     ("targets[0]", "symbol", "missing")),
    ("yaml-empty-file", "yaml", "# nothing here\n", ("empty",)),
    ("yaml-malformed", "yaml", "targets:\n  SPY: [0.6\n", ("malformed YAML", "line")),
    ("yaml-tab-indent", "yaml", "targets:\n\tSPY: 0.6\n", ("malformed YAML",)),
    ("yaml-two-documents", "yaml", "targets: {SPY: 0.1}\n---\ntargets: {}\n", ("malformed YAML",)),
    ("yaml-scalar-top", "yaml", "just text\n", ("top level", "'targets'")),
    ("yaml-targets-number", "yaml", "targets: 3\n", ("targets", "a number")),
    ("yaml-python-tag", "yaml", "targets: !!python/object:os.system {}\n", ("malformed YAML",)),
    ("yaml-complex-key", "yaml", "targets:\n  ? [a, b]\n  : 0.1\n", ("malformed YAML", "plain text")),
    ("unknown-format", "toml", "[targets]\nSPY = 0.6\n", ("unknown format", "'toml'")),
]


@pytest.mark.parametrize(
    ("fmt", "text", "expected"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_files_are_refused_with_one_clear_line(
    fmt: str, text: str, expected: tuple[str, ...]
) -> None:
    with pytest.raises(PlanValidationError) as info:
        parse_targets(text, fmt)
    message = str(info.value)
    assert message.startswith("invalid targets")
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_every_problem_of_a_file_is_named_on_the_one_line() -> None:
    with pytest.raises(PlanValidationError) as info:
        parse_targets("symbol,weight\nSPY,-1\nBND,abc\n", "csv")
    message = str(info.value)
    assert "line 2 (symbol SPY): weight" in message
    assert "line 3 (symbol BND): weight" in message


def test_from_mapping_validates_like_a_file() -> None:
    assert TargetWeights.from_mapping({"spy": "0.5"}).weights == {"SPY": D("0.5")}
    with pytest.raises(PlanValidationError, match=r"sum to 1\.2"):
        TargetWeights.from_mapping({"SPY": "0.6", "BND": D("0.6")})
    with pytest.raises(PlanValidationError, match="symbol BAD!: symbol"):
        TargetWeights.from_mapping({"BAD!": "0.1"})


def test_parse_targets_data_accepts_already_parsed_objects() -> None:
    targets = parse_targets_data({"targets": [{"symbol": "SPY", "weight": D("0.25")}]})
    assert targets.weights == {"SPY": D("0.25")}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("t.csv", "csv"), ("a/b/T.JSON", "json"), ("x.yaml", "yaml"), ("x.yml", "yaml")],
)
def test_format_from_file_name(name: str, fmt: str) -> None:
    assert targets_format_for(name) == fmt


@pytest.mark.parametrize("name", ["targets", "targets.txt", "x.toml"])
def test_unknown_suffix_is_refused(name: str) -> None:
    with pytest.raises(PlanValidationError, match="suffix"):
        targets_format_for(name)


weights_st = st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False)


@given(st.dictionaries(st.sampled_from(["SPY", "BND", "GLD", "QQQ", "VTI", "BRK.B"]), weights_st,
                       min_size=1))
def test_round_trip_in_every_format(weights: dict[str, Decimal]) -> None:
    total = sum(weights.values(), D(0))
    csv_text = "symbol,weight\n" + "".join(f"{s},{w}\n" for s, w in weights.items())
    json_text = '{"targets": {' + ", ".join(f'"{s}": {w}' for s, w in weights.items()) + "}}"
    yaml_text = "targets:\n" + "".join(f"  - {{symbol: {s}, weight: {w}}}\n" for s, w in weights.items())
    for fmt, text in (("csv", csv_text), ("json", json_text), ("yaml", yaml_text)):
        if total > 1:
            with pytest.raises(PlanValidationError, match="above 1"):
                parse_targets(text, fmt)
        else:
            assert parse_targets(text, fmt).weights == weights
