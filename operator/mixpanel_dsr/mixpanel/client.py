"""Async client of Mixpanel's GDPR/CCPA API (v3.0): create, poll and cancel tasks.

Usage::

    client = MixpanelClient(project_token=tok, region=Region.EU, oauth_token=read_secret)
    task = await client.create_deletion(ids, ComplianceType.GDPR)
    status = await client.deletion_status(task.tracking_id)

Every request takes a slot of the project's :class:`RequestBudget` first (shared per project
token through :data:`default_registry`), retries follow :class:`RetryPolicy`, and failures are
raised as :mod:`.errors` types.

Retries and creates (no task may be created twice when it can be avoided):

- nothing was sent (connect error/timeout, pool timeout, the request could not be written
  completely): retried, for creates too;
- Mixpanel answered 429, 408, or a 5xx other than 502/504: retried, for creates too (it
  answered, so it did not create a task);
- the request was sent and the answer was lost (read timeout, connection dropped, 502/504 from
  a gateway, an unreadable 2xx body): status calls and cancels are retried (idempotent), a
  create raises :class:`AmbiguousCreateError` at once, without retrying; a call stops after
  ``RetryPolicy.max_timeouts`` read timeouts (each held the project's calls that long);
- anything else (4xx) is raised at once; but a 404 to a status call is the state NOT_FOUND
  (the host does not know the tracking id), as when it is said in a 200 body.

Secrets: the OAuth token is sent only in the ``Authorization`` header, is read per attempt
(a callable source lets a rotated Secret apply without restart), and is redacted, with the
project token and the request's distinct ids, from any text that goes into an error. httpx
exceptions are never chained onto the errors raised here (their request holds the header).
Log lines (logger ``mixpanel_dsr.mixpanel.client``) carry counts, never ids or links.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from .. import __version__
from .budget import BudgetDeadlineError, Clock, RequestBudget, Sleep, default_registry
from .errors import (
    AmbiguousCreateError,
    AuthenticationError,
    ConflictError,
    DeadlineExceededError,
    InvalidRequestError,
    MixpanelError,
    NotCancellableError,
    NotFoundError,
    RateLimitedError,
    TransientError,
    describe,
)
from .redaction import sanitize_text
from .responses import (
    CreatedTask,
    ErrorEnvelopeError,
    ResponseShapeError,
    TaskKind,
    TaskStatus,
    parse_create,
    parse_error,
    parse_json,
    parse_status,
)
from .retry import RetryPolicy, parse_retry_after
from .types import (
    MAX_IDS_PER_REQUEST,
    REGION_BASE_URLS,
    ComplianceType,
    DisclosureType,
    Region,
    StatusCallbacks,
    TaskState,
)

logger = logging.getLogger("mixpanel_dsr.mixpanel.client")

#: The OAuth token, or a (sync or async) callable returning the current one.
OAuthTokenSource = str | Callable[[], str | Awaitable[str]]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

_PATHS: dict[TaskKind, str] = {
    "deletion": "/data-deletions/v3.0/",
    "retrieval": "/data-retrievals/v3.0/",
}

# Failures after which the request cannot have reached Mixpanel completely.
_NOT_SENT: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.LocalProtocolError,
    httpx.UnsupportedProtocol,
)

_Op = Literal[
    "create_deletion",
    "create_retrieval",
    "deletion_status",
    "retrieval_status",
    "cancel_deletion",
]

T = TypeVar("T")


@dataclass(frozen=True)
class _NetworkFailure:
    """An httpx exception reduced to what may be said about it (no request, no URL)."""

    name: str
    sent: bool
    #: Sent, and no answer came within the read timeout.
    timed_out: bool = False


class MixpanelClient:
    """Client of one Mixpanel project's GDPR API (one project token, one region).

    Args:
        project_token: the project's token (sent as ``?token=``; public, but never logged).
        oauth_token: the GDPR OAuth token, or a sync/async callable returning the current one
            (called before every request, so a rotated Secret applies without restart).
            Surrounding whitespace is stripped (Secrets created from files end in a newline).
        region: the project's data residency region; picks the host.
        base_url: explicit API base (``.../api/app``) for this project, e.g. a proxy; wins over
            the region.
        region_base_urls: operator-level replacement of :data:`REGION_BASE_URLS` (sandbox,
            egress proxy). When given it must name the project's region: a missing region is an
            error rather than a silent fall-back to the real host.
        budget: the request budget; default: the process-wide one for this project token.
        budget_interval: the project's configured interval, applied to the default budget.
        retry: the retry policy (default :class:`RetryPolicy`).
        http: a shared ``httpx.AsyncClient`` (connection pool); when None the client makes its
            own and closes it in :meth:`aclose`.
        timeout: per-request HTTP timeout (seconds or ``httpx.Timeout``).
        max_ids_per_request: the project's id limit; larger creates are refused before sending.
        clock, sleep, rng: injectable for tests (monotonic clock, async sleep, jitter source).
    """

    def __init__(
        self,
        *,
        project_token: str,
        oauth_token: OAuthTokenSource,
        region: Region | str = Region.US,
        base_url: str | None = None,
        region_base_urls: Mapping[Region, str] | None = None,
        budget: RequestBudget | None = None,
        budget_interval: float | None = None,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_ids_per_request: int = MAX_IDS_PER_REQUEST,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not project_token or not project_token.strip():
            raise ValueError("project_token is empty")
        if max_ids_per_request < 1:
            raise ValueError("max_ids_per_request must be >= 1")
        self._project_token = project_token.strip()
        self._oauth_token = oauth_token
        self._region = region if isinstance(region, Region) else Region(region.strip().upper())
        if base_url is None:
            table = REGION_BASE_URLS if region_base_urls is None else region_base_urls
            if self._region not in table:
                raise ValueError(f"no base URL configured for region {self._region.value}")
            base_url = table[self._region]
        self._base_url = base_url.rstrip("/")
        parsed = httpx.URL(self._base_url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("base URL must be an absolute http(s) URL")
        self._budget = (
            budget
            if budget is not None
            else default_registry.get(self._project_token, budget_interval)
        )
        self._retry = retry or RetryPolicy()
        self._timeout: httpx.Timeout = (
            DEFAULT_TIMEOUT
            if timeout is None
            else timeout
            if isinstance(timeout, httpx.Timeout)
            else httpx.Timeout(timeout)
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=self._timeout)
        self.max_ids_per_request = max_ids_per_request
        self._clock = clock
        self._sleep = sleep
        self._rng = rng

    # -- lifecycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it (a shared one is left open)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> MixpanelClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"MixpanelClient(region={self._region.value}, base_url={self._base_url!r})"

    @property
    def region(self) -> Region:
        return self._region

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def budget(self) -> RequestBudget:
        return self._budget

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    # -- public API ------------------------------------------------------------------------

    async def create_deletion(
        self,
        distinct_ids: Sequence[str],
        compliance_type: ComplianceType | str = ComplianceType.GDPR,
        *,
        callbacks: StatusCallbacks | None = None,
    ) -> CreatedTask:
        """Create a deletion task for ``distinct_ids``; returns its tracking id.

        Raises :class:`AmbiguousCreateError` (not retried) when the outcome is unknown.
        """
        ct = _compliance(compliance_type)
        ids = self._check_ids("create_deletion", distinct_ids)
        body: dict[str, Any] = {"distinct_ids": ids, "compliance_type": ct.value}
        _with_callbacks(body, callbacks)
        return await self._create("create_deletion", "deletion", body, ids)

    async def create_retrieval(
        self,
        distinct_ids: Sequence[str],
        compliance_type: ComplianceType | str = ComplianceType.GDPR,
        disclosure_type: DisclosureType | str | None = None,
        *,
        callbacks: StatusCallbacks | None = None,
    ) -> CreatedTask:
        """Create a retrieval (export) task; ``disclosure_type`` only for CCPA (default Data)."""
        ct = _compliance(compliance_type)
        ids = self._check_ids("create_retrieval", distinct_ids)
        body: dict[str, Any] = {"distinct_ids": ids, "compliance_type": ct.value}
        _with_callbacks(body, callbacks)
        if disclosure_type is not None:
            if ct is not ComplianceType.CCPA:
                raise InvalidRequestError(
                    "create_retrieval: disclosure_type is only valid for CCPA retrievals",
                    operation="create_retrieval",
                )
            try:
                body["disclosure_type"] = DisclosureType(disclosure_type).value
            except ValueError:
                raise InvalidRequestError(
                    "create_retrieval: unknown disclosure_type", operation="create_retrieval"
                ) from None
        return await self._create("create_retrieval", "retrieval", body, ids)

    async def deletion_status(self, tracking_id: str) -> TaskStatus:
        """The status of a deletion task."""
        return await self._status("deletion_status", "deletion", tracking_id)

    async def retrieval_status(self, tracking_id: str) -> TaskStatus:
        """The status of a retrieval task (``result_link`` once it succeeded)."""
        return await self._status("retrieval_status", "retrieval", tracking_id)

    async def cancel_deletion(self, tracking_id: str) -> None:
        """Cancel a deletion that has not started; :class:`NotCancellableError` on 405."""
        path = _PATHS["deletion"] + _quote_id(tracking_id)

        def ok(response: httpx.Response) -> None:
            return None

        await self._call("cancel_deletion", "DELETE", path, None, (), ok)
        logger.info("mixpanel cancel_deletion: task %s cancelled", tracking_id)

    async def verify_credentials(self) -> None:
        """Check that the OAuth token is accepted for this project, creating nothing.

        Asks for the status of a tracking id that does not exist: a 404 or any readable answer
        means the token was accepted; :class:`AuthenticationError` means it was not. Uses one
        slot of the budget.
        """
        try:
            await self._status("deletion_status", "deletion", "0")
        except InvalidRequestError:
            # Mixpanel may reject the made-up id itself; it got past authentication.
            return

    # -- internals -------------------------------------------------------------------------

    def _check_ids(self, op: str, distinct_ids: Sequence[str]) -> list[str]:
        if isinstance(distinct_ids, str | bytes):
            raise TypeError("distinct_ids must be a sequence of strings, not a string")
        ids = list(distinct_ids)
        if not ids:
            raise InvalidRequestError(f"{op}: no distinct ids", operation=op)
        if any(not isinstance(i, str) or not i for i in ids):
            raise InvalidRequestError(
                f"{op}: every distinct id must be a non-empty string", operation=op
            )
        if len(ids) > self.max_ids_per_request:
            raise InvalidRequestError(
                f"{op}: {len(ids)} distinct ids, more than the limit of "
                f"{self.max_ids_per_request} per request",
                operation=op,
            )
        return ids

    async def _create(
        self, op: _Op, kind: TaskKind, body: dict[str, Any], ids: list[str]
    ) -> CreatedTask:
        def parse(response: httpx.Response) -> CreatedTask:
            return parse_create(parse_json(response.content), kind)

        task = await self._call(op, "POST", _PATHS[kind], body, ids, parse, create=True)
        logger.info(
            "mixpanel %s: task %s created for %d distinct id(s)", op, task.tracking_id, len(ids)
        )
        return task

    async def _status(self, op: _Op, kind: TaskKind, tracking_id: str) -> TaskStatus:
        def parse(response: httpx.Response) -> TaskStatus:
            return parse_status(parse_json(response.content))

        path = _PATHS[kind] + _quote_id(tracking_id)
        try:
            status = await self._call(op, "GET", path, None, (), parse)
        except NotFoundError:
            # The fact sheet lists NOT_FOUND as a state; some answers carry it as HTTP 404.
            # Either way the host does not know the tracking id: the same state, so that a
            # vanished task ends instead of being asked about forever.
            logger.info(
                "mixpanel %s: task %s answered HTTP 404: read as NOT_FOUND", op, tracking_id
            )
            return TaskStatus(
                state=TaskState.NOT_FOUND, raw_state="NOT_FOUND", tracking_id=tracking_id.strip()
            )
        logger.debug("mixpanel %s: task %s is %s", op, tracking_id, status.state.value)
        return status

    async def _bearer(self, op: str) -> str:
        """The current OAuth token (exceptions of a callable source propagate unchanged)."""
        source = self._oauth_token
        token: Any = source() if callable(source) else source
        if inspect.isawaitable(token):
            token = await token
        if not isinstance(token, str) or not token.strip():
            raise AuthenticationError(f"{op}: no GDPR OAuth token available", operation=op)
        bearer: str = token.strip()
        if not bearer.isascii() or not bearer.isprintable():
            raise AuthenticationError(
                f"{op}: the GDPR OAuth token holds characters not allowed in a header",
                operation=op,
            )
        return bearer

    async def _call(
        self,
        op: _Op,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        ids: Sequence[str],
        parse: Callable[[httpx.Response], T],
        *,
        create: bool = False,
    ) -> T:
        """Send one logical call with budget, retries and error mapping."""
        policy = self._retry
        start = self._clock()
        deadline = None if policy.deadline is None else start + policy.deadline
        attempt = 0
        timeouts = 0
        last: MixpanelError | None = None
        while True:
            wait: float | None
            try:
                await self._budget.acquire(None if deadline is None else deadline - self._clock())
            except BudgetDeadlineError as exc:
                wait = exc.wait
            else:
                wait = None
            if wait is not None:
                if last is not None:
                    raise _gave_up(last, attempt, "deadline reached")
                raise DeadlineExceededError(
                    f"{op}: deadline of {policy.deadline}s reached waiting {wait:.1f}s for the "
                    "request budget; nothing was sent",
                    operation=op,
                )
            attempt += 1
            bearer = await self._bearer(op)
            outcome = await self._send(method, path, body, bearer)
            secrets = (bearer, self._project_token, *ids)
            if isinstance(outcome, _NetworkFailure):
                error = self._network_error(op, outcome, create, attempt)
                timeouts += outcome.timed_out
            elif 200 <= outcome.status_code < 300:
                result = self._parse_ok(op, outcome, parse, create, attempt)
                if not isinstance(result, MixpanelError):
                    if attempt > 1:
                        logger.info("mixpanel %s: succeeded on attempt %d", op, attempt)
                    return result
                error = result
            else:
                error = self._http_error(op, outcome, create, secrets, attempt)
            error.attempts = attempt
            if not error.retryable:
                if isinstance(error, AmbiguousCreateError):
                    logger.error(
                        "mixpanel %s: outcome unknown (%s) for %d distinct id(s); not retried",
                        op,
                        error.reason,
                        len(ids),
                    )
                raise error
            last = error
            if isinstance(error, RateLimitedError):
                # Every 429 slows the whole project down, whether or not this call retries.
                delay = policy.delay_after_rate_limit(attempt, error.retry_after, self._rng)
                self._budget.penalize(min(delay, policy.max_retry_after))
                if attempt < policy.max_attempts and delay > policy.max_retry_after:
                    raise _gave_up(error, attempt, "Retry-After beyond max_retry_after")
            else:
                delay = policy.backoff(attempt, self._rng)
            if attempt >= policy.max_attempts:
                raise _gave_up(error, attempt, "max attempts reached")
            if timeouts >= policy.max_timeouts:
                # Each one held the project's calls for the whole read timeout; the caller
                # asks again at its own pace.
                raise _gave_up(error, attempt, f"{timeouts} answers timed out")
            if deadline is not None and self._clock() + delay > deadline:
                raise _gave_up(error, attempt, "deadline reached")
            logger.warning(
                "mixpanel %s: attempt %d failed (%s); retrying in %.2fs",
                op,
                attempt,
                _short(error),
                delay,
            )
            await self._sleep(delay)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None, bearer: str
    ) -> httpx.Response | _NetworkFailure:
        headers = {
            "Authorization": f"Bearer {bearer}",
            "Accept": "application/json",
            "User-Agent": f"mixpanel-dsr-operator/{__version__}",
        }
        failure: _NetworkFailure | None = None
        try:
            return await self._http.request(
                method,
                self._base_url + path,
                params={"token": self._project_token},
                json=body,
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:  # TransportError, and anything else httpx raises
            failure = _NetworkFailure(
                name=type(exc).__name__,
                sent=not isinstance(exc, _NOT_SENT),
                timed_out=isinstance(exc, httpx.ReadTimeout),
            )
        # Returned outside the except block: no httpx exception is left as __context__.
        return failure

    def _network_error(
        self, op: _Op, failure: _NetworkFailure, create: bool, attempt: int
    ) -> MixpanelError:
        if create and failure.sent:
            return AmbiguousCreateError(
                f"{op}: {failure.name} after the request was sent; a task may have been "
                "created (not retried)",
                reason=failure.name,
                operation=op,
                attempts=attempt,
            )
        where = "after sending" if failure.sent else "before the request was sent"
        return TransientError(f"{op}: {failure.name} {where}", operation=op, attempts=attempt)

    def _parse_ok(
        self,
        op: _Op,
        response: httpx.Response,
        parse: Callable[[httpx.Response], T],
        create: bool,
        attempt: int,
    ) -> T | MixpanelError:
        status = response.status_code
        refused = False
        try:
            return parse(response)
        except ErrorEnvelopeError:
            refused = True
        except ResponseShapeError:
            pass
        # Not chained: the parse errors are generic, but keep __context__ empty anyway.
        if refused:
            return TransientError(
                describe(op, status, "Mixpanel answered with an error envelope"),
                operation=op,
                status_code=status,
                attempts=attempt,
            )
        if create:
            return AmbiguousCreateError(
                describe(op, status, "unreadable create response; a task may have been created"),
                reason=f"unreadable HTTP {status}",
                operation=op,
                status_code=status,
                attempts=attempt,
            )
        return TransientError(
            describe(op, status, "unreadable response body"),
            operation=op,
            status_code=status,
            attempts=attempt,
        )

    def _http_error(
        self,
        op: _Op,
        response: httpx.Response,
        create: bool,
        secrets: Sequence[str],
        attempt: int,
    ) -> MixpanelError:
        status = response.status_code
        parsed = parse_error(response.content)
        text = sanitize_text(parsed.text, secrets) if parsed.text else None
        detail = text or response.reason_phrase or None
        msg = describe(op, status, detail)
        kw: dict[str, Any] = {
            "operation": op,
            "status_code": status,
            "error_text": text,
            "attempts": attempt,
        }
        if status in (401, 403):
            return AuthenticationError(msg, **kw)
        if status == 404:
            return NotFoundError(msg, **kw)
        if status == 405 and op == "cancel_deletion":
            return NotCancellableError(msg, **kw)
        if status == 408:
            return TransientError(msg, **kw)
        if status == 409:
            n_ids = len(parsed.conflicting_distinct_ids)
            n_tasks = len(parsed.conflicting_task_ids)
            detail = f"{n_ids} distinct id(s) already in {n_tasks} running task(s)"
            if text:
                detail += f" ({text})"
            return ConflictError(
                describe(op, status, detail),
                conflicting_distinct_ids=parsed.conflicting_distinct_ids,
                conflicting_task_ids=parsed.conflicting_task_ids,
                **kw,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return RateLimitedError(msg, retry_after=retry_after, **kw)
        if 400 <= status < 500:
            return InvalidRequestError(msg, **kw)
        if status >= 500:
            if create and status in self._retry.ambiguous_create_statuses:
                return AmbiguousCreateError(
                    describe(
                        op,
                        status,
                        f"{detail or 'gateway error'}; a task may have been created (not retried)",
                    ),
                    reason=f"HTTP {status}",
                    **kw,
                )
            return TransientError(msg, **kw)
        return InvalidRequestError(
            describe(op, status, "unexpected response (check the base URL)"), **kw
        )


def _with_callbacks(body: dict[str, Any], callbacks: StatusCallbacks | None) -> None:
    if callbacks is not None:
        body["subject_request_id"] = callbacks.subject_request_id
        body["status_callback_urls"] = list(callbacks.urls)


def _compliance(value: ComplianceType | str) -> ComplianceType:
    try:
        return ComplianceType(value.upper() if isinstance(value, str) else value)
    except ValueError:
        raise InvalidRequestError("unknown compliance_type") from None


def _quote_id(tracking_id: str) -> str:
    tracking_id = str(tracking_id).strip()
    if not tracking_id:
        raise ValueError("tracking_id is empty")
    return urllib.parse.quote(tracking_id, safe="")


def _short(error: MixpanelError) -> str:
    if isinstance(error, AmbiguousCreateError):
        return error.reason
    kind = type(error).__name__
    return f"{kind}, HTTP {error.status_code}" if error.status_code is not None else kind


def _gave_up(error: MixpanelError, attempts: int, why: str) -> MixpanelError:
    error.attempts = attempts
    error.args = (f"{error.message} (gave up after {attempts} attempt(s): {why})",)
    logger.warning(
        "mixpanel %s: giving up after %d attempt(s): %s (%s)",
        error.operation,
        attempts,
        why,
        _short(error),
    )
    return error
