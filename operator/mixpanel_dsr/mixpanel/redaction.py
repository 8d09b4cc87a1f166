"""Keeping secrets and personal data out of log lines and exception messages.

Pure helpers, used by the client before any text from Mixpanel (or from httpx) reaches a
message: the OAuth token, the project token and the distinct ids of the request are replaced
by ``[redacted]``, control characters are dropped and the text is cut to a short length.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

REDACTED = "[redacted]"

#: Longest piece of Mixpanel error text that goes into an exception message.
MAX_ERROR_TEXT = 300

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_WORD = r"A-Za-z0-9_"


def id_digest(ids: Iterable[str], length: int = 12) -> str:
    """A short, stable sha256 digest of a set of distinct ids, for correlating log lines.

    Order and duplicates do not matter. The digest is pseudonymous, not anonymous: a single
    guessable id (an e-mail address) can be found by hashing candidates, so prefer counts in
    anything that leaves the cluster.
    """
    h = hashlib.sha256()
    for distinct_id in sorted(set(ids)):
        h.update(distinct_id.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:length]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``[redacted]``.

    Secrets of three characters or more are replaced wherever they occur; shorter ones (a
    distinct id "7") only where they stand as a whole word, so "max 2000 ids" stays readable.
    Longer secrets are replaced first so a secret that contains another is removed whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if secret not in text:
            continue
        if len(secret) >= 3:
            text = text.replace(secret, REDACTED)
        else:
            pattern = rf"(?<![{_WORD}]){re.escape(secret)}(?![{_WORD}])"
            text = re.sub(pattern, REDACTED, text)
    return text


def sanitize_text(text: str, secrets: Iterable[str] = (), max_len: int = MAX_ERROR_TEXT) -> str:
    """Error text fit for an exception message: secrets redacted, one line, bounded length."""
    cleaned = _CONTROL.sub(" ", redact(text, secrets)).strip()
    if len(cleaned) > max_len:
        cleaned = cleaned[: max_len - 3].rstrip() + "..."
    return cleaned
