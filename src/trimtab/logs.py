"""Structured logging with the run's plan_id and correlation_id on every line.

execute_rebalance_plan binds the ids in a context variable; get_logger returns an adapter
that adds them to each record as attributes (record.plan_id, record.correlation_id) and to
the message text as key=value pairs. Tasks started inside the run inherit the binding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_RUN: ContextVar[tuple[str | None, str | None]] = ContextVar("trimtab_run", default=(None, None))


@contextmanager
def bind_run(plan_id: str | None, correlation_id: str | None) -> Iterator[None]:
    """Bind plan_id and correlation_id to every log line inside the block."""
    token = _RUN.set((plan_id, correlation_id))
    try:
        yield
    finally:
        _RUN.reset(token)


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        plan_id, correlation_id = _RUN.get()
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("plan_id", plan_id)
        extra.setdefault("correlation_id", correlation_id)
        kwargs["extra"] = extra
        if plan_id is not None:
            msg = f"{msg} plan_id={plan_id} correlation_id={correlation_id or '-'}"
        return msg, kwargs


def get_logger(name: str) -> RunLogger:
    """A logger whose records carry the bound plan_id and correlation_id."""
    return RunLogger(logging.getLogger(name), {})
