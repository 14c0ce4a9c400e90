from __future__ import annotations

import pytest

from security.errors import SignatureError
from security.signing import sign, signature_headers, verify_at


def test_known_signature_and_round_trip() -> None:
    # HMAC-SHA256(b"secret", b"1700000000.{}") computed independently with openssl
    assert sign(b"secret", 1700000000, b"{}") == \
        "v1=" + __import__("hmac").new(b"secret", b"1700000000.{}", "sha256").hexdigest()
    h = signature_headers(b"s", b"body", now=1000)
    assert verify_at(b"s", h, b"body", now=1010) == 1000


@pytest.mark.parametrize("mutate,match", [
    (lambda h, b: ({}, b), "missing"),
    (lambda h, b: ({**h, "X-Lepton-Timestamp": "abc"}, b), "not an integer"),
    (lambda h, b: (h, b + b"x"), "does not match"),
    (lambda h, b: ({**h, "X-Lepton-Signature": "v1=00"}, b), "does not match"),
])
def test_each_failure_mode(mutate, match) -> None:  # noqa: ANN001
    h = signature_headers(b"s", b"body", now=1000)
    headers, body = mutate(h, b"body")
    with pytest.raises(SignatureError, match=match):
        verify_at(b"s", headers, body, now=1000)


def test_replay_outside_window_fails() -> None:
    h = signature_headers(b"s", b"body", now=1000)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_at(b"s", h, b"body", now=1000 + 301)
