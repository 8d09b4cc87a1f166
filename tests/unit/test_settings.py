"""Flags and settings of `dsr-operator run`."""

from __future__ import annotations

import logging

import pytest

from mixpanel_dsr.cli import build_parser, configure_logging, settings_from
from mixpanel_dsr.mixpanel.types import REGION_BASE_URLS, Region
from mixpanel_dsr.settings import parse_duration, parse_region_urls


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("6h", 21600),
        ("1h30m", 5400),
        ("2", 2),
        ("1d", 86400),
        # Everything a CRD's Go-duration field admits parses the same here.
        ("1500000us", 1.5),
        ("1500000µs", 1.5),
        ("1200000000ns", 1.2),
        ("1.5s", 1.5),
        ("1h0m0.5s", 3600.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "fast", "5x", "1h 30m", "-1s"])
def test_bad_durations_name_the_problem(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_region_urls_override_only_what_is_given() -> None:
    args = build_parser().parse_args(
        ["run", "--mixpanel-region-urls", "eu=http://127.0.0.1:1/api/app", "--packing-quiet", "3s"]
    )
    settings = settings_from(args)
    assert settings.region_urls[Region.EU] == "http://127.0.0.1:1/api/app"
    assert settings.region_urls[Region.US] == REGION_BASE_URLS[Region.US]
    assert settings.packing_quiet == 3


@pytest.mark.parametrize("text", ["EU", "EU=ftp://x", "MARS=http://x"])
def test_bad_region_urls_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"REGION=URL|unknown region"):
        parse_region_urls(text)


def test_defaults_suit_production() -> None:
    settings = settings_from(build_parser().parse_args(["run"]))
    assert settings.region_urls == REGION_BASE_URLS
    assert settings.poll_initial == 60
    assert settings.poll_max == 6 * 3600
    assert settings.max_attempts == 3


def test_kopf_s_per_event_lines_are_kept_out_of_the_log_unless_debugging() -> None:
    """kopf writes "Handler 'request_event' succeeded." for each event, status echoes
    included: two lines per request for nothing. Its warnings still show."""
    kopf_log = logging.getLogger("kopf.objects")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, kopf_log.level)
    try:
        configure_logging("text", "info")
        assert not kopf_log.isEnabledFor(logging.INFO)
        assert kopf_log.isEnabledFor(logging.WARNING)
        kopf_log.setLevel(logging.NOTSET)
        configure_logging("json", "debug")
        assert kopf_log.isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        kopf_log.setLevel(saved[2])
