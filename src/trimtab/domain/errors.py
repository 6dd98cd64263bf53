"""The one exception tree of trimtab.

::

    TrimtabError
     +-- RetryableError          the same request may succeed later
     |    +-- BrokerUnavailableError   connection refused, timeout, 5xx
     |    +-- RateLimitedError         the broker's request budget is spent
     |    +-- UnknownOrderOutcomeError the order may or may not exist at the broker
     +-- RejectedError           the broker refused this request; do not resend it as is
     |    +-- InsufficientBuyingPowerError
     |    +-- InsufficientQuantityError
     |    +-- InvalidOrderError        fractional qty on a whole-share asset, bad price...
     |    +-- DuplicateClientOrderIdError
     |    +-- OrderNotFoundError
     |    +-- OrderNotCancelableError  the order is already in a final state
     +-- FatalError              stop: the input, the configuration or a rule is wrong
          +-- PlanValidationError      the plan or an input file is invalid
          +-- ConfigurationError       ExecutionConfig or environment is invalid
          +-- SafetyRefusalError       a safety rule refused the plan
          |    +-- PlanInProgressError another process is executing this plan
          +-- LeaseLostError           another process took over the plan mid-run
          +-- IllegalTransitionError   an order status change the table forbids
          +-- QuoteStreamError         the quote stream could not start

Broker adapters map their own failures onto this tree once, in the adapter; the engine
decides by class, never by message text.
"""

from __future__ import annotations


class TrimtabError(Exception):
    """Base of every error trimtab raises on purpose."""


class RetryableError(TrimtabError):
    """The operation failed in a way that may succeed if tried again."""


class BrokerUnavailableError(RetryableError):
    """The broker could not be reached or answered with a server error."""


class RateLimitedError(RetryableError):
    """The broker's request budget is exhausted; wait before the next request."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownOrderOutcomeError(RetryableError):
    """An order submission ended without a definite answer; resolve it by client order id."""


class RejectedError(TrimtabError):
    """The broker refused the request."""


class InsufficientBuyingPowerError(RejectedError):
    """Not enough buying power for the order."""


class InsufficientQuantityError(RejectedError):
    """Not enough shares available for the sell."""


class InvalidOrderError(RejectedError):
    """The order's parameters are not acceptable for the asset."""


class DuplicateClientOrderIdError(RejectedError):
    """An order with this client order id already exists."""


class OrderNotFoundError(RejectedError):
    """No order with this id exists."""


class OrderNotCancelableError(RejectedError):
    """The order is already final (filled, cancelled, ...)."""


class FatalError(TrimtabError):
    """The input, the configuration or a safety rule stops the work."""


class PlanValidationError(FatalError, ValueError):
    """A plan or an input file is invalid. The message names the item and the field."""


class ConfigurationError(FatalError, ValueError):
    """The configuration is invalid. The message names the field."""


class SafetyRefusalError(FatalError):
    """A safety rule refused the work before anything was sent."""


class PlanInProgressError(SafetyRefusalError):
    """Another live process holds this plan; nothing was sent."""


class LeaseLostError(FatalError):
    """This process lost its claim on the plan to another one; it stopped sending orders."""


class IllegalTransitionError(FatalError):
    """An order status transition that the transition table forbids."""


class QuoteStreamError(FatalError):
    """The quote stream could not be started."""
