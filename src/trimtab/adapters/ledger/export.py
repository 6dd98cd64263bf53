"""Export a ledger as JSON Lines, to a local file or to S3-compatible storage.

One JSON object per line, each with a "type": plan, transition, intent, order, event,
fill, quote. Decimals are strings, times ISO 8601 in UTC. A plan's lines come together:
the plan first, then its transitions, intents, orders, events, fills and quotes.

S3 destinations are s3://bucket/prefix. boto3 finds credentials, region and endpoint the
standard way (AWS_ACCESS_KEY_ID..., AWS_ENDPOINT_URL for a local or other S3-compatible
server). Nothing of the credentials or of the database URL is written to the export.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trimtab.domain.orders import OrderEvent, OrderSnapshot
from trimtab.domain.quotes import Quote
from trimtab.ports.ledger import FillRecord, IntentRecord, Ledger, StateChange

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

DEFAULT_EXPORT_NAME = "ledger.jsonl"
_SPOOL_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """Where the export went and how many records of each type it holds."""

    destination: str
    records: Mapping[str, int] = field(default_factory=dict)
    bytes_written: int = 0

    @property
    def total(self) -> int:
        return sum(self.records.values())


def export_jsonl(
    ledger: Ledger,
    destination: str | os.PathLike[str],
    *,
    plan_ids: Iterable[str] | None = None,
    name: str = DEFAULT_EXPORT_NAME,
    s3_client: S3Client | None = None,
) -> ExportSummary:
    """Write the ledger (or only plan_ids) as JSON Lines to a file path or s3://bucket/prefix.

    For S3, a prefix ending in .jsonl is the object key itself; otherwise the object is
    prefix/name. A local file is written whole or not at all (temporary file, then rename).
    """
    target = os.fspath(destination)
    if target.startswith("s3://"):
        bucket, key = parse_s3_destination(target, name)
        return _export_s3(ledger, plan_ids, bucket, key, s3_client)
    return _export_file(ledger, plan_ids, Path(target))


def parse_s3_destination(destination: str, name: str = DEFAULT_EXPORT_NAME) -> tuple[str, str]:
    """Split s3://bucket/prefix into (bucket, object key)."""
    rest = destination.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 destination needs a bucket: {destination!r}")
    if prefix.endswith((".jsonl", ".ndjson")):
        return bucket, prefix
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/{name}" if prefix else name


