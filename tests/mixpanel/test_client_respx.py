"""MixpanelClient against respx: every request shape, response shape, error and retry path."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from mixpanel_dsr.mixpanel import (
    AmbiguousCreateError,
    AuthenticationError,
    ComplianceType,
    ConflictError,
    DeadlineExceededError,
    DisclosureType,
    InvalidRequestError,
    MixpanelClient,
    MixpanelError,
    NotCancellableError,
    NotFoundError,
    RateLimitedError,
    Region,
    RequestBudget,
    RetryPolicy,
    TaskState,
    TransientError,
    default_registry,
)
from tests.mixpanel.fakes import VirtualTime

PROJECT_TOKEN = "proj-token-0123456789abcdef"
BEARER = "oauth-SECRET-bearer-9f8e7d6c5b4a"
IDS = ["alice@example.com", "user-bob-42"]
US = "https://mixpanel.com/api/app"
DEL = f"{US}/data-deletions/v3.0/"
RET = f"{US}/data-retrievals/v3.0/"
LINK = "https://storage.example.com/export-abc.zip?X-Goog-Signature=deadbeef"


@pytest.fixture
def fake_time() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def budget(fake_time: VirtualTime) -> RequestBudget:
    return RequestBudget(0, clock=fake_time, sleep=fake_time.sleep)


@pytest.fixture
def make_client(fake_time: VirtualTime, budget: RequestBudget) -> Callable[..., MixpanelClient]:

    def make(**kwargs: Any) -> MixpanelClient:
        kwargs.setdefault("project_token", PROJECT_TOKEN)
        kwargs.setdefault("oauth_token", BEARER)
        kwargs.setdefault("budget", budget)
        kwargs.setdefault(
            "retry", RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=4.0, deadline=60.0)
        )
        kwargs.setdefault("clock", fake_time)
        kwargs.setdefault("sleep", fake_time.sleep)
        return MixpanelClient(**kwargs)

    return make


@pytest.fixture
async def client(make_client: Callable[..., MixpanelClient]) -> AsyncIterator[MixpanelClient]:
    c = make_client()
    yield c
    await c.aclose()


def created(task_id: object = "task-1", status: int = 201) -> httpx.Response:
    return httpx.Response(status, json={"status": "ok", "results": {"task_id": task_id}})


def error(status: int, text: object = "nope", **kw: Any) -> httpx.Response:
    return httpx.Response(status, json={"status": "error", "error": text}, **kw)


def assert_clean(exc: BaseException) -> None:
    """No secret or id in the error, its repr, or anything chained onto it."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        assert not isinstance(e, httpx.HTTPError), "httpx exception chained"
        for text in (str(e), repr(e)):
            assert BEARER not in text
            assert PROJECT_TOKEN not in text
            assert LINK not in text
            for i in IDS:
                assert i not in text
        e = e.__cause__ or e.__context__


# -- request shape -----------------------------------------------------------------------


