"""Mixpanel's status callbacks as the fact sheet describes them: OpenDSR-shaped JSON, signed
with RSA PKCS#1 v1.5 SHA-256 over the raw body (base64 in ``X-OpenDSR-Signature``), sent at
least once. A callback only says that a task may have moved; the status check stays the truth.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import load_pem_x509_certificate

SIGNATURE_HEADER = "X-OpenDSR-Signature"
#: Longest callback body read (an OpenDSR status is a few hundred bytes).
MAX_BODY = 64 * 1024


class RequestStatus(StrEnum):
    """OpenDSR's ``request_status``."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class CallbackError(ValueError):
    """A callback that is not Mixpanel's, or not readable; the message is safe to log."""


@dataclass(frozen=True)
class Callback:
    subject_request_id: str
    status: RequestStatus


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """Mixpanel's callback key, from a PEM public key or certificate."""
    key: object
    try:
        if b"CERTIFICATE" in pem:
            key = load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError as err:
        raise CallbackError(f"not a PEM public key or certificate: {err}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise CallbackError("the callback key must be an RSA key")
    return key


def verify(key: rsa.RSAPublicKey, body: bytes, signature: str | None) -> None:
    """Raise :class:`CallbackError` unless ``signature`` is Mixpanel's over ``body``."""
    if not signature:
        raise CallbackError(f"no {SIGNATURE_HEADER} header")
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        raise CallbackError("the signature does not verify") from None


def parse(body: bytes) -> Callback:
    try:
        data = json.loads(body)
        subject = data["subject_request_id"]
        status = RequestStatus(data["request_status"])
    except (ValueError, KeyError, TypeError):
        raise CallbackError("not an OpenDSR status callback") from None
    if not isinstance(subject, str) or not 0 < len(subject) <= 64:
        raise CallbackError("subject_request_id is not an id")
    return Callback(subject_request_id=subject, status=status)
