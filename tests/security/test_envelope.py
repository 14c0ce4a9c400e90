"""Envelope: round trip, a fixed vector for the byte format, one negative test per failure mode."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.envelope import NONCE_BYTES, open_envelope, seal
from security.errors import InvalidTagError, TruncatedError, UnknownKeyError, VersionError
from security.keys import KeyRing

RING = KeyRing({"k1": bytes(range(32))}, active="k1")
NONCE = bytes(range(100, 112))
# Fixed vector: seal(b"hello", topic="lepton.predictions", key=b"n1", nonce=NONCE) with key bytes 0..31.
VECTOR = "AQECazFkZWZnaGlqa2xtbm8gfrIKFmSMMRhIayh+wDeafzLUFlM="


def test_fixed_vector_pins_the_byte_format() -> None:
    data = seal(b"hello", keyring=RING, topic="lepton.predictions", key=b"n1", nonce=NONCE)
    assert base64.b64encode(data).decode() == VECTOR
    assert data[:5] == b"\x01\x01\x02k1" and data[5:17] == NONCE and len(data) == 5 + 12 + 5 + 16
    # rebuilt from the README's layout with the primitive alone
    header = b"\x01\x01\x02k1"
    aad = header + struct.pack(">H", 18) + b"lepton.predictions" + b"\x01" + struct.pack(">I", 2) + b"n1"
    assert data == header + NONCE + AESGCM(bytes(range(32))).encrypt(NONCE, b"hello", aad)
    assert open_envelope(base64.b64decode(VECTOR), keyring=RING, topic="lepton.predictions", key=b"n1") == b"hello"


def test_round_trip_with_and_without_message_key() -> None:
    for key in (None, b"", b"node-7"):
        data = seal(b"{}", keyring=RING, topic="t", key=key)
        assert open_envelope(data, keyring=RING, topic="t", key=key) == b"{}"
    assert seal(b"x", keyring=RING, topic="t", key=None) != seal(b"x", keyring=RING, topic="t", key=None)


def test_wrong_topic_or_message_key_fails() -> None:
    data = seal(b"secret", keyring=RING, topic="lepton.predictions", key=b"a")
    with pytest.raises(InvalidTagError):
        open_envelope(data, keyring=RING, topic="lepton.alerts", key=b"a")
    with pytest.raises(InvalidTagError):
        open_envelope(data, keyring=RING, topic="lepton.predictions", key=b"b")
    with pytest.raises(InvalidTagError):
        open_envelope(data, keyring=RING, topic="lepton.predictions", key=None)


def test_tampered_bytes_fail() -> None:
    data = bytearray(seal(b"secret", keyring=RING, topic="t", key=None))
    for i in (len(data) - 1, 10, 20):
        bad = bytearray(data)
        bad[i] ^= 1
        with pytest.raises(InvalidTagError):
            open_envelope(bytes(bad), keyring=RING, topic="t", key=None)


def test_wrong_key_and_unknown_key_id() -> None:
    data = seal(b"secret", keyring=RING, topic="t", key=None)
    other = KeyRing({"k1": bytes(32)}, active="k1")
    with pytest.raises(InvalidTagError):
        open_envelope(data, keyring=other, topic="t", key=None)
    with pytest.raises(UnknownKeyError, match="k1"):
        open_envelope(data, keyring=KeyRing.generate("k2"), topic="t", key=None)


def test_truncated_and_wrong_versions() -> None:
    data = seal(b"secret", keyring=RING, topic="t", key=None)
    for cut in (0, 2, 10, len(data) - 20):
        with pytest.raises(TruncatedError):
            open_envelope(data[:cut], keyring=RING, topic="t", key=None)
    with pytest.raises(VersionError, match="format version 2"):
        open_envelope(b"\x02" + data[1:], keyring=RING, topic="t", key=None)
    with pytest.raises(VersionError, match="schema"):
        open_envelope(data[:1] + b"\x07" + data[2:], keyring=RING, topic="t", key=None)


def test_rotation_keeps_old_messages_readable() -> None:
    old = seal(b"before", keyring=RING, topic="t", key=None)
    ring2 = RING.rotated("k2")
    new = seal(b"after", keyring=ring2, topic="t", key=None)
    assert new[3:5] == b"k2"
    assert open_envelope(old, keyring=ring2, topic="t", key=None) == b"before"
    assert open_envelope(new, keyring=ring2, topic="t", key=None) == b"after"


def test_nonces_never_repeat_in_a_process_or_across_a_fork() -> None:
    ring = KeyRing.generate("k1")
    nonce = lambda env: env[3 + 2:3 + 2 + NONCE_BYTES]  # noqa: E731  header: 3 bytes + key id "k1"
    seen = {nonce(seal(b"x", keyring=ring, topic="t", key=None)) for _ in range(10_000)}  # > 2 pool refills
    assert len(seen) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child seals once and reports its nonce
        os.write(write, nonce(seal(b"x", keyring=ring, topic="t", key=None)))
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, NONCE_BYTES)
    parent = nonce(seal(b"x", keyring=ring, topic="t", key=None))
    assert len(child) == NONCE_BYTES and child != parent and child not in seen
