from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from trimtab.domain.errors import ConfigurationError
from trimtab.domain.plan import Urgency
from trimtab.engine.config import Anchor, ExecutionConfig


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        ({"sell_phase_timeout": 0}, "sell_phase_timeout"),
        ({"fill_wait": 3}, "fill_wait: unknown field"),
        ({"algo": "twap"}, "algo"),
        ({"max_spread_bps": "-1"}, "max_spread_bps"),
        ({"max_spread_bps": "abc"}, "max_spread_bps"),
        ({"cash_reserve": "NaN"}, "cash_reserve"),
        ({"quote_refresh_attempts": -1}, "quote_refresh_attempts"),
        ({"ladders": {"NORMAL": {"steps": ["0.5", "0.2"]}}}, "must not decrease"),
        ({"ladders": {"LOW": {"steps": ["1.5"]}}}, "[0, 1]"),
        ({"ladders": {"HIGH": {"fill_wait": -2}}}, "fill_wait"),
        ({"plan_timeout": 10, "sell_phase_timeout": 20}, "plan_timeout"),
        ({"client_order_id_prefix": "bad prefix!"}, "client_order_id_prefix"),
        ({"max_concurrent_orders": 0}, "max_concurrent_orders"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(data: dict[str, Any], expect: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ExecutionConfig.from_mapping(data)
    assert expect in str(caught.value)


def test_defaults_have_a_ladder_per_urgency() -> None:
    config = ExecutionConfig()
    assert set(config.ladders) == set(Urgency)
    assert config.ladder(None) == config.ladders[Urgency.NORMAL]
    assert config.ladder(Urgency.HIGH).steps[-1] == Decimal(1)


def test_toml_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "exec.toml"
    path.write_text(
        '[execution]\nmax_spread_bps = "40"\ncash_reserve = "100"\n'
        '[execution.ladders.LOW]\nanchor = "mid"\nfill_wait = 30\nsteps = ["0", "0.5"]\n'
    )
    config = ExecutionConfig.load(path, environ={"TRIMTAB_CASH_RESERVE": "250"}, overrides={"algo": "market"})
    assert config.max_spread_bps == Decimal("40")
    assert config.cash_reserve == Decimal("250")
    assert config.algo == "market"
    assert config.ladders[Urgency.LOW].anchor is Anchor.MID
    assert config.ladders[Urgency.NORMAL] == ExecutionConfig().ladders[Urgency.NORMAL]


def test_missing_and_malformed_files_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        ExecutionConfig.load(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("max_spread_bps = = 3")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        ExecutionConfig.load(bad, environ={})


def test_config_is_frozen() -> None:
    config = ExecutionConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.algo = "market"  # type: ignore[misc]
