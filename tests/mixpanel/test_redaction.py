"""Redaction helpers: ids, tokens and control characters never reach a message."""

from __future__ import annotations

from mixpanel_dsr.mixpanel.redaction import REDACTED, id_digest, redact, sanitize_text


def test_id_digest_is_stable_order_and_duplicate_free() -> None:
    a = id_digest(["alice@example.com", "bob", "bob"])
    b = id_digest(["bob", "alice@example.com"])
    assert a == b
    assert len(a) == 12
    assert all(c in "0123456789abcdef" for c in a)
    assert id_digest(["bob"]) != a
    assert len(id_digest(["x"], length=20)) == 20


def test_id_digest_is_not_fooled_by_joining() -> None:
    assert id_digest(["ab", "c"]) != id_digest(["a", "bc"])


def test_redact_long_and_short_secrets() -> None:
    text = "user 7 has id alice@example.com; max 2000 ids; token sekret-bearer"
    out = redact(text, ["alice@example.com", "7", "2", "sekret-bearer", ""])
    assert "alice@example.com" not in out
    assert "sekret-bearer" not in out
    assert f"user {REDACTED} has" in out
    assert "max 2000 ids" in out  # "2" only redacted as a whole word


def test_redact_removes_longest_first() -> None:
    out = redact("id abcdef here", ["abc", "abcdef"])
    assert out == f"id {REDACTED} here"


def test_sanitize_text_strips_control_chars_and_truncates() -> None:
    out = sanitize_text("line1\nline2\r\n\x00 secret-token", ["secret-token"], max_len=100)
    assert "\n" not in out
    assert "secret-token" not in out
    long = sanitize_text("x" * 1000, max_len=50)
    assert len(long) == 50
    assert long.endswith("...")


def test_sanitize_text_redacts_before_truncating() -> None:
    secret = "s" * 40
    out = sanitize_text("a" * 20 + secret, [secret], max_len=30)
    assert "s" * 5 not in out