async def test_create_deletion_request_shape(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(DEL).mock(return_value=created("abc"))
    task = await client.create_deletion(IDS, ComplianceType.CCPA)
    assert task.tracking_id == "abc"
    assert task.kind == "deletion"
    req = route.calls.last.request
    assert req.url.params["token"] == PROJECT_TOKEN
    assert list(req.url.params.keys()) == ["token"]
    assert req.headers["authorization"] == f"Bearer {BEARER}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "application/json"
    assert req.headers["user-agent"].startswith("mixpanel-dsr-operator/")
    assert json.loads(req.content) == {"distinct_ids": IDS, "compliance_type": "CCPA"}


async def test_create_deletion_default_gdpr(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(DEL).mock(return_value=created())
    await client.create_deletion(IDS)
    assert json.loads(route.calls.last.request.content)["compliance_type"] == "GDPR"


async def test_create_list_shape_numeric_tracking_id(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    body = (
        b'{"status":"ok","results":[{"tracking_id":1700000000123456789,"status":"PENDING",'
        b'"compliance_type":"gdpr","distinct_id_count":2,"surprise":1}]}'
    )
    respx_mock.post(DEL).mock(return_value=httpx.Response(200, content=body))
    task = await client.create_deletion(IDS)
    assert task.tracking_id == "1700000000123456789"
    assert task.state is TaskState.PENDING
    assert task.compliance_type is ComplianceType.GDPR
    assert task.distinct_id_count == 2


async def test_create_retrieval_gdpr_has_no_disclosure_type(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(RET).mock(return_value=created(77))
    task = await client.create_retrieval(IDS)
    assert task.tracking_id == "77"
    assert task.kind == "retrieval"
    assert json.loads(route.calls.last.request.content) == {
        "distinct_ids": IDS,
        "compliance_type": "GDPR",
    }


async def test_create_retrieval_ccpa_disclosure(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(RET).mock(return_value=created())
    await client.create_retrieval(IDS, "ccpa", DisclosureType.CATEGORIES)
    assert json.loads(route.calls.last.request.content) == {
        "distinct_ids": IDS,
        "compliance_type": "CCPA",
        "disclosure_type": "Categories",
    }


async def test_disclosure_type_refused_for_gdpr_without_a_request(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(RET).mock(return_value=created())
    with pytest.raises(InvalidRequestError, match="CCPA"):
        await client.create_retrieval(IDS, ComplianceType.GDPR, DisclosureType.DATA)
    with pytest.raises(InvalidRequestError):
        await client.create_retrieval(IDS, ComplianceType.CCPA, "Everything")
    assert route.call_count == 0


async def test_client_side_id_checks(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(DEL).mock(return_value=created())
    c = make_client(max_ids_per_request=3)
    with pytest.raises(InvalidRequestError, match="no distinct ids"):
        await c.create_deletion([])
    with pytest.raises(InvalidRequestError, match="4 distinct ids, more than the limit of 3"):
        await c.create_deletion(["a", "b", "c", "d"])
    with pytest.raises(InvalidRequestError, match="non-empty"):
        await c.create_deletion(["a", ""])
    with pytest.raises(TypeError):
        await c.create_deletion("alice")
    with pytest.raises(InvalidRequestError, match="compliance_type"):
        await c.create_deletion(["a"], "HIPAA")
    assert route.call_count == 0


# -- region routing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "host"),
    [
        (Region.US, "mixpanel.com"),
        (Region.EU, "eu.mixpanel.com"),
        (Region.IN, "in.mixpanel.com"),
        ("eu", "eu.mixpanel.com"),
    ],
)
async def test_region_hosts(
    make_client: Callable[..., MixpanelClient],
    respx_mock: respx.MockRouter,
    region: Region | str,
    host: str,
) -> None:
    route = respx_mock.post(f"https://{host}/api/app/data-deletions/v3.0/").mock(
        return_value=created()
    )
    c = make_client(region=region)
    assert c.base_url == f"https://{host}/api/app"
    await c.create_deletion(IDS)
    assert route.call_count == 1


async def test_base_url_override_wins(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get("http://proxy.local:8080/mp/data-deletions/v3.0/t1").mock(
        return_value=httpx.Response(200, json={"status": "ok", "results": {"status": "PENDING"}})
    )
    c = make_client(
        region=Region.EU,
        base_url="http://proxy.local:8080/mp/",
        region_base_urls={Region.EU: "http://other"},
    )
    await c.deletion_status("t1")
    assert route.call_count == 1


async def test_region_base_urls_override(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post("http://127.0.0.1:9/eu/data-deletions/v3.0/").mock(
        return_value=created()
    )
    c = make_client(
        region=Region.EU,
        region_base_urls={Region.US: "http://127.0.0.1:9/us", Region.EU: "http://127.0.0.1:9/eu"},
    )
    await c.create_deletion(IDS)
    assert route.call_count == 1


def test_region_base_urls_missing_region_is_an_error() -> None:
    with pytest.raises(ValueError, match="IN"):
        MixpanelClient(
            project_token=PROJECT_TOKEN,
            oauth_token=BEARER,
            region=Region.IN,
            region_base_urls={Region.US: "http://127.0.0.1:9"},
            budget=RequestBudget(0),
        )


def test_repr_shows_no_tokens() -> None:
    c = MixpanelClient(project_token=PROJECT_TOKEN, oauth_token=BEARER, budget=RequestBudget(0))
    assert BEARER not in repr(c)
    assert PROJECT_TOKEN not in repr(c)


# -- status and cancel -------------------------------------------------------------------


async def test_deletion_status(client: MixpanelClient, respx_mock: respx.MockRouter) -> None:
    body = {
        "status": "ok",
        "results": {
            "status": "STAGING",
            "result": "",
            "distinct_ids": IDS,
            "tracking_id": 123,
            "requesting_user": "admin@example.com",
            "compliance_type": "gdpr",
            "project_id": 99,
            "date_requested": "2025-01-01",
        },
    }
    route = respx_mock.get(f"{DEL}123").mock(return_value=httpx.Response(200, json=body))
    status = await client.deletion_status("123")
    req = route.calls.last.request
    assert req.url.params["token"] == PROJECT_TOKEN
    assert req.headers["authorization"] == f"Bearer {BEARER}"
    assert status.state is TaskState.STAGING
    assert status.state.cancellable
    assert status.tracking_id == "123"
    assert status.distinct_id_count == 2
    assert status.compliance_type is ComplianceType.GDPR
    assert status.result_link is None


async def test_retrieval_status_link_hidden(
    client: MixpanelClient, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"status": "ok", "results": {"status": "SUCCESS", "result": LINK, "distinct_ids": IDS}}
    respx_mock.get(f"{RET}r-9").mock(return_value=httpx.Response(200, json=body))
    status = await client.retrieval_status("r-9")
    assert status.state is TaskState.SUCCESS
    assert status.result_link is not None
    assert status.result_link.get_secret_value() == LINK
    assert LINK not in repr(status)
    assert LINK not in str(status)
    for rec in caplog.records:
        assert LINK not in rec.getMessage()


async def test_unknown_state_is_unknown(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{DEL}t").mock(
        return_value=httpx.Response(200, json={"status": "ok", "results": {"status": "PAUSED"}})
    )
    status = await client.deletion_status("t")
    assert status.state is TaskState.UNKNOWN
    assert status.raw_state == "PAUSED"


async def test_tracking_id_is_path_quoted(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{DEL}a%2F..%2Fb").mock(
        return_value=httpx.Response(200, json={"results": {"status": "PENDING"}})
    )
    await client.deletion_status("a/../b")
    assert route.call_count == 1


async def test_cancel_deletion_204(client: MixpanelClient, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.delete(f"{DEL}t-5").mock(return_value=httpx.Response(204))
    await client.cancel_deletion("t-5")
    req = route.calls.last.request
    assert req.url.params["token"] == PROJECT_TOKEN
    assert req.headers["authorization"] == f"Bearer {BEARER}"


async def test_cancel_deletion_405(client: MixpanelClient, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.delete(f"{DEL}t-5").mock(return_value=error(405, "task already started"))
    with pytest.raises(NotCancellableError) as info:
        await client.cancel_deletion("t-5")
    assert info.value.status_code == 405
    assert "405" in str(info.value)
    assert "task already started" in str(info.value)
    assert route.call_count == 1


async def test_405_on_status_is_invalid_request(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{DEL}t").mock(return_value=error(405))
    with pytest.raises(InvalidRequestError):
        await client.deletion_status("t")


# -- error mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (413, InvalidRequestError),
        (422, InvalidRequestError),
        (302, InvalidRequestError),
    ],
)
async def test_error_mapping_not_retried(
    client: MixpanelClient,
    respx_mock: respx.MockRouter,
    status: int,
    exc_type: type[MixpanelError],
) -> None:
    route = respx_mock.post(DEL).mock(return_value=error(status, "Mixpanel says no"))
    with pytest.raises(exc_type) as info:
        await client.create_deletion(IDS)
    assert route.call_count == 1
    assert info.value.status_code == status
    assert f"HTTP {status}" in str(info.value)
    assert not info.value.retryable
    assert info.value.attempts == 1
    assert info.value.operation == "create_deletion"
    if status != 302:
        assert "Mixpanel says no" in str(info.value)
        assert info.value.error_text == "Mixpanel says no"
    assert_clean(info.value)


async def test_400_too_many_ids_text_is_sanitised(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    text = f"too many distinct_ids ({IDS[0]}, {IDS[1]}) for token {PROJECT_TOKEN} / {BEARER}"
    respx_mock.post(DEL).mock(return_value=error(400, text))
    with pytest.raises(InvalidRequestError) as info:
        await client.create_deletion(IDS)
    assert "too many distinct_ids" in str(info.value)
    assert "[redacted]" in str(info.value)
    assert_clean(info.value)
    assert info.value.error_text is not None
    assert BEARER not in info.value.error_text


async def test_401_non_json_body(client: MixpanelClient, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{DEL}t").mock(
        return_value=httpx.Response(401, text=f"<h1>Unauthorized</h1> Bearer {BEARER}")
    )
    with pytest.raises(AuthenticationError) as info:
        await client.deletion_status("t")
    assert "Unauthorized" in str(info.value)
    assert_clean(info.value)


async def test_409_conflict_attributes_not_in_message(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    body = {
        "status": "error",
        "error": {"conflicting_distinct_ids": [IDS[0]], "conflicting_task_ids": [4242, "t-77"]},
    }
    route = respx_mock.post(DEL).mock(return_value=httpx.Response(409, json=body))
    with pytest.raises(ConflictError) as info:
        await client.create_deletion(IDS)
    err = info.value
    assert route.call_count == 1
    assert err.conflicting_distinct_ids == (IDS[0],)
    assert err.conflicting_task_ids == ("4242", "t-77")
    assert "409" in str(err)
    assert "1 distinct id(s) already in 2 running task(s)" in str(err)
    assert "4242" not in str(err)
    assert "t-77" not in str(err)
    assert_clean(err)


async def test_409_without_details(client: MixpanelClient, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(DEL).mock(return_value=error(409, "already being deleted"))
    with pytest.raises(ConflictError) as info:
        await client.create_deletion(IDS)
    assert info.value.conflicting_distinct_ids == ()
    assert info.value.conflicting_task_ids == ()
    assert "already being deleted" in str(info.value)


# -- retries ---------------------------------------------------------------------------


class CountingBudget(RequestBudget):
    def __init__(self) -> None:
        super().__init__(0)
        self.acquired = 0

    async def acquire(self, max_wait: float | None = None) -> float:
        self.acquired += 1
        return await super().acquire(max_wait)


@pytest.mark.parametrize("status", [500, 503, 408])
async def test_create_retried_on_5xx_then_success(
    make_client: Callable[..., MixpanelClient],
    respx_mock: respx.MockRouter,
    fake_time: VirtualTime,
    status: int,
) -> None:
    budget = CountingBudget()
    c = make_client(budget=budget)
    route = respx_mock.post(DEL).mock(side_effect=[error(status), error(status), created("t-ok")])
    task = await c.create_deletion(IDS)
    assert task.tracking_id == "t-ok"
    assert route.call_count == 3
    assert budget.acquired == 3  # each retry goes through the budget
    assert len(fake_time.sleeps) == 2
    assert 0 <= fake_time.sleeps[0] <= 0.5
    assert 0 <= fake_time.sleeps[1] <= 1.0


async def test_status_retried_on_429_then_success_and_budget_slows(
    client: MixpanelClient,
    respx_mock: respx.MockRouter,
    fake_time: VirtualTime,
    budget: RequestBudget,
) -> None:
    ok = httpx.Response(200, json={"status": "ok", "results": {"status": "PENDING"}})
    route = respx_mock.get(f"{DEL}t").mock(side_effect=[error(429, "rate limited"), ok])
    status = await client.deletion_status("t")
    assert status.state is TaskState.PENDING
    assert route.call_count == 2
    # No Retry-After: at least the policy's rate_limit_delay, and the budget was paused too.
    assert fake_time.sleeps[0] >= RetryPolicy().rate_limit_delay
    assert budget.blocked_until == pytest.approx(fake_time.sleeps[0])


async def test_429_penalty_applies_to_other_clients_of_the_budget(
    make_client: Callable[..., MixpanelClient],
    respx_mock: respx.MockRouter,
    fake_time: VirtualTime,
    budget: RequestBudget,
) -> None:
    c1 = make_client(retry=RetryPolicy(max_attempts=1))
    respx_mock.get(f"{DEL}t").mock(return_value=error(429, headers={"Retry-After": "7"}))
    with pytest.raises(RateLimitedError) as info:
        await c1.deletion_status("t")
    assert info.value.retry_after == 7.0
    assert info.value.attempts == 1
    # Even without a retry of its own, the 429 paused the project's budget...
    assert budget.next_slot_in() == pytest.approx(7.0)
    # ... so another client of the same project waits it out before sending anything.
    c2 = make_client()
    route = respx_mock.get(f"{DEL}u").mock(
        return_value=httpx.Response(200, json={"results": {"status": "PENDING"}})
    )
    await c2.deletion_status("u")
    assert fake_time.sleeps == [pytest.approx(7.0)]
    assert route.call_count == 1


async def test_retry_after_seconds_honoured(
    client: MixpanelClient, respx_mock: respx.MockRouter, fake_time: VirtualTime
) -> None:
    respx_mock.post(DEL).mock(side_effect=[error(429, headers={"Retry-After": "12"}), created("t")])
    await client.create_deletion(IDS)
    assert fake_time.sleeps == [12.0]


async def test_retry_after_http_date_honoured(
    client: MixpanelClient, respx_mock: respx.MockRouter, fake_time: VirtualTime
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    respx_mock.post(DEL).mock(side_effect=[error(429, headers={"Retry-After": when}), created()])
    await client.create_deletion(IDS)
    assert len(fake_time.sleeps) == 1
    assert 17.0 <= fake_time.sleeps[0] <= 20.0


async def test_retry_after_beyond_max_gives_up_at_once(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter, fake_time: VirtualTime
) -> None:
    c = make_client(retry=RetryPolicy(max_retry_after=60, deadline=None))
    route = respx_mock.post(DEL).mock(return_value=error(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimitedError) as info:
        await c.create_deletion(IDS)
    assert route.call_count == 1
    assert info.value.retry_after == 3600.0
    assert info.value.retryable
    assert fake_time.sleeps == []


async def test_max_attempts_then_last_error(
    client: MixpanelClient, respx_mock: respx.MockRouter, fake_time: VirtualTime
) -> None:
    route = respx_mock.get(f"{DEL}t").mock(return_value=error(503, "busy"))
    with pytest.raises(TransientError) as info:
        await client.deletion_status("t")
    assert route.call_count == 4
    assert info.value.attempts == 4
    assert info.value.status_code == 503
    assert "gave up after 4 attempt(s)" in str(info.value)
    assert len(fake_time.sleeps) == 3


async def test_deadline_exceeded_stops_retrying(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter, fake_time: VirtualTime
) -> None:
    c = make_client(
        retry=RetryPolicy(max_attempts=100, base_delay=10.0, max_delay=10.0, deadline=25.0),
        rng=random.Random(3),  # noqa: S311
    )
    route = respx_mock.get(f"{DEL}t").mock(return_value=error(502))
    with pytest.raises(TransientError) as info:
        await c.deletion_status("t")
    assert "deadline reached" in str(info.value)
    assert sum(fake_time.sleeps) <= 25.0
    assert route.call_count == len(fake_time.sleeps) + 1
    assert route.call_count < 100


async def test_deadline_exceeded_waiting_for_budget_sends_nothing(
    make_client: Callable[..., MixpanelClient],
    respx_mock: respx.MockRouter,
    budget: RequestBudget,
) -> None:
    c = make_client(retry=RetryPolicy(deadline=5.0))
    route = respx_mock.post(DEL).mock(return_value=created())
    budget.penalize(100)
    with pytest.raises(DeadlineExceededError) as info:
        await c.create_deletion(IDS)
    assert route.call_count == 0
    assert info.value.retryable
    assert "nothing was sent" in str(info.value)


async def test_connect_error_on_create_is_retried(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(DEL).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), created("c")]
    )
    task = await client.create_deletion(IDS)
    assert task.tracking_id == "c"
    assert route.call_count == 3


async def test_write_error_on_create_is_retried(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(DEL).mock(side_effect=[httpx.WriteError("broken pipe"), created("w")])
    assert (await client.create_deletion(IDS)).tracking_id == "w"
    assert route.call_count == 2


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ReadError("connection reset"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
)
async def test_ambiguous_create_on_lost_answer_not_retried(
    client: MixpanelClient,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    exc: Exception,
) -> None:
    caplog.set_level(logging.DEBUG)
    route = respx_mock.post(DEL).mock(side_effect=[exc, created()])
    with pytest.raises(AmbiguousCreateError) as info:
        await client.create_deletion(IDS)
    assert route.call_count == 1
    err = info.value
    assert err.reason == type(exc).__name__
    assert not err.retryable
    assert err.attempts == 1
    assert err.__cause__ is None
    assert err.__context__ is None
    assert_clean(err)
    assert any("outcome unknown" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [502, 504])
async def test_ambiguous_create_on_gateway_error(
    client: MixpanelClient, respx_mock: respx.MockRouter, status: int
) -> None:
    route = respx_mock.post(RET).mock(side_effect=[error(status, "upstream timeout"), created()])
    with pytest.raises(AmbiguousCreateError) as info:
        await client.create_retrieval(IDS)
    assert route.call_count == 1
    assert info.value.status_code == status
    assert info.value.reason == f"HTTP {status}"
    assert f"HTTP {status}" in str(info.value)


async def test_gateway_error_on_status_is_retried(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    ok = httpx.Response(200, json={"results": {"status": "STARTED"}})
    route = respx_mock.get(f"{DEL}t").mock(side_effect=[error(504), httpx.ReadTimeout("x"), ok])
    assert (await client.deletion_status("t")).state is TaskState.STARTED
    assert route.call_count == 3


async def test_ambiguous_statuses_configurable(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    c = make_client(retry=RetryPolicy(ambiguous_create_statuses=frozenset()))
    route = respx_mock.post(DEL).mock(side_effect=[error(504), created("x")])
    assert (await c.create_deletion(IDS)).tracking_id == "x"
    assert route.call_count == 2


async def test_unreadable_create_answer_is_ambiguous(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(DEL).mock(
        side_effect=[httpx.Response(201, text="<html>oops</html>"), created()]
    )
    with pytest.raises(AmbiguousCreateError) as info:
        await client.create_deletion(IDS)
    assert route.call_count == 1
    assert info.value.status_code == 201


async def test_error_envelope_on_create_is_retried(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(DEL).mock(
        side_effect=[httpx.Response(200, json={"status": "error", "error": "x"}), created("e")]
    )
    assert (await client.create_deletion(IDS)).tracking_id == "e"
    assert route.call_count == 2


async def test_unreadable_status_answer_is_retried(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{DEL}t").mock(
        side_effect=[
            httpx.Response(200, text="not json"),
            httpx.Response(200, json={"status": "ok", "results": {}}),
            httpx.Response(200, json={"results": {"status": "SUCCESS"}}),
        ]
    )
    assert (await client.deletion_status("t")).state is TaskState.SUCCESS
    assert route.call_count == 3


async def test_unreadable_status_gives_transient_error(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{DEL}t").mock(return_value=httpx.Response(200, text="nope"))
    with pytest.raises(TransientError, match="unreadable"):
        await client.deletion_status("t")


async def test_cancel_retried_after_lost_answer(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.delete(f"{DEL}t").mock(
        side_effect=[httpx.ReadTimeout("x"), httpx.Response(204)]
    )
    await client.cancel_deletion("t")
    assert route.call_count == 2


# -- OAuth token source ------------------------------------------------------------------


async def test_async_token_source_rotation(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    tokens = iter(["first-token\n", "second-token"])

    async def current() -> str:
        return next(tokens)

    c = make_client(oauth_token=current)
    route = respx_mock.get(f"{DEL}t").mock(
        return_value=httpx.Response(200, json={"results": {"status": "PENDING"}})
    )
    await c.deletion_status("t")
    await c.deletion_status("t")
    auths = [call.request.headers["authorization"] for call in route.calls]
    assert auths == ["Bearer first-token", "Bearer second-token"]


async def test_sync_token_source_and_rotation_between_retries(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    tokens = iter(["old", "new"])
    c = make_client(oauth_token=lambda: next(tokens))
    route = respx_mock.get(f"{DEL}t").mock(
        side_effect=[error(503), httpx.Response(200, json={"results": {"status": "PENDING"}})]
    )
    await c.deletion_status("t")
    assert [call.request.headers["authorization"] for call in route.calls] == [
        "Bearer old",
        "Bearer new",
    ]


async def test_empty_token_raises_authentication_error_without_request(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{DEL}t").mock(return_value=httpx.Response(200))
    c = make_client(oauth_token=" \n")
    with pytest.raises(AuthenticationError, match="no GDPR OAuth token"):
        await c.deletion_status("t")
    assert route.call_count == 0


# -- verify_credentials ------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"status": "error", "error": "not found"}),
        httpx.Response(400, json={"status": "error", "error": "bad id"}),
        httpx.Response(200, json={"status": "ok", "results": {"status": "NOT_FOUND"}}),
    ],
)
async def test_verify_credentials_accepted(
    client: MixpanelClient, respx_mock: respx.MockRouter, response: httpx.Response
) -> None:
    route = respx_mock.get(url__startswith=DEL).mock(return_value=response)
    await client.verify_credentials()
    assert route.call_count == 1


async def test_verify_credentials_rejected(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(url__startswith=DEL).mock(return_value=error(401, "Invalid token"))
    with pytest.raises(AuthenticationError):
        await client.verify_credentials()


# -- budget wiring ---------------------------------------------------------------------


def test_default_budget_shared_per_project_token() -> None:
    default_registry.clear()
    try:
        a = MixpanelClient(project_token="tok-A", oauth_token=BEARER)
        b = MixpanelClient(project_token="tok-A", oauth_token="other", region=Region.EU)
        c = MixpanelClient(project_token="tok-B", oauth_token=BEARER)
        d = MixpanelClient(project_token="tok-A", oauth_token=BEARER, budget_interval=2.5)
        assert a.budget is b.budget is d.budget
        assert a.budget is not c.budget
        assert a.budget.interval == 2.5
        assert c.budget.interval == 1.1
    finally:
        default_registry.clear()


async def test_real_budget_spaces_calls(respx_mock: respx.MockRouter) -> None:
    import time

    budget = RequestBudget(0.05)
    c = MixpanelClient(project_token=PROJECT_TOKEN, oauth_token=BEARER, budget=budget)
    route = respx_mock.get(url__startswith=DEL).mock(
        return_value=httpx.Response(200, json={"results": {"status": "PENDING"}})
    )
    start = time.monotonic()
    for i in range(4):
        await c.deletion_status(str(i))
    assert time.monotonic() - start >= 3 * 0.05 * 0.9
    assert route.call_count == 4
    await c.aclose()


# -- HTTP client ownership -----------------------------------------------------------------


async def test_shared_http_client_is_not_closed(respx_mock: respx.MockRouter) -> None:
    respx_mock.post(DEL).mock(return_value=created())
    async with httpx.AsyncClient() as http:
        async with MixpanelClient(
            project_token=PROJECT_TOKEN, oauth_token=BEARER, http=http, budget=RequestBudget(0)
        ) as c:
            await c.create_deletion(IDS)
        assert not http.is_closed


async def test_own_http_client_closed() -> None:
    c = MixpanelClient(project_token=PROJECT_TOKEN, oauth_token=BEARER, budget=RequestBudget(0))
    await c.aclose()
    assert c._http.is_closed


# -- secrets never leak ------------------------------------------------------------------


async def test_no_secret_in_any_log_record_or_exception(
    make_client: Callable[..., MixpanelClient],
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    c = make_client()
    leaky = f"bad ids {IDS[0]} {IDS[1]} with Bearer {BEARER}"
    errors: list[BaseException] = []
    scenarios: list[tuple[str, Any]] = [
        ("post", [error(503, leaky), error(400, leaky)]),
        ("post", [httpx.ReadTimeout(f"read timeout {BEARER}")]),
        ("post", [httpx.Response(409, json={"error": {"conflicting_distinct_ids": IDS}})]),
        ("post", [error(429, leaky, headers={"Retry-After": "1"}), error(401, leaky)]),
        ("post", [error(504, leaky)]),
        ("post", [httpx.Response(201, text=leaky)]),
    ]
    for _, effects in scenarios:
        respx_mock.post(DEL).mock(side_effect=effects)
        try:
            await c.create_deletion(IDS)
        except MixpanelError as exc:
            errors.append(exc)
    body = {"status": "ok", "results": {"status": "SUCCESS", "result": LINK, "distinct_ids": IDS}}
    respx_mock.get(f"{RET}t").mock(return_value=httpx.Response(200, json=body))
    await c.retrieval_status("t")
    # A cancel does not know the task's ids: only the tokens can be redacted from its text.
    respx_mock.delete(f"{DEL}t").mock(
        side_effect=[httpx.ReadTimeout(BEARER), error(405, f"{PROJECT_TOKEN} Bearer {BEARER}")]
    )
    try:
        await c.cancel_deletion("t")
    except MixpanelError as exc:
        errors.append(exc)

    assert len(errors) == 7
    for err in errors:
        assert_clean(err)
    assert caplog.records
    for rec in caplog.records:
        msg = rec.getMessage()
        assert BEARER not in msg
        assert LINK not in msg
        for i in IDS:
            assert i not in msg
        if rec.name.startswith("mixpanel_dsr."):
            assert PROJECT_TOKEN not in msg
        assert (
            rec.exc_info is None
            or rec.exc_info[1] is None
            or not isinstance(rec.exc_info[1], httpx.HTTPError)
        )
    assert any(r.name == "mixpanel_dsr.mixpanel.client" for r in caplog.records)


async def test_token_with_header_breaking_characters_is_refused(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{DEL}t").mock(return_value=httpx.Response(200))
    c = make_client(oauth_token="abc\r\nX-Evil: 1")
    with pytest.raises(AuthenticationError, match="not allowed") as info:
        await c.deletion_status("t")
    assert "X-Evil" not in str(info.value)
    assert route.call_count == 0


@pytest.mark.parametrize("url", ["mixpanel.com/api/app", "ftp://mixpanel.com", "/api/app"])
def test_bad_base_url_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        MixpanelClient(
            project_token=PROJECT_TOKEN, oauth_token=BEARER, base_url=url, budget=RequestBudget(0)
        )


async def test_token_source_error_propagates(
    make_client: Callable[..., MixpanelClient], respx_mock: respx.MockRouter
) -> None:
    async def broken() -> str:
        raise LookupError("secret missing")

    route = respx_mock.get(f"{DEL}t").mock(return_value=httpx.Response(200))
    with pytest.raises(LookupError):
        await make_client(oauth_token=broken).deletion_status("t")
    assert route.call_count == 0


async def test_html_error_page_is_one_short_line_in_the_error(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    """A proxy's HTML page (here refusing a create with 413) never lands whole in an error that
    may reach a status message: only its title."""
    page = "<html><head><title>413 Request Entity Too Large</title></head><body>" + "x" * 4000
    respx_mock.post(DEL).mock(return_value=httpx.Response(413, html=page + "</body></html>"))
    with pytest.raises(InvalidRequestError) as info:
        await client.create_deletion(IDS)
    assert str(info.value) == "create_deletion: HTTP 413: HTML page: 413 Request Entity Too Large"
    assert_clean(info.value)


async def test_empty_answer_to_a_create_is_ambiguous_and_to_a_status_is_retried(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    create = respx_mock.post(DEL).mock(side_effect=[httpx.Response(200), created()])
    with pytest.raises(AmbiguousCreateError):
        await client.create_deletion(IDS)
    assert create.call_count == 1
    ok = httpx.Response(200, json={"results": {"status": "PENDING"}})
    status = respx_mock.get(f"{DEL}t").mock(side_effect=[httpx.Response(200), ok])
    assert (await client.deletion_status("t")).state is TaskState.PENDING
    assert status.call_count == 2


async def test_404_to_a_status_call_is_the_state_not_found(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{DEL}gone").mock(return_value=error(404, "task not found"))
    status = await client.deletion_status("gone")
    assert (status.state, status.tracking_id, status.known_state) == (
        TaskState.NOT_FOUND, "gone", True,
    )  # fmt: skip
    assert route.call_count == 1
    respx_mock.get(f"{RET}gone").mock(return_value=error(404, "task not found"))
    assert (await client.retrieval_status("gone")).state is TaskState.NOT_FOUND


async def test_a_call_stops_after_two_read_timeouts(
    client: MixpanelClient, respx_mock: respx.MockRouter
) -> None:
    """A Mixpanel that holds its answers past the timeout: each timed-out attempt held the
    project's calls for the whole timeout, so a status call gives up after the second."""
    ok = httpx.Response(200, json={"results": {"status": "STARTED"}})
    route = respx_mock.get(f"{DEL}t").mock(
        side_effect=[httpx.ReadTimeout("x"), httpx.ReadTimeout("x"), ok]
    )
    with pytest.raises(TransientError) as info:
        await client.deletion_status("t")
    assert route.call_count == 2
    assert "2 answers timed out" in str(info.value)
    assert info.value.retryable  # the caller may ask again later
    # Other failures in between do not count as timeouts.
    route.side_effect = [httpx.ReadTimeout("x"), error(503), httpx.ReadTimeout("x"), ok]
    with pytest.raises(TransientError):
        await client.deletion_status("t")
    assert route.call_count == 2 + 3
    route.side_effect = [httpx.ReadTimeout("x"), ok]
    assert (await client.deletion_status("t")).state is TaskState.STARTED


def test_max_timeouts_must_allow_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_timeouts"):
        RetryPolicy(max_timeouts=0)
