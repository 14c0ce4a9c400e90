"""Webhook signatures: HMAC-SHA256 over ``"{timestamp}.{body}"``.

Headers sent with every webhook POST::

    X-Lepton-Timestamp: 1700000000          (integer seconds)
    X-Lepton-Signature: v1=<hex hmac-sha256(secret, f"{timestamp}.".encode() + body)>

Receivers call :func:`verify` (constant-time comparison, and a tolerance window so an old
request cannot be replayed). ``now`` is injectable; :func:`verify_at` is the clock-free form.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from security.errors import SignatureError

__all__ = ["sign", "signature_headers", "verify", "verify_at", "TIMESTAMP_HEADER", "SIGNATURE_HEADER"]

TIMESTAMP_HEADER = "X-Lepton-Timestamp"
SIGNATURE_HEADER = "X-Lepton-Signature"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``v1=<hex>`` signature of ``body`` at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def signature_headers(secret: bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, *, tolerance: float = 300.0) -> int:
    """Check a request's signature against the current time; returns its timestamp."""
    return verify_at(secret, headers, body, now=time.time(), tolerance=tolerance)


def verify_at(secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float = 300.0) -> int:
    lower = {k.lower(): v for k, v in headers.items()}
    ts_text = lower.get(TIMESTAMP_HEADER.lower())
    sig = lower.get(SIGNATURE_HEADER.lower())
    if ts_text is None or sig is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        ts = int(ts_text)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer") from None
    if abs(now - ts) > tolerance:
        raise SignatureError(f"timestamp {ts} is outside the {tolerance:.0f}s tolerance window (replay?)")
    expected = sign(secret, ts, body)
    candidates = [s.strip() for s in sig.split(",")]
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match")
    return ts
