"""Where the GDPR token may go (the installer's allowlist, never a tenant's URL, no
redirects), and which namespaces a cluster project serves."""

from __future__ import annotations

import httpx
import pytest
import respx

from mixpanel_dsr.api.models import LabelSelector
from mixpanel_dsr.cli import build_parser, settings_from
from mixpanel_dsr.engine import Engine
from mixpanel_dsr.labels import selects
from mixpanel_dsr.mixpanel.client import MixpanelClient
from mixpanel_dsr.mixpanel.errors import MixpanelError
from mixpanel_dsr.mixpanel.types import REGION_BASE_URLS, Region
from mixpanel_dsr.settings import Settings, normalize_url, url_allowed

ALLOWED = ["https://mixpanel.com/api/app", "http://127.0.0.1:8131/api/app"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://mixpanel.com/api/app", True),
        ("https://MIXPANEL.com:443/api/app/", True),
        ("https://mixpanel.com/api/app/v2", True),  # under an allowed base
        ("https://mixpanel.com/api/application", False),  # not on a segment boundary
        ("https://mixpanel.com/other", False),
        ("http://mixpanel.com/api/app", False),  # another scheme
        ("https://mixpanel.com:8443/api/app", False),  # another port
        ("https://mixpanel.com.evil.example/api/app", False),
        ("https://evil.example/api/app", False),
        ("https://user:pw@mixpanel.com/api/app", False),  # credentials in the URL
        ("https://mixpanel.com/api/app?x=1", False),
        ("http://127.0.0.1:8131/api/app", True),
        ("http://127.0.0.1:8132/api/app", False),
        ("file:///etc/passwd", False),
        ("not a url", False),
    ],
)
def test_only_allowed_base_urls(url: str, allowed: bool) -> None:
    assert url_allowed(url, ALLOWED) is allowed


@pytest.mark.parametrize(
    "url", ["http://proxy.internal/api/app", "ftp://mixpanel.com", "https://", "relative/path"]
)
def test_an_allowlist_entry_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(ValueError, match=r"http|URL"):
        normalize_url(url)


def test_the_default_allowlist_is_mixpanels_hosts_plus_what_the_operator_was_started_for() -> None:
    plain = settings_from(build_parser().parse_args(["run"]))
    assert plain.allowed_api_urls == list(REGION_BASE_URLS.values())
    argv = ["run", "--mixpanel-region-urls", "US=http://127.0.0.1:9/api/app"]
    argv += ["--allowed-api-base-url", "https://proxy.internal/api/app"]
    sandboxed = settings_from(build_parser().parse_args(argv))
    assert url_allowed("http://127.0.0.1:9/api/app", sandboxed.allowed_api_urls)
    assert url_allowed("https://proxy.internal/api/app", sandboxed.allowed_api_urls)
    assert sandboxed.region_urls[Region.US] == "http://127.0.0.1:9/api/app"
    with pytest.raises(ValueError, match="plain http"):
        settings_from(
            build_parser().parse_args(["run", "--allowed-api-base-url", "http://proxy.internal"])
        )


@respx.mock
async def test_a_redirect_never_carries_the_token_elsewhere() -> None:
    """Mixpanel's host (or a proxy) answering 307 to another host: not followed."""
    engine = Engine(Settings(), kube=None)  # type: ignore[arg-type]
    elsewhere = respx.route(host="evil.example").mock(return_value=httpx.Response(200))
    respx.route(host="mixpanel.com").mock(
        return_value=httpx.Response(307, headers={"Location": "https://evil.example/steal"})
    )

    async def token() -> str:
        return "the-oauth-token"

    client = MixpanelClient(
        project_token="tok",
        oauth_token=token,
        region=Region.US,
        http=engine.http,
        budget_interval=0.0,
    )
    with pytest.raises(MixpanelError):
        await client.create_deletion(["a"])
    assert not elsewhere.called
    await engine.http.aclose()


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        (None, {"team": "privacy"}, False),  # absent: no namespace
        ({}, {}, True),  # {}: every namespace
        ({"matchLabels": {"team": "privacy"}}, {"team": "privacy", "x": "y"}, True),
        ({"matchLabels": {"team": "privacy"}}, {"team": "growth"}, False),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]},
         {"team": "b"}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
         {"team": "a"}, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "pii", "operator": "Exists"}]}, {"pii": ""}, True),
        ({"matchExpressions": [{"key": "pii", "operator": "DoesNotExist"}]}, {"pii": "1"}, False),
        ({"matchLabels": {"a": "1"},
          "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ],
)  # fmt: skip
def test_namespace_selectors(
    selector: dict[str, object] | None, labels: dict[str, str], selected: bool
) -> None:
    parsed = None if selector is None else LabelSelector.model_validate(selector)
    assert selects(parsed, labels) is selected
