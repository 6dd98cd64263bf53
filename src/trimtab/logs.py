"""Structured logging with the run's plan_id and correlation_id on every line.

execute_rebalance_plan binds the ids in a context variable; get_logger returns an adapter
that adds them to each record as attributes (record.plan_id, record.correlation_id) and to
the message text as key=value pairs. Tasks started inside the run inherit the binding.

A worker's job binds its account and job id the same way (bind_job): records of
get_logger's loggers carry record.account and record.job_id, and ``account=... job_id=...``
in their text. JobFilter gives the same to records of any other logger (the ledger's,
procrastinate's) on the handler it is added to. UtcFormatter stamps lines with the
record's time in UTC, ISO 8601 with milliseconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_RUN: ContextVar[tuple[str | None, str | None]] = ContextVar("trimtab_run", default=(None, None))
_JOB: ContextVar[tuple[str | None, int | None]] = ContextVar("trimtab_job", default=(None, None))


@contextmanager
def bind_run(plan_id: str | None, correlation_id: str | None) -> Iterator[None]:
    """Bind plan_id and correlation_id to every log line inside the block."""
    token = _RUN.set((plan_id, correlation_id))
    try:
        yield
    finally:
        _RUN.reset(token)


@contextmanager
def bind_job(account: str | None, job_id: int | None) -> Iterator[None]:
    """Bind a worker job's account and job id to every log line inside the block."""
    token = _JOB.set((account, job_id))
    try:
        yield
    finally:
        _JOB.reset(token)


def _job_text(account: str, job_id: int | None) -> str:
    return f" account={account} job_id={'-' if job_id is None else job_id}"


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        plan_id, correlation_id = _RUN.get()
        account, job_id = _JOB.get()
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("plan_id", plan_id)
        extra.setdefault("correlation_id", correlation_id)
        extra.setdefault("account", account)
        extra.setdefault("job_id", job_id)
        kwargs["extra"] = extra
        if plan_id is not None:
            msg = f"{msg} plan_id={plan_id} correlation_id={correlation_id or '-'}"
        if account is not None:
            msg = f"{msg}{_job_text(account, job_id)}"
        return msg, kwargs


def get_logger(name: str) -> RunLogger:
    """A logger whose records carry the bound plan_id and correlation_id (and account and job_id)."""
    return RunLogger(logging.getLogger(name), {})


class JobFilter(logging.Filter):
    """On a handler: records of other loggers than get_logger's get the bound account and job id.

    A record made while a job is bound, without an ``account`` attribute (get_logger's
    records always have one), gets record.account and record.job_id and
    ``account=... job_id=...`` at the end of its message, as get_logger's records do.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "account"):
            return True
        account, job_id = _JOB.get()
        record.__dict__.update(account=account, job_id=job_id)
        if account is not None:
            text = _job_text(account, job_id)
            # Appended to the format string, whose arguments stay as they were.
            record.msg = f"{record.msg}{text.replace('%', '%%') if record.args else text}"
        return True


class UtcFormatter(logging.Formatter):
    """``2026-11-24T14:30:05.123Z LEVEL logger message``: the record's own time, in UTC."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s %(message)s") -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"
