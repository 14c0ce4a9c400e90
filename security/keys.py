"""KeyRing: named AES-256 keys, one active for sealing, all usable for opening.

Sources, in order of precedence: ``LEPTON_KEYS`` (``kid:base64key,kid2:base64key``, the last
one listed is active) or a key file (one ``kid:base64key`` per line, ``#`` comments, last
line active). A key file readable by group or others is refused. Key ids are 1..64
characters of ``[A-Za-z0-9._-]``.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import stat
from pathlib import Path

from security.errors import KeyRingError

__all__ = ["KeyRing", "KEY_BYTES"]

KEY_BYTES = 32
_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyRing:
    """Immutable set of keys with one active key id."""

    def __init__(self, keys: dict[str, bytes], *, active: str) -> None:
        if not keys:
            raise KeyRingError("a key ring needs at least one key")
        for kid, key in keys.items():
            if not _KID.match(kid):
                raise KeyRingError(f"key id {kid!r} must be 1..64 characters of A-Z a-z 0-9 . _ -")
            if len(key) != KEY_BYTES:
                raise KeyRingError(f"key {kid!r} must be {KEY_BYTES} bytes (AES-256), got {len(key)}")
        if active not in keys:
            raise KeyRingError(f"active key {active!r} is not in the ring")
        self._keys = dict(keys)
        self.active = active

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def generate(cls, kid: str | None = None) -> "KeyRing":
        """A ring with one fresh random key."""
        kid = kid or f"k{secrets.token_hex(4)}"
        return cls({kid: secrets.token_bytes(KEY_BYTES)}, active=kid)

    @classmethod
    def parse(cls, text: str) -> "KeyRing":
        """Parse ``kid:base64key`` entries separated by commas or newlines; the last is active."""
        keys: dict[str, bytes] = {}
        last = None
        for raw in re.split(r"[,\n]", text):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            kid, sep, b64 = entry.partition(":")
            if not sep:
                raise KeyRingError("key entries must look like kid:base64key")
            try:
                key = base64.b64decode(b64.strip(), validate=True)
            except ValueError:
                raise KeyRingError(f"key {kid.strip()!r} is not valid base64") from None
            keys[kid.strip()] = key
            last = kid.strip()
        if last is None:
            raise KeyRingError("no keys found")
        return cls(keys, active=last)

    @classmethod
    def from_file(cls, path: str | Path) -> "KeyRing":
        """Load a key file; refuse it when group or others may read it."""
        p = Path(path)
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            raise KeyRingError(f"key file {p} does not exist; create it with `lepton keys generate --file {p}`") \
                from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyRingError(f"key file {p} is readable by group or others (mode {oct(mode & 0o777)}); "
                               f"run: chmod 600 {p}")
        return cls.parse(p.read_text())

    @classmethod
    def from_env(cls, value: str | None = None, *, file: str | Path | None = None) -> "KeyRing":
        """``LEPTON_KEYS`` (or ``value``) if set, else ``file``; error if neither is given."""
        text = value if value is not None else os.environ.get("LEPTON_KEYS")
        if text:
            return cls.parse(text)
        if file:
            return cls.from_file(file)
        raise KeyRingError("no keys configured: set LEPTON_KEYS=kid:base64key or LEPTON_KEY_FILE")

    # ---- use --------------------------------------------------------------------------------------
    def key(self, kid: str) -> bytes | None:
        return self._keys.get(kid)

    @property
    def active_key(self) -> bytes:
        return self._keys[self.active]

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def rotated(self, kid: str | None = None) -> "KeyRing":
        """A new ring with a fresh active key; old keys stay for opening."""
        fresh = KeyRing.generate(kid)
        if fresh.active in self._keys:
            raise KeyRingError(f"key id {fresh.active!r} already exists")
        return KeyRing({**self._keys, fresh.active: fresh.active_key}, active=fresh.active)

    def serialise(self) -> str:
        """Key-file text (active key last). Contains key material: write it with mode 600."""
        order = [k for k in self._keys if k != self.active] + [self.active]
        return "".join(f"{k}:{base64.b64encode(self._keys[k]).decode()}\n" for k in order)

    def write(self, path: str | Path) -> None:
        """Write the ring to ``path`` atomically with mode 600."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.serialise())
        os.replace(tmp, p)

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(ids={self.ids}, active={self.active!r})"
