"""Per-subscriber public-key envelopes (format version 2): the service holds public keys only.

Each message gets a fresh 256-bit data key (DEK) and a fresh ephemeral X25519 key pair.
For every recipient the DEK is wrapped with AES-256-GCM under
``HKDF-SHA256(X25519(ephemeral, recipient), salt = eph_pub || recipient_pub, info = "lepton-stream v2 wrap")``;
the payload is AES-256-GCM under the DEK. A subscriber opens a message with its private key
alone. Byte format (big-endian)::

    offset  size      field
    0       1         format version = 0x02
    1       1         plaintext schema version
    2       32        ephemeral X25519 public key
    34      1         R = number of recipients (1..255)
    35      ...       R entries: [1: L] [L: recipient id, ASCII] [12: wrap nonce] [48: wrapped DEK + tag]
    H       12        payload nonce
    H+12    n + 16    AES-256-GCM(DEK) ciphertext and tag

A wrapped DEK authenticates bytes ``0..35`` plus its recipient id; the payload authenticates
the whole header ``0..H`` plus the topic / message-key binding of version 1
(``u16 len(topic) || topic || 0x00`` or ``0x01 || u32 len(key) || key``).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from security.envelope import SCHEMA_VERSION, binding, check_prefix
from security.errors import EnvelopeError, InvalidTagError, KeyRingError, TruncatedError, UnknownKeyError

__all__ = ["seal_for", "open_for", "generate_private", "public_bytes", "load_recipients", "load_private",
           "RECIPIENTS_VERSION"]

RECIPIENTS_VERSION = 2
_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_INFO = b"lepton-stream v2 wrap"


def seal_for(plaintext: bytes, *, recipients: Mapping[str, X25519PublicKey], topic: str, key: bytes | None,
             schema: int = SCHEMA_VERSION) -> bytes:
    """Encrypt so that each named recipient, and only they, can open the message."""
    if not 1 <= len(recipients) <= 255:
        raise EnvelopeError("a recipients envelope needs 1..255 recipients")
    eph = X25519PrivateKey.generate()
    eph_pub = public_bytes(eph.public_key())
    head = bytes([RECIPIENTS_VERSION, schema]) + eph_pub + bytes([len(recipients)])
    dek = AESGCM.generate_key(bit_length=256)
    entries = b""
    for rid, pub in recipients.items():
        if not _RID.match(rid):
            raise KeyRingError(f"recipient id {rid!r} must be 1..64 characters of A-Z a-z 0-9 . _ -")
        r = rid.encode("ascii")
        nonce = os.urandom(12)
        wrapped = AESGCM(_wrap_key(eph.exchange(pub), eph_pub, public_bytes(pub))).encrypt(nonce, dek, head + r)
        entries += bytes([len(r)]) + r + nonce + wrapped
    header = head + entries
    nonce = os.urandom(12)
    return header + nonce + AESGCM(dek).encrypt(nonce, plaintext, header + binding(topic, key))


def open_for(data: bytes, *, rid: str, private_key: X25519PrivateKey, topic: str, key: bytes | None,
             schema: int | None = SCHEMA_VERSION) -> bytes:
    """Open a recipients envelope with one subscriber's private key."""
    check_prefix(data, version=RECIPIENTS_VERSION, min_len=35, schema=schema)
    head, eph_pub, count = data[:35], data[2:34], data[34]
    off, dek = 35, None
    for _ in range(count):
        if off + 1 > len(data):
            raise TruncatedError("envelope ends inside its recipient list")
        n = data[off]
        end = off + 1 + n + 12 + 48
        if end > len(data):
            raise TruncatedError("envelope ends inside its recipient list")
        r = data[off + 1:off + 1 + n]
        if r == rid.encode("ascii"):
            nonce, wrapped = data[off + 1 + n:off + 13 + n], data[off + 13 + n:end]
            wk = _wrap_key(private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub,
                           public_bytes(private_key.public_key()))
            try:
                dek = AESGCM(wk).decrypt(nonce, wrapped, head + r)
            except InvalidTag:
                raise InvalidTagError("data key did not unwrap: wrong private key or tampered header") from None
        off = end
    if dek is None:
        raise UnknownKeyError(f"recipient {rid!r} is not among this message's recipients")
    if len(data) < off + 12 + 16:
        raise TruncatedError("envelope ends before its payload")
    try:
        return AESGCM(dek).decrypt(data[off:off + 12], data[off + 12:], data[:off] + binding(topic, key))
    except InvalidTag:
        raise InvalidTagError("authentication failed: tampered bytes, or wrong topic or message key") from None


def generate_private() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_recipients(text: str) -> dict[str, X25519PublicKey]:
    """Parse ``rid:base64(raw 32-byte X25519 public key)`` entries (commas or newlines)."""
    out: dict[str, X25519PublicKey] = {}
    for entry in re.split(r"[,\n]", text):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        rid, sep, b64 = entry.partition(":")
        try:
            raw = base64.b64decode(b64.strip(), validate=True)
            out[rid.strip()] = X25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise KeyRingError(f"recipient {rid.strip()!r}: expected rid:base64(32-byte X25519 public key)") from None
        if not sep or not _RID.match(rid.strip()):
            raise KeyRingError(f"bad recipient entry {entry[:40]!r}")
    if not out:
        raise KeyRingError("no recipients found")
    return out


def load_private(path: str | Path) -> X25519PrivateKey:
    """A raw base64 X25519 private key from a file that only its owner may read."""
    p = Path(path)
    if p.stat().st_mode & 0o077:
        raise KeyRingError(f"private key file {p} is readable by group or others; run: chmod 600 {p}")
    try:
        return X25519PrivateKey.from_private_bytes(base64.b64decode(p.read_text().strip(), validate=True))
    except ValueError:
        raise KeyRingError(f"{p} does not hold a base64 32-byte X25519 private key") from None


def _wrap_key(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=_INFO).derive(shared)