def ledger_records(ledger: Ledger, plan_ids: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every record of the export as a JSON-ready dict, plan by plan, oldest plan first."""
    if plan_ids is None:
        ids = [summary.plan_id for summary in reversed(ledger.list_plans(limit=None))]
    else:
        ids = list(plan_ids)
    for plan_id in ids:
        plan = ledger.get_plan(plan_id)
        if plan is None:
            raise LookupError(f"no plan {plan_id!r} in the ledger")
        result = ledger.stored_result(plan_id)
        yield {
            "type": "plan",
            "plan_id": plan.plan_id,
            "correlation_id": plan.correlation_id,
            "content_hash": plan.content_hash,
            "state": plan.state.value,
            "status": plan.status,
            "owner": plan.owner,
            "lease_expires_at": plan.lease_expires_at,
            "created_at": plan.created_at,
            "updated_at": plan.updated_at,
            "plan": json.loads(plan.plan_json),
            "result": result.model_dump(mode="json") if result is not None else None,
        }
        for change in ledger.history(plan_id):
            yield _transition_record(change)
        for intent in ledger.intents(plan_id):
            yield _intent_record(intent)
        for order in ledger.orders(plan_id):
            yield {"type": "order", "plan_id": plan_id, **_snapshot_record(order)}
        for order_event in ledger.events(plan_id):
            yield _event_record(plan_id, order_event)
        for fill in ledger.fills(plan_id):
            yield _fill_record(fill)
        for quote in ledger.quotes(plan_id):
            yield _quote_record(plan_id, quote)


def _transition_record(change: StateChange) -> dict[str, Any]:
    return {
        "type": "transition",
        "plan_id": change.plan_id,
        "from_state": change.from_state.value if change.from_state is not None else None,
        "to_state": change.to_state.value,
        "owner": change.owner,
        "time": change.time,
        "note": change.note,
    }


def _intent_record(intent: IntentRecord) -> dict[str, Any]:
    quote = intent.quote
    return {
        "type": "intent",
        "plan_id": intent.plan_id,
        "client_order_id": intent.client_order_id,
        "symbol": intent.symbol,
        "side": intent.side,
        "qty": intent.qty,
        "order_type": intent.order_type,
        "limit_price": intent.limit_price,
        "time_in_force": intent.time_in_force,
        "step": intent.step,
        "quote": None
        if quote is None
        else {
            "bid": quote.bid,
            "ask": quote.ask,
            "bid_size": quote.bid_size,
            "ask_size": quote.ask_size,
            "time": quote.timestamp,
        },
        "time": intent.time,
    }


def _snapshot_record(order: OrderSnapshot) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "order_type": order.order_type,
        "qty": order.qty,
        "status": order.status,
        "filled_qty": order.filled_qty,
        "filled_avg_price": order.filled_avg_price,
        "limit_price": order.limit_price,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "reject_reason": order.reject_reason,
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
    }


def _event_record(plan_id: str, order_event: OrderEvent) -> dict[str, Any]:
    return {
        "type": "event",
        "plan_id": plan_id,
        "kind": order_event.kind,
        "time": order_event.timestamp,
        "fill_qty": order_event.fill_qty,
        "fill_price": order_event.fill_price,
        "reason": order_event.reason,
        "extra": dict(order_event.extra),
        "order": _snapshot_record(order_event.order),
    }


def _fill_record(fill: FillRecord) -> dict[str, Any]:
    return {
        "type": "fill",
        "plan_id": fill.plan_id,
        "client_order_id": fill.client_order_id,
        "broker_order_id": fill.broker_order_id,
        "symbol": fill.symbol,
        "side": fill.side,
        "qty": fill.qty,
        "price": fill.price,
        "notional": fill.notional,
        "time": fill.time,
    }


def _quote_record(plan_id: str, quote: Quote) -> dict[str, Any]:
    return {
        "type": "quote",
        "plan_id": plan_id,
        "symbol": quote.symbol,
        "bid": quote.bid,
        "ask": quote.ask,
        "bid_size": quote.bid_size,
        "ask_size": quote.ask_size,
        "time": quote.timestamp,
    }


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot export a {type(value).__name__}")


def _write_records(
    ledger: Ledger, plan_ids: Iterable[str] | None, stream: IO[bytes]
) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    written = 0
    for record in ledger_records(ledger, plan_ids):
        line = json.dumps(record, default=_json_default, ensure_ascii=False, sort_keys=False)
        data = line.encode("utf-8") + b"\n"
        stream.write(data)
        written += len(data)
        counts[str(record["type"])] += 1
    return counts, written


def _export_file(ledger: Ledger, plan_ids: Iterable[str] | None, path: Path) -> ExportSummary:
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            counts, written = _write_records(ledger, plan_ids, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    logger.info("ledger exported destination=%s records=%d", path, sum(counts.values()))
    return ExportSummary(str(path), dict(counts), written)


def _export_s3(
    ledger: Ledger,
    plan_ids: Iterable[str] | None,
    bucket: str,
    key: str,
    s3_client: S3Client | None,
) -> ExportSummary:
    # boto3 takes ~0.4 s to import: only an S3 export pays for it, not every CLI start.
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client: S3Client = boto3.client("s3") if s3_client is None else s3_client
    try:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            counts, written = _write_records(ledger, plan_ids, spool)
            spool.seek(0)
            client.upload_fileobj(spool, bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"})
    except (BotoCoreError, ClientError) as exc:
        # The message names the bucket and the failure; credentials never appear in it.
        raise OSError(f"upload to s3://{bucket}/{key} failed: {exc}") from None
    finally:
        if s3_client is None:
            client.close()
    destination = f"s3://{bucket}/{key}"
    logger.info("ledger exported destination=%s records=%d", destination, sum(counts.values()))
    return ExportSummary(destination, dict(counts), written)
