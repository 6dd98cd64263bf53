"""Faults the sandbox can inject, set at start (command line) or while running (admin endpoint).

Command-line form, one --fault per fault::

    submit-500[:N]          the next N order submissions (default 1) are accepted by the
    submit-504[:N]          exchange, then answered with HTTP 500 / 504
    429-burst[:N]           the next N requests (default 20) of each account get 429
    stream-silent           the trade_updates stream sends nothing (events are lost)
    stream-disconnect       close every trade_updates connection once, now
    stream-disconnect-every:S   ... and again every S seconds of real time
    stale-quotes[:S]        quotes are stamped S seconds old (default 60)
    zero-quotes[:SYM,SYM]   quotes (of the symbols, default all) have a zero bid
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    """The faults in force. Counts are consumed as they fire; the rest stays until changed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    submit_error_status: int = Field(default=504, ge=500, le=599)
    submit_errors: int = Field(default=0, ge=0)
    rate_limit_burst: int = Field(default=0, ge=0)
    stream_silent: bool = False
    stream_disconnect: bool = False
    stream_disconnect_every: float = Field(default=0.0, ge=0)
    stale_quotes_seconds: float = Field(default=0.0, ge=0)
    zero_quotes: bool = False
    zero_quote_symbols: list[str] = Field(default_factory=list)

    def quote_zeroed(self, symbol: str) -> bool:
        return self.zero_quotes and (not self.zero_quote_symbols or symbol in self.zero_quote_symbols)


def parse_fault(text: str, faults: Faults | None = None) -> Faults:
    """Apply one command-line fault (see the module docstring) to faults; ValueError if unknown."""
    result = faults.model_copy() if faults is not None else Faults()
    name, _, arg = text.strip().partition(":")
    name = name.lower()
    try:
        if name in ("submit-500", "submit-504"):
            result.submit_error_status = int(name[-3:])
            result.submit_errors = int(arg) if arg else 1
        elif name == "429-burst":
            result.rate_limit_burst = int(arg) if arg else 20
        elif name == "stream-silent":
            result.stream_silent = True
        elif name == "stream-disconnect":
            result.stream_disconnect = True
        elif name == "stream-disconnect-every":
            result.stream_disconnect_every = float(arg)
        elif name == "stale-quotes":
            result.stale_quotes_seconds = float(arg) if arg else 60.0
        elif name == "zero-quotes":
            result.zero_quotes = True
            result.zero_quote_symbols = [s.strip().upper() for s in arg.split(",") if s.strip()]
        else:
            raise ValueError(f"unknown fault {text!r}")
    except ValueError as exc:
        if "unknown fault" in str(exc):
            raise
        raise ValueError(f"bad fault {text!r}: {exc}") from None
    return result
