"""The account and job id on a worker job's log lines, and the worker's timestamped format."""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import re
import sys
import threading
from collections.abc import Iterator

import pytest

from trimtab.cli.common import setup_logging
from trimtab.cli.scale import worker_log_lines
from trimtab.domain.errors import SafetyRefusalError
from trimtab.logs import JobFilter, UtcFormatter, bind_job, bind_run, get_logger


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    """The records of the loggers under test.worker_logs, with a JobFilter on the handler."""
    handler = Records()
    handler.addFilter(JobFilter())
    parent = logging.getLogger("test.worker_logs")
    parent.addHandler(handler)
    parent.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        parent.removeHandler(handler)
        parent.setLevel(logging.NOTSET)


def test_a_bound_job_puts_its_account_and_id_on_every_record(records: Records) -> None:
    ours = get_logger("test.worker_logs.ours")
    plain = logging.getLogger("test.worker_logs.plain")  # as the ledger's: not get_logger's
    ours.info("before")
    with bind_job("acct-7", 42):
        ours.info("no plan yet")
        with bind_run("daily-1", "corr-3"):
            ours.info("order sent cid=%s", "tt-abc-SPY-0")
            plain.info("ledger plan state plan_id=%s 100%% done", "daily-1")
            plain.info("no arguments, 100% literal")

        def on_a_thread() -> None:
            ours.warning("from the plan's thread")

        # A plan runs on a thread of its own, in a copy of the job's context.
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(on_a_thread,))
        worker.start()
        worker.join()

        async def task() -> None:
            ours.info("from a task")

        asyncio.run(task())
    plain.info("after")

    texts = [r.getMessage() for r in records.records]
    assert texts == [
        "before",
        "no plan yet account=acct-7 job_id=42",
        "order sent cid=tt-abc-SPY-0 plan_id=daily-1 correlation_id=corr-3 account=acct-7 job_id=42",
        "ledger plan state plan_id=daily-1 100% done account=acct-7 job_id=42",
        "no arguments, 100% literal account=acct-7 job_id=42",
        "from the plan's thread account=acct-7 job_id=42",
        "from a task account=acct-7 job_id=42",
        "after",
    ]
    accounts = [(getattr(r, "account", "?"), getattr(r, "job_id", "?")) for r in records.records]
    assert accounts == [(None, None)] + [("acct-7", 42)] * 6 + [(None, None)]
    assert records.records[2].__dict__["plan_id"] == "daily-1"
    assert records.records[2].__dict__["correlation_id"] == "corr-3"


def test_the_worker_format_stamps_lines_with_the_records_utc_time() -> None:
    record = logging.LogRecord("trimtab.worker.queue", logging.INFO, __file__, 1, "job started", (), None)
    record.created = 86_400 + 3 * 3600 + 4 * 60 + 5.6789  # 1970-01-02 03:04:05.678 UTC
    record.msecs = 678.9
    assert UtcFormatter().format(record) == "1970-01-02T03:04:05.678Z INFO trimtab.worker.queue job started"


def test_the_worker_command_formats_its_lines_while_it_runs_and_restores_the_plain_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trimtab = logging.getLogger("trimtab")
    level = trimtab.level
    setup_logging(verbose=True)
    # The command line's handlers write to the stderr of the moment (made by another test, maybe).
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    try:
        with worker_log_lines():
            assert len(root.handlers) == len(root_handlers) + 1
            others = root.handlers[-1]
            assert isinstance(others, logging.StreamHandler)
            assert others.stream is stream
            with bind_job("acct-1", 5):
                get_logger("trimtab.worker.queue").info("job started")
                logging.getLogger("trimtab.adapters.ledger.sql").info("ledger plan claimed")
                logging.getLogger("procrastinate.worker").warning("side task failed")
            logging.getLogger("procrastinate.worker").info("not shown: below WARNING")
        get_logger("trimtab.worker.queue").info("after the worker")
    finally:
        trimtab.setLevel(level)
    assert root.handlers == root_handlers
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert lines[0].endswith(" INFO trimtab.worker.queue job started account=acct-1 job_id=5")
    assert lines[1].endswith(" INFO trimtab.adapters.ledger.sql ledger plan claimed account=acct-1 job_id=5")
    assert lines[2].endswith(" WARNING procrastinate.worker side task failed account=acct-1 job_id=5")
    for line in lines[:3]:
        assert re.match(stamp + " ", line), line
    assert lines[3] == "INFO trimtab.worker.queue after the worker"


def test_the_queue_tells_our_own_errors_without_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    queue_log = logging.getLogger("procrastinate.worker")

    def failed(error: Exception) -> None:
        try:
            raise error
        except Exception:
            queue_log.exception("Job %s ended with status: Error", "run_plan[7]")

    with worker_log_lines():
        failed(SafetyRefusalError("trading is halted (manual); nothing was sent at 5%"))
        failed(KeyError("a bug"))
    text = stream.getvalue()
    lines = text.splitlines()
    assert lines[0].endswith(
        "ERROR procrastinate.worker Job run_plan[7] ended with status: Error "
        "(SafetyRefusalError: trading is halted (manual); nothing was sent at 5%)"
    )
    # Ours is one line: the next line is already the next record.
    assert lines[1].endswith("ERROR procrastinate.worker Job run_plan[7] ended with status: Error")
    assert "Traceback (most recent call last)" in text  # anything else keeps its traceback
    assert text.rstrip().endswith("KeyError: 'a bug'")
