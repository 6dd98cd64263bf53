"""Alpaca's failures mapped onto trimtab's error tree, once, here.

The mapping goes by HTTP status and Alpaca's numeric codes. Alpaca gives one code
(40310000) to several refusals; those are told apart by the structured fields of the
body where Alpaca sends them (``available``, ``held_for_orders`` for a quantity
refusal), and only then by the message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import requests

from trimtab.adapters.alpaca._sdk import APIError
from trimtab.domain.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DuplicateClientOrderIdError,
    InsufficientBuyingPowerError,
    InsufficientQuantityError,
    InvalidOrderError,
    OrderNotCancelableError,
    OrderNotFoundError,
    RateLimitedError,
    RejectedError,
    TrimtabError,
    UnknownOrderOutcomeError,
)

CODE_INVALID = 40010001
CODE_UNAUTHORIZED = 40110000
CODE_FORBIDDEN = 40310000
CODE_NOT_FOUND = 40410000
CODE_UNPROCESSABLE = 42210000
CODE_RATE_LIMITED = 42910000


class Operation(Enum):
    """What the failed request was doing; an unknown outcome matters only for writes."""

    READ = "read"
    SUBMIT = "submit"
    CANCEL = "cancel"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class ErrorBody:
    status: int | None
    code: int | None
    message: str
    fields: dict[str, object]


def parse_body(exc: APIError) -> ErrorBody:
    """The status, code and message of an APIError, whatever its body holds."""
    text = str(exc)
    fields: dict[str, object] = {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        fields = {str(k): v for k, v in parsed.items()}
    code = fields.get("code")
    message = fields.get("message")
    status = exc.status_code
    return ErrorBody(
        status=status if isinstance(status, int) else None,
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        message=message if isinstance(message, str) else _short(text),
        fields=fields,
    )


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def retry_after_of(raw_headers: Mapping[str, str] | None, now: datetime) -> float | None:
    """Seconds until X-Ratelimit-Reset (epoch seconds), or Retry-After, if either is present."""
    if raw_headers is None:
        return None
    headers = requests.structures.CaseInsensitiveDict(raw_headers)
    reset = headers.get("X-Ratelimit-Reset")
    if reset:
        try:
            return max(float(reset) - now.timestamp(), 0.0)
        except ValueError:
            pass
    after = headers.get("Retry-After")
    if after:
        try:
            return max(float(after), 0.0)
        except ValueError:
            return None
    return None


def map_api_error(exc: APIError, operation: Operation, now: datetime, what: str) -> TrimtabError:
    """The trimtab error for an APIError raised by alpaca-py while doing `what`."""
    body = parse_body(exc)
    status = body.status
    detail = f"{what}: HTTP {status if status is not None else '?'}"
    if body.code is not None:
        detail += f" code {body.code}"
    detail += f": {body.message}"
    if status == 429 or body.code == CODE_RATE_LIMITED:
        response = exc.response
        headers = response.headers if isinstance(response, requests.Response) else None
        return RateLimitedError(detail, retry_after=retry_after_of(headers, now))
    if status is None or status >= 500:
        if operation in (Operation.SUBMIT, Operation.REPLACE):
            return UnknownOrderOutcomeError(detail)
        return BrokerUnavailableError(detail)
    if status == 401:
        return ConfigurationError(f"{what}: Alpaca refused the API keys (HTTP 401)")
    if status == 404 or body.code == CODE_NOT_FOUND:
        return OrderNotFoundError(detail)
    if status == 403:
        return _forbidden(body, detail)
    if status == 422 or body.code in (CODE_INVALID, CODE_UNPROCESSABLE):
        return _unprocessable(body, operation, detail)
    if status == 400:
        return InvalidOrderError(detail)
    return RejectedError(detail)


def _forbidden(body: ErrorBody, detail: str) -> RejectedError:
    if any(key in body.fields for key in ("available", "held_for_orders", "existing_qty")):
        return InsufficientQuantityError(detail)
    text = body.message.lower()
    if "buying power" in text:
        return InsufficientBuyingPowerError(detail)
    if "insufficient qty" in text or "insufficient quantity" in text:
        return InsufficientQuantityError(detail)
    return InvalidOrderError(detail)


def _unprocessable(body: ErrorBody, operation: Operation, detail: str) -> RejectedError:
    if operation in (Operation.CANCEL, Operation.REPLACE) and body.code == CODE_UNPROCESSABLE:
        return OrderNotCancelableError(detail)
    if operation is Operation.SUBMIT and "client_order_id" in body.message and "unique" in body.message:
        return DuplicateClientOrderIdError(detail)
    return InvalidOrderError(detail)


def map_transport_error(exc: requests.RequestException, operation: Operation, what: str) -> TrimtabError:
    """A connection failure or timeout: unknown outcome for writes that may have been sent."""
    kind = type(exc).__name__
    detail = f"{what}: {kind}"
    never_sent = isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError) and _refused(exc)
    )
    if operation in (Operation.SUBMIT, Operation.REPLACE) and not never_sent:
        return UnknownOrderOutcomeError(detail)
    return BrokerUnavailableError(detail)


def _refused(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established (nothing was sent)."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < 16:
        cause = todo.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError) or type(cause).__name__ in (
            "NewConnectionError",
            "NameResolutionError",
        ):
            return True
        linked = [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args]
        todo.extend(item for item in linked if isinstance(item, BaseException))
    return False
