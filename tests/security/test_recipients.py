"""Public-key (version 2) envelopes: each recipient opens with its private key alone."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from security.errors import InvalidTagError, KeyRingError, TruncatedError, UnknownKeyError, VersionError
from security.recipients import generate_private, load_private, load_recipients, open_for, public_bytes, seal_for

ALICE, BOB, EVE = generate_private(), generate_private(), generate_private()
PUBS = {"alice": ALICE.public_key(), "bob": BOB.public_key()}


def test_each_recipient_opens_with_its_private_key() -> None:
    data = seal_for(b"top-k", recipients=PUBS, topic="lepton.predictions", key=b"n1")
    assert data[0] == 2 and data[34] == 2
    for rid, priv in (("alice", ALICE), ("bob", BOB)):
        assert open_for(data, rid=rid, private_key=priv, topic="lepton.predictions", key=b"n1") == b"top-k"


def test_failure_modes() -> None:
    data = seal_for(b"top-k", recipients=PUBS, topic="t", key=None)
    with pytest.raises(UnknownKeyError):
        open_for(data, rid="eve", private_key=EVE, topic="t", key=None)
    with pytest.raises(InvalidTagError):  # right id, wrong private key
        open_for(data, rid="alice", private_key=EVE, topic="t", key=None)
    with pytest.raises(InvalidTagError):
        open_for(data, rid="alice", private_key=ALICE, topic="other", key=None)
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(InvalidTagError):
        open_for(bytes(bad), rid="alice", private_key=ALICE, topic="t", key=None)
    with pytest.raises(TruncatedError):
        open_for(data[:60], rid="bob", private_key=BOB, topic="t", key=None)
    with pytest.raises(VersionError):
        open_for(b"\x01" + data[1:], rid="alice", private_key=ALICE, topic="t", key=None)


def test_recipient_files(tmp_path: Path) -> None:
    text = ",".join(f"{r}:{base64.b64encode(public_bytes(p)).decode()}" for r, p in PUBS.items())
    assert set(load_recipients(text)) == {"alice", "bob"}
    with pytest.raises(KeyRingError):
        load_recipients("alice:notbase64!")
    path = tmp_path / "alice.key"
    from cryptography.hazmat.primitives import serialization
    raw = ALICE.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    path.write_text(base64.b64encode(raw).decode())
    os.chmod(path, 0o600)
    assert public_bytes(load_private(path).public_key()) == public_bytes(ALICE.public_key())
    os.chmod(path, 0o644)
    with pytest.raises(KeyRingError, match="chmod 600"):
        load_private(path)
