"""Typed errors of the Mixpanel GDPR API client.

Every error the client raises is a :class:`MixpanelError`. Messages hold the operation, the HTTP
status and Mixpanel's (sanitised) error text, never the OAuth token, an export link or a distinct
id; the client never chains an httpx exception (whose request carries the bearer header) onto
them, so ``__cause__`` and ``__context__`` are empty or another sanitised :class:`MixpanelError`.

What the reconciler does with each:

======================  ======  ==============================================================
error                   HTTP    meaning / what to do
======================  ======  ==============================================================
AuthenticationError     401/403 OAuth token missing, expired or not an owner/admin: fix Secret
InvalidRequestError     400 etc Mixpanel (or the client) refused the request as it is
NotFoundError           404     no such task (or project) at this host
NotCancellableError     405     the deletion has started (or finished): no cancel any more
ConflictError           409     ids already in a running deletion; see the attributes
RateLimitedError        429     over the budget (or the outstanding-scan limit); retry later
TransientError          5xx...  server or network trouble; nothing happened, retry later
DeadlineExceededError   (none)  the call's deadline passed before a request could be sent
AmbiguousCreateError    (none)  a create may or may not have produced a task: do not resend
======================  ======  ==============================================================

``retryable`` tells whether the same call may simply be made again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


def describe(operation: str, status_code: int | None, detail: str | None) -> str:
    """The message of an error: ``"<operation>: HTTP <status>: <detail>"`` (parts optional)."""
    parts = [operation]
    if status_code is not None:
        parts.append(f"HTTP {status_code}")
    if detail:
        parts.append(detail)
    return ": ".join(parts)


class MixpanelError(Exception):
    """Base of every error raised by the Mixpanel client.

    Attributes:
        operation: which client call failed (``create_deletion``, ``deletion_status``, ...).
        status_code: HTTP status of the response, or None when there was none.
        error_text: Mixpanel's error text, sanitised (secrets and ids redacted), or None.
        attempts: how many HTTP requests the call made before giving up.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        operation: str = "mixpanel",
        status_code: int | None = None,
        error_text: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.status_code = status_code
        self.error_text = error_text
        self.attempts = attempts

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class AuthenticationError(MixpanelError):
    """401/403: the OAuth token is missing, expired, revoked or lacks the rights."""


class InvalidRequestError(MixpanelError):
    """400 (and other 4xx without a more specific class): the request can never work as is.

    Also raised before sending when the client itself sees the request cannot work (no ids,
    more ids than the limit, a disclosure type on a GDPR request); ``status_code`` is then None.
    """


class NotFoundError(MixpanelError):
    """404: the task (or the project) is unknown to this host."""


class NotCancellableError(MixpanelError):
    """405 on a cancel: the deletion has started or ended and can no longer be cancelled.

    If the cancel was retried after a lost response, the first attempt may have been the one
    that cancelled it: check the task's status before concluding anything.
    """


class ConflictError(MixpanelError):
    """409: some ids already belong to a running deletion; Mixpanel rejected the whole request.

    ``conflicting_distinct_ids`` and ``conflicting_task_ids`` hold what Mixpanel named (empty
    when it named nothing). They are personal data / identifiers and are kept out of the message.
    """

    def __init__(
        self,
        message: str,
        *,
        conflicting_distinct_ids: Sequence[str] = (),
        conflicting_task_ids: Sequence[str] = (),
        operation: str = "mixpanel",
        status_code: int | None = 409,
        error_text: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(
            message,
            operation=operation,
            status_code=status_code,
            error_text=error_text,
            attempts=attempts,
        )
        self.conflicting_distinct_ids: tuple[str, ...] = tuple(conflicting_distinct_ids)
        self.conflicting_task_ids: tuple[str, ...] = tuple(conflicting_task_ids)


class TransientError(MixpanelError):
    """Server or network trouble (5xx, timeouts, resets, unreadable bodies): retry later.

    Raised for a create only when Mixpanel cannot have created a task (see
    :class:`AmbiguousCreateError` for the other case).
    """

    retryable: ClassVar[bool] = True


class RateLimitedError(TransientError):
    """429: over Mixpanel's rate limit, or too many outstanding retrieval scans.

    ``retry_after`` is the delay in seconds Mixpanel asked for (``Retry-After``), if any.
    A subclass of :class:`TransientError`: both mean "nothing happened, try again later".
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        operation: str = "mixpanel",
        status_code: int | None = 429,
        error_text: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(
            message,
            operation=operation,
            status_code=status_code,
            error_text=error_text,
            attempts=attempts,
        )
        self.retry_after = retry_after


class DeadlineExceededError(TransientError):
    """The call's deadline passed while waiting for the request budget: nothing was sent."""


class AmbiguousCreateError(MixpanelError):
    """A create request may have reached Mixpanel but its answer was lost.

    Raised, without retrying, when the request was (possibly) sent and then the read timed out,
    the connection dropped, a gateway answered 502/504, or a 2xx answer could not be read.
    A task may exist whose tracking id is unknown: the caller must not blindly resend (there is
    no endpoint to list tasks) but record the ambiguity and decide (wait, re-submit deliberately
    accepting a duplicate, or ask a person).

    ``reason`` names what happened (``"ReadTimeout"``, ``"HTTP 504"``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        operation: str = "mixpanel",
        status_code: int | None = None,
        error_text: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(
            message,
            operation=operation,
            status_code=status_code,
            error_text=error_text,
            attempts=attempts,
        )
        self.reason = reason
