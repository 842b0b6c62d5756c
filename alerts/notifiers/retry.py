"""Delivering one notification through one notifier: retries with exponential backoff and jitter on
retryable errors, none on permanent ones, and a `DeliveryResult` either way (`deliver` does not raise)."""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from alerts.notifiers.base import Notification, Notifier, PermanentDeliveryError, RetryableDeliveryError

log = logging.getLogger(__name__)

DeliveryStatus = Literal["delivered", "failed", "gone"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempt n (from 1) that failed retryably waits min(max_s, base_s * 2**(n-1)), shortened by up to
    `jitter` (a fraction) at random so that many senders do not retry in step; a longer Retry-After from the
    server wins, still capped at max_s."""

    max_attempts: int = 5
    base_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a fraction between 0 and 1")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("delays cannot be negative")

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        backoff *= 1.0 - self.jitter * self.rng.random()
        if retry_after_s is not None and retry_after_s > backoff:
            backoff = retry_after_s
        return min(self.max_s, backoff)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status: DeliveryStatus  # "delivered" | "failed" | "gone" (the target no longer exists: remove it)
    attempts: int
    last_error: str | None  # the last error's message (secrets redacted), None when delivered at once
    http_status: int | None  # the last HTTP status seen, where the channel is HTTP
    elapsed_s: float
    retryable: bool = False  # failed on retryable errors only: worth trying again later

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


def deliver(
    notifier: Notifier,
    notification: Notification,
    target: str | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> DeliveryResult:
    """Send `notification` through `notifier`, retrying retryable failures up to `policy.max_attempts` times.

    An exception that is not a delivery error (a bug, or a library raising something unexpected) counts as a
    permanent failure and is logged with its traceback, so one bad notifier cannot stop a dispatcher."""
    policy = policy or RetryPolicy()
    started = clock()
    last_error: str | None = None
    http_status: int | None = None
    for attempt in range(1, policy.max_attempts + 1):
        try:
            notifier.send(notification, target)
        except RetryableDeliveryError as exc:
            last_error, http_status = exc.message, exc.status if exc.status is not None else http_status
            if attempt == policy.max_attempts:
                break
            wait = policy.delay(attempt, exc.retry_after_s)
            log.info(
                "%s: %s attempt %d failed (%s); retrying in %.1fs",
                notifier.name, notification.dedupe_key, attempt, last_error, wait,
            )  # fmt: skip
            sleep(wait)
            continue
        except PermanentDeliveryError as exc:
            status: DeliveryStatus = "gone" if exc.gone else "failed"
            return DeliveryResult(status, attempt, exc.message, exc.status, clock() - started)
        except Exception as exc:
            text = notifier.redact(f"unexpected {type(exc).__name__}: {exc}")
            trace = notifier.redact("".join(traceback.format_exception(exc)))
            log.error("%s: error delivering %s: %s", notifier.name, notification.dedupe_key, trace.rstrip())
            return DeliveryResult("failed", attempt, text, http_status, clock() - started)
        else:
            return DeliveryResult("delivered", attempt, last_error, None, clock() - started)
    log.warning(
        "%s: giving up on %s after %d attempts: %s",
        notifier.name, notification.dedupe_key, policy.max_attempts, last_error,
    )  # fmt: skip
    return DeliveryResult("failed", policy.max_attempts, last_error, http_status, clock() - started, True)
